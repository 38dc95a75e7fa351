"""Fuzzing every decoder a peer can reach, longer than CI does, and what hostile inputs cost.

Decoders: the signed envelope of every message type (`open_signed`), the receivers' type sets (the shard protocol,
orders), the unsigned messages (certificates, order requests and answers, certified orders, checkpoints and their
certificates, the proxy answer, evidence), sync entries and `codec.decode`. Inputs are seeded mutations of valid
messages (moenode/testing/fuzzkit.py: byte-level and structure-aware, container-dense inflation, non-canonical
spellings). Every input is checked as in CI: only ProtocolError escapes, and nothing non-canonical is accepted.
Per decoder it prints inputs per CPU second, and as the baseline on the same inputs, msgpack's own unpackb with no
checks at all (the ratio is what the checks cost).

Then the attack of a container-dense envelope (about one value per byte, empty arrays or maps) on the shard
protocol, at 4 and 12 MiB: CPU seconds and peak traced memory of `open_signed`, against decoding a legitimate byte
string of the same size in the same run, and the cost of opening the largest legitimate Reveal (which the daemon
does on a worker thread). Writes JSON (`--json` prints it as the last line).
"""

import argparse
import time
from pathlib import Path

import msgpack

from _report import write_result

ROOT = Path(__file__).resolve().parents[1]

from moenode.core.codec import canonical, decode  # noqa: E402
from moenode.core.crypto import H, ed25519_verify  # noqa: E402
from moenode.core.messages import Commit, CommitVotes, Input, OptOut, Report, Reveal, open_signed  # noqa: E402
from moenode.testing.fuzzkit import SHAPES, dense_envelope, fuzz, measure, targets  # noqa: E402

ROUND_TYPES = (Input, OptOut, Commit, CommitVotes, Reveal, Report)


def raw_unpack(data: bytes) -> object:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def run_fuzz(inputs: int, seed: int) -> dict:
    out = {}
    for target in targets():
        st = fuzz(target, inputs, seed, baseline=raw_unpack)
        out[target.name] = {"inputs": st.inputs, "inputs_per_s": round(st.inputs / st.cpu_s),
                            "raw_unpack_per_s": round(st.inputs / st.baseline_s),
                            "ratio_to_raw": round(st.cpu_s / st.baseline_s, 2), "accepted": st.accepted,
                            "refused": dict(sorted(st.reasons.items()))}
        r = out[target.name]
        print(f"{target.name:30s} {r['inputs_per_s']:>8,} inputs/s  (raw unpackb {r['raw_unpack_per_s']:>9,}/s, "
              f"x{r['ratio_to_raw']:<5}) accepted {st.accepted}", flush=True)
    return out


def run_attacks() -> dict:
    net = H("network", b"bench/fuzz")
    out = {}
    for size in (4 << 20, 12 << 20):
        blob = canonical(bytes(size))
        base = measure(lambda: decode(blob, max_bytes=16 << 20))
        for shape in SHAPES:
            data = dense_envelope(size, shape)
            cost = measure(lambda: open_signed(data, net, ed25519_verify, ROUND_TYPES))
            key = f"{size >> 20}MiB {shape}"
            out[key] = {"bytes": len(data), "refused": type(cost.result).__name__, "cpu_s": round(cost.cpu_s, 5),
                        "peak_mb": round(cost.peak_bytes / 2 ** 20, 2), "blob_cpu_s": round(base.cpu_s, 5),
                        "blob_peak_mb": round(base.peak_bytes / 2 ** 20, 2)}
            print(f"attack {key:16s} {out[key]['refused']:10s} cpu {cost.cpu_s * 1e3:8.2f} ms, peak "
                  f"{out[key]['peak_mb']:7.2f} MB (a {size >> 20} MiB blob: {base.cpu_s * 1e3:.1f} ms, "
                  f"{out[key]['blob_peak_mb']:.1f} MB)", flush=True)
    return out


def largest_reveal_cost() -> dict:
    from moenode.testing.fuzzkit import NET, SIGNER

    from moenode.core.messages import MAX_ITEMS, Payload, Submission, batch_loss, seal

    losses = tuple(500_000 for _ in range(MAX_ITEMS))
    pay = Payload(H("m", b""), 4096, bytes(MAX_ITEMS * 4096 * 4), bytes(7 << 20), bytes(MAX_ITEMS * 256),
                  losses, batch_loss(losses))
    sid = H("sid", b"")
    data = seal(Reveal(sid, Submission(sid, SIGNER.public_key, SIGNER.public_key, pay, None)), SIGNER, NET).encode()
    t0 = time.process_time()
    open_signed(data, NET, ed25519_verify, ROUND_TYPES)
    cpu = time.process_time() - t0
    print(f"largest legitimate Reveal: {len(data) / 2 ** 20:.1f} MiB, opened in {cpu * 1e3:.1f} ms of CPU "
          "(the daemon does it on a worker thread)")
    return {"bytes": len(data), "cpu_s": round(cpu, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    ap.add_argument("--inputs", type=int, default=30_000, help="inputs per decoder (CI runs about 3,000)")
    ap.add_argument("--seed", type=int, default=int(time.time()), help="the generator's seed (printed; reruns it)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fuzz.json"))
    args = ap.parse_args()
    print(f"seed {args.seed}, {args.inputs:,} inputs per decoder", flush=True)
    t0 = time.process_time()
    decoders = run_fuzz(args.inputs, args.seed)
    result = {"seed": args.seed, "inputs_total": sum(d["inputs"] for d in decoders.values()), "decoders": decoders,
              "attacks": run_attacks(), "largest_reveal": largest_reveal_cost(),
              "cpu_s": round(time.process_time() - t0, 1)}
    print(f"{result['inputs_total']:,} inputs, no finding, {result['cpu_s']} s of CPU")
    write_result(result, args.out, args.json)


if __name__ == "__main__":
    main()
