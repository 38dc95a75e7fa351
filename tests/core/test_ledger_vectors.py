"""Settlement golden vectors (protocol/vectors/settlement_*.json): order encodings and ids, votes, certified
orders, renewals, order requests, reward splits and checkpoint slashing.


orders, escrow accounts, reward splits and checkpoint slashing.

Regenerate (only when the protocol changes on purpose): `python tests/core/test_ledger_vectors.py --write`.
The tests decode the stored bytes independently of how they were built, then compare every derived value.
"""

import json
import sys
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
sys.path.insert(0, str(VECTORS))

from tagged import from_json, to_json  # noqa: E402

import pytest  # noqa: E402

from moenode.core.checkpoint import Item, next_table  # noqa: E402
from moenode.core.codec import canonical, decode  # noqa: E402
from moenode.core.crypto import Ed25519Signer, H, ed25519_verify  # noqa: E402
from moenode.core.errors import SchemaError  # noqa: E402
from moenode.core.genesis import Params  # noqa: E402
from moenode.core.ledger import settle_split  # noqa: E402
from moenode.core.messages import Certificate, Report, seal  # noqa: E402
from moenode.core.orders import (  # noqa: E402
    BatchVote,
    CertifiedOrder,
    OrderRequest,
    PayEscrow,
    Refund,
    Settle,
    Stake,
    Transfer,
    Unstake,
    batch_proofs,
    batch_vote_digest,
    certify,
    escrow_account,
    fold_proof,
    open_order,
    vote_digest,
)
from moenode.testing.ledgerkit import seal_unchecked, unchecked  # noqa: E402

NET = H("network", b"settlement-vectors")
SEEDS = [bytes([i + 1]) * 32 for i in range(4)]  # 0: user, 1..3: authorities
SHARD = H("vector", b"shard")


def _report(fee: int, winner: bytes, producer: bytes, share: int) -> Report:
    return Report(shard_id=SHARD, epoch=3, submitter=Ed25519Signer(SEEDS[0]).public_key, data_hash=H("d", b""),
                  nonce=b"\x07" * 32, pay_id=H("p", b""), fee=fee, winner=winner, producer=producer,
                  producer_share_bps=share, model_id=H("m", b""), winner_digest=H("w", b""), loss_micro=123_456,
                  item_losses=(123_456,), routing=b"\x00\x3c\x00\x3c", strikes=(), faulty=())


def orders() -> list:
    user = Ed25519Signer(SEEDS[0])
    auths = [Ed25519Signer(s) for s in SEEDS[1:]]
    me, other = user.public_key, auths[0].public_key
    report = _report(1_000, other, other, 0)
    rep_sigs = tuple(sorted((a.public_key, a.sign(H("msg", b"not-checked-here"))) for a in auths))
    cases = [
        Transfer(me, 0, 3, other, 1_234),
        PayEscrow(me, 1, 3, SHARD, 1_000, 3_600_000),
        Refund(escrow_account(SHARD), 0, 3, SHARD, H("p", b""), 1_000),
        Stake(me, 2, 3, 50_000),
        Unstake(me, 3, 3, 20_000),
        Settle(escrow_account(SHARD), 0, 3, Certificate(report, rep_sigs)),
        Stake(me, 4, 3, 10_000, ("l3", "main")),  # declares the spaces its model serves (spaces.md 3.2)
    ]
    out = []
    for order in cases:
        signed = seal(order, user, NET)
        votes = {a.public_key: a.sign(vote_digest(signed.id, order.epoch)) for a in auths}
        cert = certify(signed, votes)
        out.append({"type": order.TYPE, "signer_seed": SEEDS[0].hex(), "authority_seeds": [s.hex() for s in SEEDS[1:]],
                    "net": NET.hex(), "body": to_json(signed.body()), "envelope": signed.encode().hex(),
                    "order_id": signed.id.hex(), "vote_digest": vote_digest(signed.id, order.epoch).hex(),
                    "votes": [[pk.hex(), sig.hex()] for pk, sig in cert.votes], "certified": cert.encode().hex()})
    return out


def batch_votes() -> list:
    """Three orders voted for as one batch by each authority: the root, its digest, each order's proof."""
    user = Ed25519Signer(SEEDS[0])
    auths = [Ed25519Signer(s) for s in SEEDS[1:]]
    me, other = user.public_key, auths[0].public_key
    signed = [seal(o, user, NET) for o in (Transfer(me, 0, 3, other, 1), Transfer(me, 1, 3, other, 2),
                                            Stake(me, 2, 3, 3))]
    root, proofs = batch_proofs([vote_digest(s.id, 3) for s in signed])
    sigs = {a.public_key: a.sign(batch_vote_digest(root)) for a in auths}
    certs = [certify(s, {pk: BatchVote(sig, *proofs[i]) for pk, sig in sigs.items()}) for i, s in enumerate(signed)]
    return [{"signer_seed": SEEDS[0].hex(), "authority_seeds": [s.hex() for s in SEEDS[1:]], "net": NET.hex(),
             "order_ids": [s.id.hex() for s in signed], "root": root.hex(),
             "batch_vote_digest": batch_vote_digest(root).hex(),
             "proofs": [[i, [h.hex() for h in path]] for i, path in proofs],
             "certified": [c.encode().hex() for c in certs]}]


def renewal() -> list:
    """An order of epoch 3 that lacked its quorum, voted for again in epoch 5 (SPEC 6.8): the renewal's vote digest,
    votes and certificate (with `vote_epoch`), the order requests of a first vote and of a renewal, and a
    certificate that names its order's own epoch as `vote_epoch` (not canonical: refused)."""
    user = Ed25519Signer(SEEDS[0])
    auths = [Ed25519Signer(s) for s in SEEDS[1:]]
    signed = seal(Transfer(user.public_key, 4, 3, auths[0].public_key, 77), user, NET)
    digest = vote_digest(signed.id, 5)
    cert = certify(signed, {a.public_key: a.sign(digest) for a in auths}, 5)
    wire = decode(cert.encode())
    bad = canonical(dict(wire, vote_epoch=3))
    return [{"signer_seed": SEEDS[0].hex(), "authority_seeds": [s.hex() for s in SEEDS[1:]], "net": NET.hex(),
             "envelope": signed.encode().hex(), "order_id": signed.id.hex(), "order_epoch": 3, "vote_epoch": 5,
             "vote_digest": digest.hex(), "first_vote_digest": vote_digest(signed.id, 3).hex(),
             "votes": [[pk.hex(), sig.hex()] for pk, sig in cert.votes], "certified": cert.encode().hex(),
             "request_first": OrderRequest(signed.encode(), ()).encode().hex(),
             "request_renewal": OrderRequest(signed.encode(), (), 5).encode().hex(),
             "certified_not_canonical": bad.hex()}]


def escrows() -> list:
    """Escrow accounts of four shards, and for each a Transfer into it, sealed by hand as a client that skips the
    check would: every receiver refuses it (schema)."""
    user = Ed25519Signer(SEEDS[0])
    out = []
    for i in range(4):
        sid = H("vector", b"shard" + bytes([i]))
        order = unchecked(Transfer, account=user.public_key, sequence=0, epoch=3, recipient=escrow_account(sid),
                          amount=1_000)
        out.append({"shard_id": sid.hex(), "escrow": escrow_account(sid).hex(), "net": NET.hex(),
                    "transfer_to_escrow": seal_unchecked(order, user, NET).hex()})
    return out


def splits() -> list:
    W, P, S1, S2, S3 = (bytes([c]) * 32 for c in b"WPabc")
    cases = [(10_000, W, W, 0, [W, S1, S2, S3]), (10_001, W, P, 3_000, [W, S1, S2]), (7, W, W, 0, [W, S1, S2]),
             (999_999_999, W, P, 9_000, [S1, S2, S3]), (1, W, P, 5_000, [W, S1])]
    out = []
    for fee, w, p, share, signers in cases:
        split = settle_split(_report(fee, w, p, share), signers, Params().winner_bps)
        out.append({"fee": fee, "winner": w.hex(), "producer": p.hex(), "producer_share_bps": share,
                    "signers": [s.hex() for s in signers], "winner_bps": Params().winner_bps,
                    "split": {k.hex(): v for k, v in sorted(split.items())}})
    return out


def slashing() -> list:
    A, B, C = (bytes([c]) * 32 for c in b"ABC")
    table = {A: 10_000, B: 30_000, C: 10_000}
    item_sets = [
        [Item(0, "strike", A, bytes([i]) * 32, 1) for i in range(5)],
        [Item(0, "strike", A, bytes([i]) * 32, 1) for i in range(30)] + [Item(1, "strike", B, b"\1" * 32, 1)],
        [Item(0, "equivocation", B, b"\0" * 32, 1), Item(0, "unstake", B, b"\2" * 32, 20_000),
         Item(0, "stake", C, b"\3" * 32, 5)],
        [Item(0, "faulty", C, b"\0" * 32, 1), Item(0, "reveal_mismatch", C, b"\1" * 32, 1)],
        [Item(0, "serve", C, b"\3" * 32, 0b101), Item(0, "stake", C, b"\3" * 32, 5)],  # a serve item moves no stake
    ]
    out = []
    for items in item_sets:
        items = sorted(items)
        new, pay = next_table(table, items, Params())
        out.append({"table": {k.hex(): v for k, v in sorted(table.items())},
                    "items": [[i.epoch, i.kind, i.account.hex(), i.source.hex(), i.value] for i in items],
                    "next_table": {k.hex(): v for k, v in sorted(new.items())},
                    "payouts": {k.hex(): v for k, v in sorted(pay.items())}})
    return out


FILES = {"settlement_orders.json": orders, "settlement_batch_votes.json": batch_votes,
         "settlement_renewal.json": renewal, "settlement_escrows.json": escrows, "settlement_splits.json": splits,
         "settlement_slashing.json": slashing}


def load(name: str):
    return json.loads((VECTORS / name).read_text())


def test_orders_decode_to_the_stored_ids_votes_and_certificates():
    for case in load("settlement_orders.json"):
        net = bytes.fromhex(case["net"])
        signed = open_order(bytes.fromhex(case["envelope"]), net, ed25519_verify)
        assert signed.body() == from_json(case["body"])
        assert signed.id.hex() == case["order_id"]
        assert vote_digest(signed.id, signed.msg.epoch).hex() == case["vote_digest"]
        keys = {Ed25519Signer(bytes.fromhex(s)).public_key.hex(): Ed25519Signer(bytes.fromhex(s))
                for s in case["authority_seeds"]}
        for pk, sig in case["votes"]:
            assert keys[pk].sign(bytes.fromhex(case["vote_digest"])).hex() == sig  # Ed25519 is deterministic
            assert ed25519_verify(bytes.fromhex(pk), bytes.fromhex(case["vote_digest"]), bytes.fromhex(sig))
        cert = CertifiedOrder.decode(bytes.fromhex(case["certified"]), net, ed25519_verify)
        assert cert.id == signed.id and cert.encode().hex() == case["certified"]
        assert cert.check({bytes.fromhex(pk): 3_334 for pk, _ in case["votes"]}, ed25519_verify) == 10_002


def test_batch_votes_decode_and_prove_membership():
    for case in load("settlement_batch_votes.json"):
        net = bytes.fromhex(case["net"])
        keys = [Ed25519Signer(bytes.fromhex(s)) for s in case["authority_seeds"]]
        root = bytes.fromhex(case["root"])
        assert batch_vote_digest(root).hex() == case["batch_vote_digest"]
        for i, data in enumerate(case["certified"]):
            cert = CertifiedOrder.decode(bytes.fromhex(data), net, ed25519_verify)
            assert cert.id.hex() == case["order_ids"][i] and cert.encode().hex() == data
            index, path = case["proofs"][i]
            assert fold_proof(vote_digest(cert.id, 3), index, tuple(bytes.fromhex(h) for h in path)) == root
            for (pk, sig, vindex, vpath), key in zip(cert.votes, sorted(keys, key=lambda k: k.public_key)):
                assert pk == key.public_key and (vindex, [h.hex() for h in vpath]) == (index, path)
                assert key.sign(batch_vote_digest(root)) == sig  # Ed25519 is deterministic
            assert cert.check({k.public_key: 3_334 for k in keys}, ed25519_verify) == 10_002


def test_renewals_decode_to_the_stored_votes_and_requests():
    for case in load("settlement_renewal.json"):
        net = bytes.fromhex(case["net"])
        signed = open_order(bytes.fromhex(case["envelope"]), net, ed25519_verify)
        assert signed.id.hex() == case["order_id"] and signed.msg.epoch == case["order_epoch"]
        assert vote_digest(signed.id, case["vote_epoch"]).hex() == case["vote_digest"]
        assert vote_digest(signed.id, case["order_epoch"]).hex() == case["first_vote_digest"]
        cert = CertifiedOrder.decode(bytes.fromhex(case["certified"]), net, ed25519_verify)
        assert cert.id == signed.id and cert.vote_epoch == case["vote_epoch"]
        assert cert.encode().hex() == case["certified"]
        power = {bytes.fromhex(pk): 3_334 for pk, _ in case["votes"]}
        assert cert.check(power, ed25519_verify) == 10_002
        for pk, sig in case["votes"]:  # a renewal's votes are over the later epoch, never the order's own
            assert ed25519_verify(bytes.fromhex(pk), bytes.fromhex(case["vote_digest"]), bytes.fromhex(sig))
            assert not ed25519_verify(bytes.fromhex(pk), bytes.fromhex(case["first_vote_digest"]), bytes.fromhex(sig))
        first = OrderRequest.decode(bytes.fromhex(case["request_first"]))
        again = OrderRequest.decode(bytes.fromhex(case["request_renewal"]))
        assert first.vote_epoch is None and again.vote_epoch == case["vote_epoch"]
        assert first.order == again.order == signed.encode()
        assert first.encode().hex() == case["request_first"] and again.encode().hex() == case["request_renewal"]
        with pytest.raises(SchemaError, match="vote_epoch"):
            CertifiedOrder.decode(bytes.fromhex(case["certified_not_canonical"]), net, ed25519_verify)


def test_escrow_accounts_are_marked_and_no_transfer_reaches_one():
    for case in load("settlement_escrows.json"):
        escrow = bytes.fromhex(case["escrow"])
        assert escrow_account(bytes.fromhex(case["shard_id"])) == escrow and escrow[:6] == b"escrow"
        with pytest.raises(SchemaError, match="escrow"):
            open_order(bytes.fromhex(case["transfer_to_escrow"]), bytes.fromhex(case["net"]), ed25519_verify)


def test_splits_match_the_vectors():
    for case in load("settlement_splits.json"):
        split = {k.hex(): v for k, v in settle_split(
            _report(case["fee"], bytes.fromhex(case["winner"]), bytes.fromhex(case["producer"]),
                    case["producer_share_bps"]),
            [bytes.fromhex(s) for s in case["signers"]], case["winner_bps"]).items()}
        assert split == case["split"] and sum(split.values()) == case["fee"]


def test_slashing_matches_the_vectors():
    for case in load("settlement_slashing.json"):
        table = {bytes.fromhex(k): v for k, v in case["table"].items()}
        items = [Item(e, k, bytes.fromhex(a), bytes.fromhex(s), v) for e, k, a, s, v in case["items"]]
        new, pay = next_table(table, items, Params())
        assert {k.hex(): v for k, v in new.items()} == case["next_table"]
        assert {k.hex(): v for k, v in pay.items()} == case["payouts"]
        added = sum(i.value for i in items if i.kind == "stake")
        assert sum(new.values()) + sum(pay.values()) == sum(table.values()) + added


def test_vector_files_are_current():
    for name, build in FILES.items():
        assert load(name) == json.loads(json.dumps(build())), f"{name} differs from the code: regenerate on purpose"


if __name__ == "__main__" and "--write" in sys.argv:
    for name, build in FILES.items():
        (VECTORS / name).write_text(json.dumps(build(), indent=1) + "\n")
        print("wrote", VECTORS / name)
