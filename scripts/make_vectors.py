"""Regenerate the golden vectors in protocol/vectors/ (core: encoding, hashes, signatures, selection, rounds,
spaces).

Run only when the protocol changes on purpose: tests/core/test_vectors.py checks the code against these files.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "protocol" / "vectors"))

from tagged import to_json  # noqa: E402

from moenode.core.codec import canonical  # noqa: E402
from moenode.core.crypto import Ed25519Signer, H, body_digest  # noqa: E402
from moenode.core.genesis import genesis_to_toml  # noqa: E402
from moenode.core.selection import sample_shard, shard_size, voting_power  # noqa: E402
from moenode.testing.roundkit import Scenario, make_signers  # noqa: E402

OUT = ROOT / "protocol" / "vectors"


def write(name: str, obj) -> None:
    (OUT / name).write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def encoding() -> None:
    values = [0, 1, -1, 127, 128, 255, 256, 65535, 65536, -32, -33, (1 << 32), (1 << 64) - 1, -(1 << 63), True,
              False, None, "", "moenode", "é€😀", b"", b"\x00\xff", [1, [2, [3]]], (4, 5),
              {"b": 1, "a": 2, "é": 3, "z": 4, "": 5}, {"nested": {"y": [b"\x01"], "x": None}}, "x" * 40,
              b"\xab" * 300, list(range(20))]
    write("encoding.json", [{"value": to_json(v), "canonical": canonical(v).hex()} for v in values])


def hashes() -> None:
    cases = [("data", b""), ("data", b"abc"), ("shard", b"\x00" * 32), ("draw", b"\x01" * 36),
             ("mask", b"moenode"), ("msg", canonical({"type": "Commit"})), ("epoch", b"genesis"),
             ("network", canonical({"name": "x"})), ("item", "héllo".encode())]
    write("hashes.json", [{"tag": t, "data": d.hex(), "hash": H(t, d).hex()} for t, d in cases])


def signatures() -> None:
    out = []
    for i, body in enumerate([{"type": "Commit", "net": b"\x00" * 32, "shard_id": b"\x01" * 32,
                               "digest": b"\x02" * 32},
                              {"type": "OptOut", "net": b"\x09" * 32, "shard_id": b"\x03" * 32, "reason": "late"}]):
        seed = H("vector-key", bytes([i]))
        s = Ed25519Signer(seed)
        d = body_digest(body)
        out.append({"seed": seed.hex(), "pubkey": s.public_key.hex(), "body": to_json(body),
                    "canonical_body": canonical(body).hex(), "digest": d.hex(), "sig": s.sign(d).hex()})
    write("signatures.json", out)


def selection() -> None:
    write("shard_size.json", [[N, *shard_size(N)] for N in range(1, 2001)])
    tables = []
    for k, stakes in enumerate([
        [5], [1, 1, 1], [10, 20, 30, 40], [1000] + [1] * 9, [7] * 13, list(range(0, 25)),
        [10**12, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3], [i * i + 1 for i in range(60)],
    ]):
        table = {H("vp", bytes([k, i])): s for i, s in enumerate(stakes)}
        power = voting_power(table)
        staked = sum(1 for v in power.values() if v > 0)
        n = shard_size(staked)[0] if staked else 0
        seed = H("shard", bytes([k]))
        tables.append({"stakes": [[pk.hex(), s] for pk, s in sorted(table.items())],
                       "power": [[pk.hex(), p] for pk, p in sorted(power.items())],
                       "shard_seed": seed.hex(), "n": n,
                       "shard": [pk.hex() for pk in sample_shard(power, seed, n)]})
    write("selection.json", tables)


def rounds() -> None:
    """Four recorded rounds through the in-process driver with real Ed25519 keys and synthetic payloads."""
    out = []
    submitter = Ed25519Signer.from_entropy(b"vector-submitter")
    items = ["The quick brown fox jumps over the lazy dog.", "Shards embed, the best loss wins.",
             "def f(x): return x + 1"]
    for name in ("happy_path", "straggler_struck", "fake_score_caught", "straggler_waited_for"):
        sc = Scenario(make_signers(10, b"vector"))
        nonce = H("vector-nonce", name.encode())
        first = sc.shard().run(submitter, items, nonce)
        members = sorted(first.members)
        wait_ms = 6_000 if name == "straggler_waited_for" else 0  # the submitter's commit deadline: 6 s
        if name in ("straggler_struck", "straggler_waited_for"):
            sc.took[members[0]] = 4_000
        if name == "fake_score_caught":
            sc.cheaters.add(members[1])
        trace: list[str] = []
        shard = sc.shard(link=lambda src, dst, env: (trace.append(H("trace", env.encode()).hex()), [1])[1])
        res = shard.run(submitter, items, nonce, wait_ms=wait_ms)
        cert = res.submitter.certificate
        out.append({"name": name, "genesis_toml": genesis_to_toml(sc.genesis), "submitter_entropy": "vector-submitter",
                    "member_entropy_tag": "vector", "items": items, "nonce": nonce.hex(),
                    "wait_ms": wait_ms,
                    "behaviour": {"slow": [m.hex() for m in members[:1]] if "straggler" in name else [],
                                  "cheaters": [members[1].hex()] if name == "fake_score_caught" else []},
                    "members": [m.hex() for m in members], "messages": len(trace),
                    "trace_digest": H("trace", "".join(trace).encode()).hex(),
                    "certificate": cert.encode().hex(), "winner": cert.report.winner.hex(),
                    "strikes": [m.hex() for m in cert.report.strikes],
                    "faulty": [m.hex() for m in cert.report.faulty]})
    write("rounds.json", out)


def spaces() -> None:
    """A genesis with two spaces: its network id, each space's pool and a shard drawn in it; exact same-item cosines
    and in-round verdicts on small float16 matrices."""
    import numpy as np

    from moenode.core.genesis import parse_genesis
    from moenode.core.messages import shard_id
    from moenode.core.selection import data_hash, quorum, shard_seed
    from moenode.core.spaces import Space, cosines_micro, off_space

    keys = [Ed25519Signer.from_entropy(b"space-vector" + bytes([i])).public_key for i in range(8)]
    toml = ["[network]", 'name = "spaces-vector"', "genesis_time_ms = 0", "", "[[spaces]]", 'id = "main"',
            "dim = 384", 'anchor = "minilm-l6"', "", "[[spaces]]", 'id = "mpnet"', "dim = 768",
            'anchor = "mpnet-base"', "round_p5_micro = 850000"]
    for i, pk in enumerate(keys):
        declared = ['"main"'] if i < 5 else (['"mpnet"'] if i < 7 else ['"main"', '"mpnet"'])
        toml += ["", "[[accounts]]", f'pubkey = "{pk.hex()}"', "balance = 10", f"stake = {100 + i}",
                 f"spaces = [{', '.join(declared)}]"]
    text = "\n".join(toml) + "\n"
    g = parse_genesis(text)
    power = voting_power(g.initial_stakes())
    dh = data_hash([b"one text"])
    draws = []
    for space in g.space_book.ids():
        pool = g.space_book.power_in(power, space)
        n = shard_size(len(pool))[0]
        nonce = H("space-nonce", space.encode())
        seed = shard_seed(g.seed0(), dh, nonce, b"\x07" * 32)
        members = sample_shard(pool, seed, n)
        draws.append({"space": space, "shard_id": shard_id(0, dh, nonce, keys[0], space).hex(),
                      "nonce": nonce.hex(), "pay_id": "07" * 32, "pool": sorted(pk.hex() for pk in pool),
                      "members": [m.hex() for m in members], "q": quorum(len(members))})
    rng = np.random.default_rng(14)

    def unit(m):
        return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)

    base = unit(rng.normal(size=(40, 8)))
    near = unit(base + 0.05 * rng.normal(size=base.shape))
    far = unit(rng.normal(size=base.shape))
    perm = base[:, ::-1] * np.array([1, -1] * 4, np.float32)
    mats = {"base": base, "near": near, "far": far, "permuted": perm, "zero": np.zeros_like(base)}
    cos = [{"a": a, "b": b, "cosines_micro": cosines_micro(mats[a], mats[b])}
           for a, b in [("base", "near"), ("base", "far"), ("base", "permuted"), ("base", "zero")]]
    space = Space(id="main", dim=8, round_p5_micro=900_000)
    verdicts = []
    for names in [("base", "near", "permuted"), ("base", "near"), ("base", "far"), ("base", "near", "far", "zero")]:
        cands = {bytes([i]) * 32: (8, mats[n].tobytes()) for i, n in enumerate(names)}
        verdicts.append({"candidates": list(names),
                         "wins_allowed": [off_space(space, m, cands) == "" for m in sorted(cands)]})
    write("spaces.json", {"genesis_toml": text, "network_id": g.network_id.hex(), "draws": draws,
                          "matrices": {k: np.asarray(v, "<f2").tobytes().hex() for k, v in mats.items()},
                          "shape": [40, 8], "cosines": cos, "round_space": space.as_dict(), "verdicts": verdicts})


if __name__ == "__main__":
    spaces()
    encoding()
    hashes()
    signatures()
    selection()
    rounds()
    print("vectors written to", OUT)
