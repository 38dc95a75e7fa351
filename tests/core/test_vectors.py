"""The code against the golden vectors in protocol/vectors (regenerate with scripts/make_vectors.py)."""

import json
import sys
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
sys.path.insert(0, str(VECTORS))

from tagged import from_json  # noqa: E402

from moenode.core.codec import canonical, decode  # noqa: E402
from moenode.core.crypto import Ed25519Signer, H, body_digest, ed25519_verify  # noqa: E402
from moenode.core.genesis import parse_genesis  # noqa: E402
from moenode.core.messages import decode_certificate  # noqa: E402
from moenode.core.selection import sample_shard, shard_size, voting_power  # noqa: E402
from moenode.testing.roundkit import Scenario, make_signers  # noqa: E402


def load(name):
    return json.loads((VECTORS / name).read_text())


@pytest.mark.parametrize("case", load("encoding.json"), ids=lambda c: c["canonical"][:16])
def test_encoding(case):
    value = from_json(case["value"])
    assert canonical(value).hex() == case["canonical"]
    assert canonical(decode(bytes.fromhex(case["canonical"]))).hex() == case["canonical"]


def test_hashes():
    for case in load("hashes.json"):
        assert H(case["tag"], bytes.fromhex(case["data"])).hex() == case["hash"]


def test_signatures():
    for case in load("signatures.json"):
        s = Ed25519Signer(bytes.fromhex(case["seed"]))
        body = from_json(case["body"])
        assert s.public_key.hex() == case["pubkey"]
        assert canonical(body).hex() == case["canonical_body"]
        assert body_digest(body).hex() == case["digest"]
        assert s.sign(body_digest(body)).hex() == case["sig"]
        assert ed25519_verify(s.public_key, bytes.fromhex(case["digest"]), bytes.fromhex(case["sig"]))


def test_shard_size_1_to_2000():
    for N, n, q in load("shard_size.json"):
        assert shard_size(N) == (n, q)


def test_voting_power_and_sampling():
    for case in load("selection.json"):
        stakes = {bytes.fromhex(pk): s for pk, s in case["stakes"]}
        power = voting_power(stakes)
        assert sorted((pk.hex(), p) for pk, p in power.items()) == [tuple(x) for x in case["power"]]
        shard = sample_shard(power, bytes.fromhex(case["shard_seed"]), case["n"])
        assert [pk.hex() for pk in shard] == case["shard"]


@pytest.mark.parametrize("case", load("rounds.json"), ids=lambda c: c["name"])
def test_recorded_rounds(case):
    genesis = parse_genesis(case["genesis_toml"])
    sc = Scenario(make_signers(len(genesis.accounts), case["member_entropy_tag"].encode()), genesis.params)
    assert sc.genesis == genesis
    for m in case["behaviour"]["slow"]:
        sc.took[bytes.fromhex(m)] = 4_000
    sc.cheaters.update(bytes.fromhex(m) for m in case["behaviour"]["cheaters"])
    trace: list[str] = []
    shard = sc.shard(link=lambda src, dst, env: (trace.append(H("trace", env.encode()).hex()), [1])[1])
    submitter = Ed25519Signer.from_entropy(case["submitter_entropy"].encode())
    res = shard.run(submitter, case["items"], bytes.fromhex(case["nonce"]), wait_ms=case["wait_ms"])
    assert sorted(m.hex() for m in res.members) == case["members"]
    assert len(trace) == case["messages"]
    assert H("trace", "".join(trace).encode()).hex() == case["trace_digest"]
    cert = res.submitter.certificate
    assert cert.encode().hex() == case["certificate"]
    again = decode_certificate(bytes.fromhex(case["certificate"]))
    n, q = shard_size(len(genesis.accounts))
    again.check(genesis.network_id, ed25519_verify, [bytes.fromhex(m) for m in case["members"]], q)
    assert again.report.winner.hex() == case["winner"]
