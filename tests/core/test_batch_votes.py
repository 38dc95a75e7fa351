"""Batch votes (SPEC section 6.3): one authority signature over a Merkle root of vote digests, with real Ed25519.

An authority checks and locks every order of a batch exactly as one by one; a certificate carries the batch
signature plus the order's membership proof, and whoever applies it checks both.
"""

import pytest

from moenode.core.authority import Conflict
from moenode.core.codec import canonical, decode
from moenode.core.errors import Replay, SchemaError, SignatureError
from moenode.core.ledger import VerifyCache
from moenode.core.ledger_client import Certified, OrderSubmitter
from moenode.core.orders import (
    MAX_BATCH,
    PAD_LEAF,
    BatchVote,
    CertifiedOrder,
    Transfer,
    batch_proofs,
    batch_vote_digest,
    certify,
    fold_proof,
    vote_digest,
)
from moenode.testing.ledgerkit import T0, Net


def _transfers(net: Net, n: int, amount: int = 10) -> list:
    users = net.user_keys
    return [net.seal(Transfer(users[i].public_key, 0, 0, users[i + 1].public_key, amount), users[i])
            for i in range(n)]


def _batch_votes(net: Net, orders: list, to: range = range(4)) -> dict[bytes, list]:
    return {net.authorities[i].me: net.authorities[i].handle_orders([o.encode() for o in orders], T0) for i in to}


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9])
def test_every_proof_leads_to_the_root(n):
    leaves = [bytes([i + 1]) * 32 for i in range(n)]
    root, proofs = batch_proofs(leaves)
    assert len({p[0] for p in proofs}) == n
    for leaf, (index, path) in zip(leaves, proofs):
        assert len(path) == (n - 1).bit_length()
        assert fold_proof(leaf, index, path) == root
    # a leaf at another position, or the padding, does not lead there
    if n > 1:
        assert fold_proof(leaves[0], proofs[1][0], proofs[1][1]) != root
        assert fold_proof(PAD_LEAF, proofs[0][0], proofs[0][1]) != root


def test_batch_size_is_bounded():
    with pytest.raises(ValueError, match="1..1024"):
        batch_proofs([])
    with pytest.raises(ValueError, match="at most 1024"):
        Net(n=1, users=1).authorities[0].handle_orders([b""] * (MAX_BATCH + 1), T0)


def test_batch_votes_certify_and_apply_everywhere():
    net = Net(n=5, users=7)
    orders = _transfers(net, 6)
    votes = _batch_votes(net, orders)
    power = net.ledger.power_at(0)
    for i, signed in enumerate(orders):
        cert = certify(signed, {pk: answers[i] for pk, answers in votes.items()})
        assert all(len(v) == 4 for v in cert.votes)
        again = CertifiedOrder.decode(cert.encode(), net.net, net.verify)
        assert again == cert and again.check(power, net.verify) == 8_000
        net.broadcast(again)
    assert len(net.digests()) == 1
    for i in range(6):
        assert net.ledger.sequence(net.user_keys[i].public_key) == 1


def test_one_signature_per_batch_and_each_order_checked_and_locked():
    net = Net(n=5, users=4)
    alice, bob, carol, dan = net.user_keys
    ok = net.seal(Transfer(alice.public_key, 0, 0, bob.public_key, 5), alice)
    other = net.seal(Transfer(carol.public_key, 0, 0, dan.public_key, 5), carol)
    auth = net.authorities[0]
    first = auth.handle_order(ok.encode(), T0)  # alice's sequence 0 is now locked to `ok`
    rival = net.seal(Transfer(alice.public_key, 0, 0, carol.public_key, 5), alice)
    too_early = net.seal(Transfer(bob.public_key, 3, 0, carol.public_key, 5), bob)
    answers = auth.handle_orders([ok.encode(), rival.encode(), other.encode(), too_early.encode()], T0)
    assert isinstance(answers[1], Conflict) and answers[3].reason == "sequence_gap"
    a, c = answers[0], answers[2]
    assert isinstance(a, BatchVote) and isinstance(c, BatchVote) and a.sig == c.sig != first
    assert auth.locked(alice.public_key, 0) == ok.id and auth.locked(carol.public_key, 0) == other.id
    assert auth.locked(bob.public_key, 3) is None
    # the signature covers the root of exactly the accepted orders' vote digests
    root, _ = batch_proofs([vote_digest(ok.id, 0), vote_digest(other.id, 0)])
    assert net.verify(auth.me, batch_vote_digest(root), a.sig)


def test_single_and_batch_votes_mix_in_one_certificate():
    net = Net(n=5, users=2)
    (signed,) = _transfers(net, 1)
    votes: dict = {net.authorities[i].me: net.authorities[i].handle_order(signed.encode(), T0) for i in (0, 1)}
    votes.update({pk: v[0] for pk, v in _batch_votes(net, [signed], range(2, 4)).items()})
    cert = certify(signed, votes)
    assert sorted(len(v) for v in cert.votes) == [2, 2, 4, 4]
    net.broadcast(CertifiedOrder.decode(cert.encode(), net.net, net.verify))
    assert isinstance(net.authorities[4].handle_orders([signed.encode()], T0)[0], Replay)


def _forge(cert: CertifiedOrder, who: int, vote: tuple) -> bytes:
    votes = list(cert.votes)
    votes[who] = vote
    wire = decode(cert.encode(), CertifiedOrder.MAX_BYTES)
    wire["votes"] = [list(v) for v in votes]
    return canonical(wire)


def test_forged_membership_proofs_are_refused():
    net = Net(n=5, users=5)
    orders = _transfers(net, 4)
    votes = _batch_votes(net, orders)
    cert = certify(orders[0], {pk: answers[0] for pk, answers in votes.items()})
    power = net.ledger.power_at(0)
    pk, sig, index, path = cert.votes[0]
    forgeries = {
        "another leaf's position": (pk, sig, 1, path),
        "a changed sibling": (pk, sig, index, (bytes(32),) + path[1:]),
        "a shorter path": (pk, sig, index, path[:-1]),
        "another order's proof": (pk, sig, *((v := votes[pk][2]).index, v.path)),
    }
    for what, vote in forgeries.items():
        forged = CertifiedOrder.decode(_forge(cert, 0, vote), net.net, net.verify)
        with pytest.raises(SignatureError, match="bad batch vote .* membership proof"):
            forged.check(power, net.verify)
        with pytest.raises(SignatureError, match="bad batch vote"):
            net.authorities[4].accept_certificate(_forge(cert, 0, vote))
    # a batch vote moved onto an order outside its batch
    outsider = net.seal(Transfer(net.user_keys[4].public_key, 0, 0, net.user_keys[0].public_key, 1),
                        net.user_keys[4])
    moved = certify(outsider, {p: answers[0] for p, answers in votes.items()})
    with pytest.raises(SignatureError, match="bad batch vote"):
        moved.check(power, net.verify)
    assert all(a.ledger.sequence(orders[0].msg.account) == 0 for a in net.authorities)
    for a in net.authorities:
        a.ledger.assert_supply()


def test_malformed_batch_votes_are_schema_errors():
    net = Net(n=5, users=2)
    (signed,) = _transfers(net, 1)
    votes = _batch_votes(net, [signed])
    cert = certify(signed, {pk: v[0] for pk, v in votes.items()})
    pk, sig, _, path = cert.votes[0]
    bad = {
        "an index beyond its path": [pk, sig, 1, []],
        "a three-part vote": [pk, sig, 0],
        "a path too deep": [pk, sig, 0, [bytes(32)] * 11],
        "a short sibling": [pk, sig, 0, [b"\x01"]],
    }
    for what, vote in bad.items():
        wire = decode(cert.encode(), CertifiedOrder.MAX_BYTES)
        wire["votes"][0] = vote
        with pytest.raises(SchemaError, match="CertifiedOrder.votes"):
            CertifiedOrder.decode(canonical(wire), net.net, net.verify)


def test_submitter_counts_batch_votes_and_refuses_one_for_another_order():
    net = Net(n=5, users=4)
    orders = _transfers(net, 3)
    votes = _batch_votes(net, orders)
    verify = VerifyCache(net.verify)
    sub = OrderSubmitter(orders[1], net.ledger.power_at(0), verify)
    sub.start()
    pks = list(votes)
    assert sub.on_vote(pks[0], votes[pks[0]][2]) == []  # order 2's proof: not this order's vote
    assert sub.refused == {pks[0]: "bad_vote"}
    assert [e for pk in pks[1:] for e in sub.on_vote(pk, votes[pk][1])] == []  # 6,000 of 10,000
    fifth = net.authorities[4]
    (done,) = sub.on_vote(fifth.me, fifth.handle_orders([orders[1].encode()], T0)[0])
    assert isinstance(done, Certified) and pks[0] not in dict((v[0], v) for v in done.cert.votes)
    sub2 = OrderSubmitter(orders[0], net.ledger.power_at(0), verify)
    sub2.start()
    effects = [e for pk in pks for e in sub2.on_vote(pk, votes[pk][0])]
    (done,) = effects
    assert isinstance(done, Certified) and done.cert.check(net.ledger.power_at(0), net.verify) == 8_000
