"""Attacks on the ledger, with real Ed25519. None is accepted, each is refused with a clear error, supply holds."""

import pytest

from moenode.core.authority import Conflict
from moenode.core.checkpoint import CheckpointCert, check_evidence
from moenode.core.crypto import Ed25519Signer
from moenode.core.errors import ProtocolError, Replay, SchemaError, SignatureError, StateError, WrongNetwork
from moenode.core.messages import Certificate, Commit, Evidence, OptOut, seal
from moenode.core.orders import (
    CertifiedOrder,
    Refund,
    Settle,
    Transfer,
    UnderQuorum,
    Unstake,
    certify,
    escrow_account,
    open_order,
    vote_digest,
)
from moenode.testing.ledgerkit import EPOCH_MS, T0, Net, signers


def _all_supply(net: Net) -> None:
    for a in net.authorities:
        a.ledger.assert_supply()


def test_double_spend_to_disjoint_authority_sets():
    net = Net(n=5)
    alice, bob, carol = net.user_keys
    a = net.seal(Transfer(alice.public_key, 0, 0, bob.public_key, 900_000), alice)
    b = net.seal(Transfer(alice.public_key, 0, 0, carol.public_key, 900_000), alice)
    votes_a = net.votes(a, to=[0, 1])
    votes_b = net.votes(b, to=[2, 3, 4])
    assert len(votes_a) == 2 and len(votes_b) == 3
    with pytest.raises(UnderQuorum, match="4000 of 10000"):
        certify(a, votes_a).check(net.ledger.power_at(0), net.verify)
    with pytest.raises(UnderQuorum, match="6000 of 10000"):
        certify(b, votes_b).check(net.ledger.power_at(0), net.verify)
    # the other side's authorities refuse each order: they are locked on the first
    for i in (0, 1):
        with pytest.raises(Conflict, match="already signed"):
            net.authorities[i].handle_order(b.encode(), T0)
    for i in (2, 3, 4):
        with pytest.raises(Conflict, match="already signed"):
            net.authorities[i].handle_order(a.encode(), T0)
    # mixing votes of the two orders makes no certificate for either
    mixed = certify(a, {**votes_a, **votes_b})
    with pytest.raises(SignatureError, match="bad vote"):
        mixed.check(net.ledger.power_at(0), net.verify)
    assert net.ledger.balance(bob.public_key) == net.ledger.balance(carol.public_key) == 1_000_000
    _all_supply(net)


def test_replay_into_another_network():
    net = Net(n=4)
    other = Net(n=4, name="another-net")
    alice, bob = net.user_keys[:2]
    cert = net.run(Transfer(alice.public_key, 0, 0, bob.public_key, 10), alice)
    with pytest.raises(WrongNetwork, match="another network"):
        open_order(cert.order.encode(), other.net, other.verify)
    with pytest.raises(WrongNetwork):
        other.authorities[0].handle_order(cert.order.encode(), T0)
    with pytest.raises(WrongNetwork):
        other.authorities[0].accept_certificate(cert.encode())
    assert other.ledger.balance(bob.public_key) == 1_000_000
    _all_supply(other)


def test_settle_without_a_valid_shard_certificate():
    net = Net(n=10)
    payer, relayer = net.user_keys[0], net.user_keys[2]
    _, ctx = net.pay(payer, fee=10_000)
    members, q = net.members(ctx)
    esc = escrow_account(ctx["shard_id"])
    auth = net.authorities[0]
    report = net.report(ctx)

    def attempt(cert: Certificate) -> None:
        auth.handle_order(net.seal(Settle(esc, 0, 0, cert), relayer).encode(), T0)

    with pytest.raises(SchemaError, match=f"{q - 1} signatures, quorum is {q}"):
        attempt(net.shard_cert(report, members[: q - 1]))
    outsiders = [pk for pk in net.keys if pk not in members][:q]
    with pytest.raises(SchemaError, match="not a shard member"):
        attempt(net.shard_cert(report, sorted(outsiders)))
    good = net.shard_cert(report)
    forged = Certificate(report, tuple((pk, bytes(64)) if i == 0 else (pk, s)
                                       for i, (pk, s) in enumerate(good.signatures)))
    with pytest.raises(SignatureError, match="bad signature"):
        attempt(forged)
    stolen = Certificate(net.report(ctx, fee=20_000), good.signatures)  # signatures of another report
    with pytest.raises(SchemaError, match="fee or submitter"):
        attempt(stolen)
    with pytest.raises(SignatureError):
        attempt(Certificate(net.report(ctx, loss_micro=1), good.signatures))
    with pytest.raises(SchemaError, match="producer_share_bps"):
        attempt(net.shard_cert(net.report(ctx, producer=relayer.public_key, share_bps=9_500)))
    assert net.ledger.escrow_bal[esc] == 10_000
    _all_supply(net)


def test_settle_and_refund_racing():
    net = Net(n=5)
    payer, relayer = net.user_keys[0], net.user_keys[1]
    _, ctx = net.pay(payer, fee=3_000, deadline_ms=10_000)
    esc = escrow_account(ctx["shard_id"])
    settle = net.seal(Settle(esc, 0, 0, net.shard_cert(net.report(ctx))), relayer)
    refund = net.seal(Refund(esc, 0, 0, ctx["shard_id"], ctx["pay_id"], 3_000), payer)
    now = 20_000  # past the deadline: both are valid on their own
    vs = net.votes(settle, now, to=[0, 1, 2])
    vr = net.votes(refund, now, to=[3, 4])
    with pytest.raises(Conflict):
        net.authorities[0].handle_order(refund.encode(), now)
    with pytest.raises(Conflict):
        net.authorities[4].handle_order(settle.encode(), now)
    with pytest.raises(UnderQuorum):
        certify(settle, vs).check(net.ledger.power_at(0), net.verify)
    with pytest.raises(UnderQuorum):
        certify(refund, vr).check(net.ledger.power_at(0), net.verify)
    # a second race where the settle wins: afterwards no authority signs the refund, so it can never be paid twice
    _, ctx2 = net.pay(payer, fee=3_000, deadline_ms=10_000, nonce=b"\x02" * 32)
    esc2 = escrow_account(ctx2["shard_id"])
    net.settle(ctx2, net.shard_cert(net.report(ctx2)), relayer, now)
    refund2 = net.seal(Refund(esc2, 0, 0, ctx2["shard_id"], ctx2["pay_id"], 3_000), payer)
    for a in net.authorities:
        with pytest.raises(Replay, match="already used"):
            a.handle_order(refund2.encode(), now)
    assert net.ledger.escrow_bal.get(esc2, 0) == 0
    _all_supply(net)


def test_forged_and_under_quorum_certificates():
    net = Net(n=5)
    alice, bob = net.user_keys[:2]
    signed = net.seal(Transfer(alice.public_key, 0, 0, bob.public_key, 77), alice)
    votes = net.votes(signed)
    auth = net.authorities[0]
    power = net.ledger.power_at(0)
    under = certify(signed, dict(list(votes.items())[:3]))
    with pytest.raises(UnderQuorum, match="6000 of 10000"):
        auth.accept_certificate(under.encode())
    forged = certify(signed, {pk: bytes(64) for pk in votes})
    with pytest.raises(SignatureError, match="bad vote"):
        auth.accept_certificate(forged.encode())
    users = {u.public_key: u.sign(b"\0" * 32) for u in net.user_keys}
    with pytest.raises(SignatureError, match="no voting power"):
        certify(signed, users).check(power, net.verify)
    unsorted = CertifiedOrder(signed, tuple(sorted(votes.items(), reverse=True)))
    with pytest.raises(SchemaError, match="unique and sorted"):
        auth.accept_certificate(unsorted.encode())
    tampered = net.seal(Transfer(alice.public_key, 0, 0, bob.public_key, 77_000), alice)
    with pytest.raises(SignatureError, match="bad vote"):
        auth.accept_certificate(certify(tampered, votes).encode())
    with pytest.raises(ProtocolError):
        auth.accept_certificate(b"\x81\xa5order\xc0")
    assert auth.ledger.balance(bob.public_key) == 1_000_000
    _all_supply(net)


def _evidence_pair(net: Net, offender: Ed25519Signer, shard: bytes) -> Evidence:
    a = seal(Commit(shard, b"\x01" * 32), offender, net.net)
    b = seal(Commit(shard, b"\x02" * 32), offender, net.net)
    return Evidence("equivocation", offender.public_key, shard, a.as_wire(), b.as_wire())


def test_stake_equivocation():
    net = Net(n=4)
    cheat = net.auth_keys[0]
    # two conflicting unstake orders for one sequence, to disjoint halves: neither certifies
    u1 = net.seal(Unstake(cheat.public_key, 0, 0, 10_000), cheat)
    u2 = net.seal(Unstake(cheat.public_key, 0, 0, 9_999), cheat)
    v1, v2 = net.votes(u1, to=[0, 1]), net.votes(u2, to=[2, 3])
    for v, s in ((v1, u1), (v2, u2)):
        with pytest.raises(UnderQuorum):
            certify(s, v).check(net.ledger.power_at(0), net.verify)
    # equivocating on round messages is proven by two envelopes and slashes 50 % at the next checkpoint
    shard = b"\x07" * 32
    ev = _evidence_pair(net, cheat, shard)
    assert check_evidence(ev, net.net, net.verify) == cheat.public_key
    bad = [
        Evidence("equivocation", cheat.public_key, shard, ev.first, ev.first),
        Evidence("equivocation", net.auth_keys[1].public_key, shard, ev.first, ev.second),
        Evidence("commit_after_optout", cheat.public_key, shard, ev.first, ev.second),
        Evidence("equivocation", cheat.public_key, shard,
                 seal(OptOut(shard, "a"), cheat, net.net).as_wire(), seal(OptOut(shard, "b"), cheat, net.net).as_wire()),
    ]
    msgs = ["same message", "not both signed by the offender", "do not prove commit_after_optout", "do not prove"]
    for e, m in zip(bad, msgs):
        with pytest.raises(ProtocolError, match=m):
            check_evidence(e, net.net, net.verify)
    for a in net.authorities:
        assert a.add_evidence(ev, T0)
        assert not a.add_evidence(ev, T0)  # slashed once
    cp = net.ledger.propose_checkpoint(0)
    sigs = tuple(sorted((a.me, a.sign_checkpoint(cp, EPOCH_MS + 5)) for a in net.authorities))
    # an authority never signs a second, different checkpoint for the same epoch, even once its view grew
    late = _evidence_pair(net, net.auth_keys[2], b"\x08" * 32)
    a1 = net.authorities[1]
    assert a1.add_evidence(late, T0)
    with pytest.raises(Conflict, match="another digest"):
        a1.sign_checkpoint(a1.ledger.propose_checkpoint(0), EPOCH_MS + 6)
    for a in net.authorities:
        a.accept_checkpoint(CheckpointCert(cp, sigs).encode())
        a.ledger.assert_supply()
    table = net.ledger.stakes_at(2)
    assert table[cheat.public_key] == 5_000
    assert sorted(v for k, v in table.items() if k != cheat.public_key) == [11_666, 11_667, 11_667]
    with pytest.raises(StateError, match="next one here is 1"):
        a1.sign_checkpoint(cp, EPOCH_MS + 7)
    for a in net.authorities[2:] + net.authorities[:1]:
        a.add_evidence(late, T0)  # the late item waits for the next checkpoint everywhere
    assert len(net.digests()) == 1


def _forge(net: Net, signer, sequence: int, epoch: int, voters: dict) -> bytes:
    """A Transfer of `signer` at `epoch`, with a vote from each of `voters` (pk -> key, or None for a made-up
    signature): what a peer without the network's keys, or with some of them, can offer."""
    order = net.seal(Transfer(signer.public_key, sequence, epoch, net.user_keys[1].public_key, 1), signer)
    digest = vote_digest(order.id, epoch)
    return certify(order, {pk: (k.sign(digest) if k else bytes(64)) for pk, k in voters.items()}).encode()


def test_future_epoch_orders_are_checked_before_they_wait_and_logged_only_once_applied(tmp_path, monkeypatch):
    """A certified order of an epoch whose stake table a node did not know yet used to wait unchecked, and to be
    appended to its log on every offer (a wait is never a duplicate): 300 forged orders offered by gossip and by
    every sync pull grew a node's log to tens of thousands of rows. Now its votes must carry over a third of the
    newest known table before it waits, what waits is bounded per account and per epoch, and an order is logged
    once, when it applies. An honest certificate of such an epoch still applies when its table arrives."""
    from moenode.store.ledger_db import LedgerDB, open_authority

    net = Net(n=4, stores=lambda i, nid: LedgerDB(tmp_path / f"a{i}.db", nid))
    node, store = net.authorities[0], net.authorities[0].store
    alice = net.user_keys[0]
    auth = {k.public_key: k for k in net.auth_keys}
    strangers = {s.public_key: s for s in signers(4, b"stranger")}
    fakes = [_forge(net, alice, i, 2 + i % 2, {pk: None for pk in auth}) for i in range(100)]  # made-up votes
    fakes += [_forge(net, alice, i, 2, strangers) for i in range(100, 200)]  # real signatures, no stake
    one = dict(list(auth.items())[:1])  # one authority of four signs whatever it likes: 2,500 of 10,000
    fakes += [_forge(net, alice, i, 3, one) for i in range(200, 300)]
    for _ in range(5):  # offered again and again, as gossip relays and every sync pull did
        for data in fakes:
            with pytest.raises(StateError, match="checked against the table of epoch 1"):
                node.accept_certificate(data)
    assert store.entries() == [] and len(node.ledger.pending) == 0

    # an honest order of epoch 2, certified by a network that has the checkpoint this node has not received yet
    cp = net.ledger.propose_checkpoint(0)
    cp_data = CheckpointCert(cp, tuple(sorted((a.me, a.sign_checkpoint(cp, EPOCH_MS + 1))
                                              for a in net.authorities[1:]))).encode()
    for a in net.authorities[1:]:
        assert a.accept_checkpoint(cp_data) == "applied"
    bob, carol = net.user_keys[1:]
    signed = net.seal(Transfer(bob.public_key, 0, 2, carol.public_key, 5), bob)
    honest = certify(signed, net.votes(signed, 2 * EPOCH_MS + 1, to=[1, 2, 3]))
    assert node.accept_certificate(honest.encode()) == "pending"
    assert node.accept_certificate(honest.encode()) == "duplicate" and store.entries() == []

    # two of four authorities (more than a third; beyond the fault bound) can make orders wait, but few
    from moenode.core import ledger as ledger_mod
    from moenode.core.ledger import PENDING_PER_ACCOUNT, FutureCertificate

    two = dict(list(auth.items())[:2])
    held = [_forge(net, alice, i, 2, two) for i in range(PENDING_PER_ACCOUNT + 20)]
    statuses = []
    for data in held * 2:
        try:
            statuses.append(node.accept_certificate(data))
        except FutureCertificate as e:
            statuses.append(e.reason)
    assert statuses.count("pending") == statuses.count("duplicate") == PENDING_PER_ACCOUNT
    assert statuses.count("pending_full") == 20 * 2
    monkeypatch.setattr(ledger_mod, "PENDING_PER_EPOCH", PENDING_PER_ACCOUNT + 11)
    others = [_forge(net, k, 0, 2, two) for k in signers(30, b"many")]
    assert [_status(node, d) for d in others].count("pending") == 10  # the epoch's bound (the honest one waits too)
    assert store.entries() == [] and len(node.ledger.pending) == PENDING_PER_ACCOUNT + 11

    # the table arrives: the honest order applies and is logged after it; the others fail their full check
    assert node.accept_checkpoint(cp_data) == "applied"
    assert node.ledger.balance(carol.public_key) == 1_000_005 and not node.ledger.pending  # the forged ones fail
    assert [kind for kind, _, _ in store.entries()] == ["checkpoint", "order"]  # logged once, when applied
    digest = node.ledger.state_digest()
    store.close()
    again = open_authority(tmp_path / "a0.db", net.genesis, net.auth_keys[0], net.verify)
    assert again.ledger.state_digest() == digest


def _status(node, data: bytes) -> str:
    try:
        return node.accept_certificate(data)
    except ProtocolError as e:
        return e.reason
