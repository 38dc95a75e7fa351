"""Property: whatever order certificates reach a node in (interleaved, duplicated, dropped then resent), every node
ends with the same state, and total supply never changes at any step.

A reference network certifies a random history (transfers, escrow payments, settles with strikes, refunds, stakes,
unstakes, a checkpoint, and orders of the epoch that checkpoint fixes). Then 4-10 fresh nodes receive those
certificates in independent random schedules. Signatures use the simulator's cheap signer so hypothesis can try
many histories; test_ledger_attacks.py runs the same code paths with Ed25519.
"""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moenode.core.authority import Authority, MemoryStore
from moenode.core.checkpoint import CheckpointCert
from moenode.core.errors import ProtocolError
from moenode.core.ledger import Ledger
from moenode.core.messages import shard_id as derive_shard_id
from moenode.core.orders import PayEscrow, Refund, Stake, Transfer, Unstake, certify, escrow_account, vote_digest
from moenode.core.selection import data_hash
from moenode.testing.ledgerkit import EPOCH_MS, T0, Net

OP = st.tuples(st.sampled_from(["transfer", "transfer", "pay", "stake", "unstake"]),
               st.integers(0, 20), st.integers(0, 20), st.integers(1, 400_000))


def build_history(n: int, ops: list, rng: random.Random) -> tuple[Net, list[tuple[str, bytes]]]:
    net = Net(n=n, users=3, cheap=True, balance=500_000)
    keys = net.user_keys + net.auth_keys
    msgs: list[tuple[str, bytes]] = []
    escrows = []

    def run(order, signer, now):
        try:
            cert = net.certify(net.seal(order, signer), now)
        except ProtocolError:
            return None  # refused by the reference authorities (funds, stake): not part of the history
        net.broadcast(cert)
        msgs.append(("order", cert.encode()))
        return cert

    for i, (kind, a, b, amount) in enumerate(ops):
        src, dst = keys[a % len(keys)], keys[b % len(keys)]
        seq = net.ledger.sequence(src.public_key)
        if kind == "transfer" and src is not dst:
            run(Transfer(src.public_key, seq, 0, dst.public_key, amount), src, T0)
        elif kind == "pay":
            items = [i.to_bytes(4, "big")]
            sid = derive_shard_id(0, data_hash(items), b"\x05" * 32, src.public_key)
            cert = run(PayEscrow(src.public_key, seq, 0, sid, amount, 100_000), src, T0)
            if cert:
                escrows.append((cert, src, items))
        elif kind == "stake":
            run(Stake(src.public_key, seq, 0, amount), src, T0)
        elif kind == "unstake":
            run(Unstake(src.public_key, seq, 0, 1 + amount % 5_000), src, T0)
    for j, (cert, payer, items) in enumerate(escrows):
        o = cert.msg
        ctx = {"shard_id": o.shard_id, "data_hash": data_hash(items), "nonce": b"\x05" * 32, "epoch": 0,
               "fee": o.fee, "submitter": payer.public_key, "pay_id": cert.id}
        if j % 2:  # refund after the deadline
            run(Refund(escrow_account(o.shard_id), 0, 0, o.shard_id, cert.id, o.fee), payer, 200_000)
        else:
            members, _ = net.members(ctx)
            struck = tuple(m for m in members[1:] if rng.random() < 0.5)
            winner = members[0]
            producer = rng.choice([winner, net.user_keys[0].public_key])
            report = net.report(ctx, winner=winner, producer=producer, share_bps=rng.randrange(0, 9_001),
                                strikes=struck)
            run(net.settle_order(ctx, net.shard_cert(report)), net.user_keys[1], T0)
    # the checkpoint of epoch 0, signed during epoch 1, then orders of epoch 2 that need its stake table
    cp = net.ledger.propose_checkpoint(0)
    sigs = tuple(sorted((a.me, a.sign_checkpoint(cp, EPOCH_MS + 1)) for a in net.authorities))
    data = CheckpointCert(cp, sigs).encode()
    for a in net.authorities:
        a.accept_checkpoint(data)
    msgs.append(("checkpoint", data))
    for u, v in zip(net.user_keys, net.user_keys[1:]):
        run(Transfer(u.public_key, net.ledger.sequence(u.public_key), 2, v.public_key, 1), u, 2 * EPOCH_MS + 1)
    return net, msgs


def deliver(node: Authority, kind: str, data: bytes) -> None:
    if kind == "order":
        node.accept_certificate(data)
    else:
        node.accept_checkpoint(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(4, 10), ops=st.lists(OP, min_size=1, max_size=25), seed=st.integers(0, 2**32 - 1))
def test_any_delivery_order_reaches_the_same_state(n, ops, seed):
    rng = random.Random(seed)
    net, msgs = build_history(n, ops, rng)
    want = net.ledger.state_digest()
    assert not net.ledger.pending
    for _ in range(n):
        node = Authority(Ledger(net.genesis, net.verify), net.auth_keys[0], MemoryStore())
        schedule = [m for m in msgs for _ in range(rng.randint(1, 3))]  # duplicates
        rng.shuffle(schedule)
        dropped = [m for m in schedule if rng.random() < 0.2]
        first = [m for m in schedule if not any(m is d for d in dropped)]
        for kind, data in first + dropped:  # what a drop loses, a resend or a sync brings later
            deliver(node, kind, data)
            node.ledger.assert_supply()
        assert not node.ledger.pending
        assert node.ledger.state_digest() == want


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_dropped_checkpoint_leaves_later_orders_pending_not_wrong(seed):
    """Until the checkpoint arrives, orders of the epoch it fixes wait; the supply holds throughout."""
    rng = random.Random(seed)
    net, msgs = build_history(4, [("stake", 0, 0, 1_000), ("transfer", 1, 2, 5)], rng)
    node = Authority(Ledger(net.genesis, net.verify), net.auth_keys[0], MemoryStore())
    orders = [m for m in msgs if m[0] == "order"]
    rng.shuffle(orders)
    for kind, data in orders:
        deliver(node, kind, data)
        node.ledger.assert_supply()
    assert len(node.ledger.pending) == 2  # the two epoch-2 transfers
    deliver(node, *[m for m in msgs if m[0] == "checkpoint"][0])
    assert not node.ledger.pending
    assert node.ledger.state_digest() == net.ledger.state_digest()


# renewal: retries across epochs never certify two orders at one (account, sequence) -------------------------------
ASK = st.tuples(st.integers(0, 1),  # which of alice's two conflicting orders at sequence 0 ...
                st.integers(0, 8),  # ... asked for when (an epoch; each authority's clock is off by its own skew) ...
                st.integers(0, 3),  # ... made how many epochs before
                st.integers(0, 2),  # 0: votes in the order's own epoch; 1, 2: a renewal in that epoch, or the one before
                st.integers(1, 15))  # the authorities asked (a bit per authority)


@settings(max_examples=200, deadline=None)
@given(asks=st.lists(ASK, min_size=1, max_size=40), liar=st.integers(0, 3),
       skews=st.lists(st.integers(-1, 1), min_size=4, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_no_interleaving_of_retries_across_epochs_certifies_two_orders_at_one_sequence(asks, liar, skews, seed):
    """A client that signs several orders for one sequence, in several epochs, and asks any authorities for votes
    in any epoch, first votes and renewals interleaved; one authority of four (2,500 of the 10,000 voting power,
    under a third) signs whatever it is asked. Every vote that exists is pooled, as a client would, and every
    (order, vote epoch) whose votes carry the quorum is a certificate: they are all of one order, and any node
    applies them, in any order, to the same state."""
    net = Net(n=4, users=3, cheap=True)
    alice, bob, carol = net.user_keys
    power = net.ledger.power_at(0)  # no stake moves here: every epoch's table carries this one over
    orders = {(k, e): net.seal(Transfer(alice.public_key, 0, e, (bob, carol)[k].public_key, 1 + k), alice)
              for k in range(2) for e in range(9)}
    pooled: dict[tuple[bytes, int], dict[bytes, bytes]] = {}
    for k, t, back, renew, who in sorted(asks, key=lambda a: a[1]):
        e = max(0, t - back)
        signed = orders[(k, e)]
        vote_epoch = max(e + 1, t + 1 - renew) if renew else None
        for i, auth in enumerate(net.authorities):
            if not who >> i & 1:
                continue
            if i == liar:
                sig = auth.signer.sign(vote_digest(signed.id, vote_epoch or e))
            else:
                try:
                    sig = auth.handle_order(signed.encode(), max(0, t + skews[i]) * EPOCH_MS + T0,
                                            vote_epoch=vote_epoch)
                except ProtocolError:
                    continue
            pooled.setdefault((signed.id, vote_epoch or e), {})[auth.me] = sig
    certs = []
    for (oid, vote_epoch), votes in pooled.items():
        if sum(power[pk] for pk in votes) >= 6_667:
            signed = next(o for o in orders.values() if o.id == oid)
            cert = certify(signed, votes, vote_epoch)
            cert.check(power, net.verify)
            certs.append(cert)
    assert len({c.id for c in certs}) <= 1, "two different orders certified at one (account, sequence)"
    rng = random.Random(seed)
    states = set()
    for _ in range(3):
        led = Ledger(net.genesis, net.verify)
        for e in range(0, 12):
            led.skip_checkpoint(e)
        rng.shuffle(certs)
        for c in certs:
            led.accept_certificate(c)
            led.assert_supply()
        states.add(led.state_digest())
    assert len(states) == 1
