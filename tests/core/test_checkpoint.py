"""Checkpoints and the stake table: slashing arithmetic, redistribution, carry-over, seeds, and refusals."""

import pytest

from moenode.core.checkpoint import ZERO, Checkpoint, CheckpointCert, Item, next_table, slash_bps
from moenode.core.errors import SchemaError, SignatureError, StateError
from moenode.core.genesis import Params, next_epoch_seed
from moenode.core.orders import Transfer
from moenode.testing.ledgerkit import EPOCH_MS, T0, Net

P = Params()
A, B, C = b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32


def strike(acct: bytes, epoch: int, n: int) -> list[Item]:
    return [Item(epoch, "strike", acct, bytes([i]) * 32, 1) for i in range(n)]


def test_latency_slash_is_10_bps_per_strike_capped_at_100_per_epoch():
    assert slash_bps(strike(A, 0, 3), P) == {A: 30}
    assert slash_bps(strike(A, 0, 25), P) == {A: 100}
    assert slash_bps(strike(A, 0, 25) + strike(A, 1, 2), P) == {A: 120}  # carried-over epochs cap separately
    ev = [Item(0, "equivocation", A, b"\x01" * 32, 1), Item(0, "double_proxy", A, b"\x02" * 32, 1)]
    assert slash_bps(ev, P) == {A: 5_000}  # equivocation-class evidence counts once per checkpoint
    assert slash_bps(ev + [Item(0, "faulty", A, b"\x03" * 32, 1)], P) == {A: 5_500}


def test_slashed_stake_is_shared_pro_rata_among_the_unslashed():
    table = {A: 10_000, B: 30_000, C: 10_000}
    new, pay = next_table(table, strike(A, 0, 5), P)  # 50 bps of 10,000 = 50
    assert new == {A: 9_950, B: 30_038, C: 10_012}  # 37.5 / 12.5: equal remainders, the +1 goes to the lower key
    assert sum(new.values()) == sum(table.values()) and pay == {}
    new, _ = next_table(table, [Item(0, "equivocation", B, ZERO, 1)], P)
    assert new == {A: 17_500, B: 15_000, C: 17_500}
    everyone = [Item(0, "equivocation", k, ZERO, 1) for k in table]
    assert next_table(table, everyone, P)[0] == table  # nowhere to send it: no one is slashed


def test_unstake_pays_what_is_left_after_slashing_and_stake_adds():
    table = {A: 1_000, B: 1_000}
    items = [Item(0, "equivocation", A, ZERO, 1), Item(0, "unstake", A, b"\x01" * 32, 900),
             Item(0, "stake", C, b"\x02" * 32, 70)]
    new, pay = next_table(table, sorted(items), P)
    assert pay == {A: 500} and new == {B: 1_500, C: 70}


def _cert(net: Net, cp: Checkpoint, now: int, voters=None) -> bytes:
    auths = net.authorities if voters is None else [net.authorities[i] for i in voters]
    return CheckpointCert(cp, tuple(sorted((a.me, a.sign_checkpoint(cp, now)) for a in auths))).encode()


def test_no_checkpoint_carries_the_table_over_and_items_wait():
    net = Net(n=4)
    cheat = net.auth_keys[0].public_key
    _, ctx = net.pay(net.user_keys[0], fee=100)
    members, _ = net.members(ctx)
    struck = members[-1]
    net.settle(ctx, net.shard_cert(net.report(ctx, strikes=(struck,))), net.user_keys[1])
    led = net.ledger
    seed1 = led.epoch_seed(1)
    for a in net.authorities:
        a.skip_checkpoint(0)
    assert led.stakes_at(2) == led.stakes_at(1) and led.known_through == 2
    assert led.epoch_seed(2) == next_epoch_seed(2, seed1, b"")
    cp = led.propose_checkpoint(1)
    assert [(i.kind, i.account, i.epoch) for i in cp.items] == [("strike", struck, 0)]
    with pytest.raises(StateError, match="during epoch 2"):
        net.authorities[0].sign_checkpoint(cp, EPOCH_MS + 1)
    data = _cert(net, cp, 2 * EPOCH_MS + 1)
    for a in net.authorities:
        assert a.accept_checkpoint(data) == "applied"
        assert a.accept_checkpoint(data) == "duplicate"
        a.ledger.assert_supply()
    assert led.stakes_at(3)[struck] == 10_000 - 10
    assert led.epoch_seed(2) == next_epoch_seed(2, seed1, b"")
    assert led.epoch_seed(3) == next_epoch_seed(3, led.epoch_seed(2), cp.digest_for(net.net))
    assert cheat in led.stakes_at(3)
    assert len(net.digests()) == 1


def test_checkpoint_refusals():
    net = Net(n=4)
    a0 = net.authorities[0]
    cp = a0.ledger.propose_checkpoint(0)
    with pytest.raises(SignatureError, match="need 6667"):
        a0.accept_checkpoint(_cert(net, cp, EPOCH_MS + 1, voters=[0, 1]))
    forked = Checkpoint(epoch=0, prev=b"\x09" * 32, items=())
    with pytest.raises(StateError, match="another checkpoint history"):
        a0.ledger.accept_checkpoint(CheckpointCert(forked, ((a0.me, bytes(64)),)))
    with pytest.raises(StateError, match="waiting for epoch 0"):
        a0.ledger.accept_checkpoint(CheckpointCert(Checkpoint(epoch=1, prev=ZERO, items=()), ((a0.me, bytes(64)),)))
    with pytest.raises(SchemaError, match="unique and sorted"):
        Checkpoint.from_body({"epoch": 0, "prev": ZERO, "items": [[0, "strike", A, ZERO, 1]] * 2})
    with pytest.raises(SchemaError, match="unknown item kind"):
        Checkpoint.from_body({"epoch": 0, "prev": ZERO, "items": [[0, "gift", A, ZERO, 1]]})
    with pytest.raises(SchemaError, match="tagged after"):
        Checkpoint.from_body({"epoch": 0, "prev": ZERO, "items": [[1, "strike", A, ZERO, 1]]})
    with pytest.raises(StateError, match="fault items differ"):
        a0.sign_checkpoint(Checkpoint(epoch=0, prev=ZERO, items=(Item(0, "strike", A, ZERO, 1),)), EPOCH_MS + 1)


def test_orders_of_an_unfixed_epoch_wait_for_the_checkpoint():
    net = Net(n=4)
    alice, bob = net.user_keys[:2]
    late = Net(n=4)  # a node that has not seen checkpoint 0 yet
    cp_data = _cert(net, net.ledger.propose_checkpoint(0), EPOCH_MS + 1)
    for a in net.authorities:
        a.accept_checkpoint(cp_data)
    cert = net.run(Transfer(alice.public_key, 0, 2, bob.public_key, 9), alice, now=2 * EPOCH_MS + 1)
    node = late.authorities[0]
    assert node.accept_certificate(cert.encode()) == "pending"
    assert node.ledger.balance(bob.public_key) == 1_000_000
    assert node.accept_checkpoint(cp_data) == "applied"
    assert node.ledger.balance(bob.public_key) == 1_000_009 and not node.ledger.pending
    assert T0 < EPOCH_MS


def test_collector_forms_the_certificate_at_quorum_only():
    from moenode.core.checkpoint import CheckpointCollector

    net = Net(n=4)
    cp = net.ledger.propose_checkpoint(0)
    col = CheckpointCollector(cp, net.net, net.ledger.power_at(1), net.verify)
    a = net.authorities
    assert col.add(a[0].me, a[0].sign_checkpoint(cp, EPOCH_MS)) is None
    assert col.add(a[1].me, bytes(64)) is None and a[1].me not in col.votes  # a bad vote is not counted
    assert col.add(net.user_keys[0].public_key, bytes(64)) is None  # no power
    assert col.add(a[1].me, a[1].sign_checkpoint(cp, EPOCH_MS)) is None
    cc = col.add(a[2].me, a[2].sign_checkpoint(cp, EPOCH_MS))
    assert cc is not None and len(cc.votes) == 3
    for x in a:
        assert x.accept_checkpoint(cc.encode()) == "applied"


def test_far_future_certificates_are_refused_not_hoarded():
    net = Net(n=4)
    alice, bob = net.user_keys[:2]
    far = net.seal(Transfer(alice.public_key, 0, 9, bob.public_key, 1), alice)
    from moenode.core.orders import CertifiedOrder

    fake = CertifiedOrder(far, ((net.authorities[0].me, bytes(64)),))
    with pytest.raises(StateError, match="too far ahead"):
        net.authorities[0].accept_certificate(fake.encode())
    assert not net.ledger.pending


def test_tick_skips_missed_checkpoints_and_offers_the_due_one():
    net = Net(n=4)
    a = net.authorities[0]
    assert a.tick(T0) is None  # epoch 0: nothing is due
    cp = a.tick(EPOCH_MS + 5)  # epoch 1: the checkpoint of epoch 0 is signed now
    assert cp is not None and cp.epoch == 0 and a.ledger.known_through == 1
    assert a.tick(4 * EPOCH_MS + 5).epoch == 3  # epochs 0..2 never formed: tables 2..4 carried over
    assert a.ledger.known_through == 4 and a.ledger.stakes_at(4) == a.ledger.stakes_at(0)
    assert [k for k, _, _ in a.store.log] == ["skip", "skip", "skip"]
    sigs = tuple(sorted((x.me, x.sign_checkpoint(x.tick(4 * EPOCH_MS + 5), 4 * EPOCH_MS + 5))
                        for x in net.authorities))
    for x in net.authorities:
        assert x.accept_checkpoint(CheckpointCert(cp.__class__(epoch=3, prev=ZERO, items=()), sigs).encode()) \
            == "applied"
    assert a.ledger.known_through == 5


def test_orders_keep_flowing_when_no_checkpoint_is_ever_signed():
    net = Net(n=4)
    alice, bob = net.user_keys[:2]
    now = 7 * EPOCH_MS + 3
    cert = net.run(Transfer(alice.public_key, 0, 7, bob.public_key, 3), alice, now=now)
    assert net.ledger.known_through == 7 and net.ledger.balance(bob.public_key) == 1_000_003
    idle = Net(n=4).authorities[0]  # a node that saw nothing for 7 epochs
    assert idle.accept_certificate(cert.encode(), now) == "applied"
    assert idle.ledger.state_digest() == net.ledger.state_digest()


def _struck_settle(net: Net) -> bytes:
    """Settle one round that strikes a member, so a checkpoint of epoch 0 changes the stake table."""
    _, ctx = net.pay(net.user_keys[0], fee=100)
    members, _ = net.members(ctx)
    net.settle(ctx, net.shard_cert(net.report(ctx, strikes=(members[-1],))), net.user_keys[1])
    return members[-1]


def test_a_late_certificate_replaces_a_local_carry_over():
    net = Net(n=4)
    struck = _struck_settle(net)
    behind = net.authorities[3]  # it carried epoch 0 over before the certificate reached it
    data = _cert(net, net.ledger.propose_checkpoint(0), EPOCH_MS + 1, voters=[0, 1, 2])
    for a in net.authorities[:3]:
        assert a.accept_checkpoint(data) == "applied"
    behind.skip_checkpoint(0)
    assert len(net.digests()) == 2
    assert behind.accept_checkpoint(data) == "adopted" and behind.dropped == []
    assert behind.accept_checkpoint(data) == "duplicate"
    assert len(net.digests()) == 1 and behind.ledger.stakes_at(2)[struck] == 10_000 - 10
    assert ("checkpoint", net.ledger.cp_digests[0], data) in behind.store.entries()
    assert ("skip", (0).to_bytes(8, "big"), b"") not in behind.store.entries()
    behind.ledger.assert_supply()


def test_certificates_that_arrive_out_of_order_are_set_aside_and_applied_in_order():
    net = Net(n=4)
    _struck_settle(net)
    behind = net.authorities[3]
    first = _cert(net, net.ledger.propose_checkpoint(0), EPOCH_MS + 1, voters=[0, 1, 2])
    for a in net.authorities[:3]:
        a.accept_checkpoint(first)
    second = _cert(net, net.ledger.propose_checkpoint(1), 2 * EPOCH_MS + 1, voters=[0, 1, 2])
    for a in net.authorities[:3]:
        a.accept_checkpoint(second)
    behind.catch_up(3 * EPOCH_MS + 1)  # carries 0 and 1 over
    assert behind.ledger.skipped == {0, 1}
    with pytest.raises(StateError, match="another checkpoint history"):
        behind.accept_checkpoint(second)  # its predecessor is missing here: kept aside
    assert behind.accept_checkpoint(first) == "adopted"
    assert len(net.digests()) == 1 and behind.ledger.skipped == set()


def test_a_forged_certificate_does_not_undo_a_carry_over():
    net = Net(n=4)
    _struck_settle(net)
    behind = net.authorities[3]
    weak = _cert(net, net.ledger.propose_checkpoint(0), EPOCH_MS + 1, voters=[0, 1])
    behind.skip_checkpoint(0)
    before = behind.ledger.state_digest()
    with pytest.raises(SignatureError, match="need 6667"):
        behind.accept_checkpoint(weak)
    assert behind.ledger.state_digest() == before and behind.ledger.skipped == {0}


def _equivocation(net: Net, shard: bytes):
    from moenode.core.messages import Commit, Evidence, seal

    cheat = net.auth_keys[0]
    a, b = (seal(Commit(shard, bytes([i]) * 32), cheat, net.net) for i in (1, 2))
    return Evidence("equivocation", cheat.public_key, shard, a.as_wire(), b.as_wire())


def test_evidence_accepted_across_an_epoch_boundary_does_not_split_the_checkpoint():
    net = Net(n=4)
    early, late = net.authorities[:2], net.authorities[2:]
    ev = _equivocation(net, b"\x05" * 32)
    for a in early:
        a.add_evidence(ev, EPOCH_MS - 1)  # tagged 0 here
    for a in late:
        a.add_evidence(ev, EPOCH_MS + 1)  # tagged 1 here: same evidence, other side of the boundary
    cp = early[0].ledger.propose_checkpoint(0)
    assert [i.kind for i in cp.items] == ["equivocation"] and late[0].ledger.propose_checkpoint(0).items == ()
    data = _cert(net, cp, EPOCH_MS + 2)  # all four sign, the late ones too
    for a in net.authorities:
        assert a.accept_checkpoint(data) == "applied"
        assert not a.ledger.items
    assert len(net.digests()) == 1 and net.ledger.stakes_at(2)[net.auth_keys[0].public_key] == 5_000

    # unknown evidence, or old evidence left out, is still refused
    other = Net(n=4)
    stranger = _equivocation(other, b"\x06" * 32)
    other.authorities[0].add_evidence(stranger, EPOCH_MS - 1)
    with pytest.raises(StateError, match="has not seen"):
        other.authorities[1].sign_checkpoint(other.authorities[0].ledger.propose_checkpoint(0), EPOCH_MS + 1)
    other.authorities[0].skip_checkpoint(0)
    with pytest.raises(StateError, match="leaves out evidence"):  # tagged 0: a whole epoch to spread before cp 1
        other.authorities[0].sign_checkpoint(Checkpoint(epoch=1, prev=ZERO, items=()), 2 * EPOCH_MS + 1)
