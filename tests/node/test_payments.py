"""Our own orders over the network: one that got votes but no quorum (half the authorities down) holds our
sequence number at the authorities that voted; once they are back, the node finishes it before its next order,
instead of being refused there for good. An authority that lacks a credit is asked again with it. Orders that reach
an authority together are voted on together."""

import pytest
import trio
from nodekit import cluster, make_genesis, seed, wait_for

from moenode.core.crypto import Ed25519Signer, ed25519_verify
from moenode.core.ledger_client import Certified, OrderSubmitter
from moenode.core.messages import seal
from moenode.core.orders import BatchVote, OrderAnswer, OrderRequest, Transfer, signed_digest, vote_digest, vote_entry
from moenode.net import RemoteError
from moenode.node.payments import PaymentError

pytestmark = pytest.mark.slow


async def test_an_order_without_quorum_is_finished_before_the_next(tmp_path):
    seeds = [seed(i, "unfinished") for i in range(4)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds])
    async with cluster(tmp_path, genesis) as c:
        ms = await c.start_all([c.add(s) for s in seeds])
        payer, friend = ms[0].node, ms[1].account
        for m in ms[2:]:
            await c.stop(m)  # two of four authorities: 5,000 of the 6,667 voting power needed
        with pytest.raises(PaymentError, match="voting power"):
            await payer.payments.transfer(friend, 11)
        first = payer.payments.unfinished
        assert first is not None and payer.payments.authority.locked(ms[0].account, 0) == first.id

        for m in ms[2:]:
            await c.start(m)
        await c.connected()
        await payer.payments.transfer(friend, 22)  # sequence 0 is the 11 (finished first), this one is 1
        assert payer.payments.unfinished is None and payer.metrics.get("orders_finished_late") == 1
        led = payer.payments.ledger
        assert led.sequence(ms[0].account) == 2 and led.applied[(ms[0].account, 0)] == first.id
        await wait_for(lambda: len({x.payments.ledger.state_digest() for x in c.nodes}) == 1, 20)
        assert c.nodes[2].payments.ledger.balance(friend) == 100_000 + 33
        led.assert_supply()


async def test_an_authority_that_lacks_our_credit_is_asked_again_with_it(tmp_path):
    """A credit certificate that only the payer and its sender hold: the other two authorities refuse the payer's
    spend, naming the payer's account in their answer, and the retry carries the certificate that fixes it."""
    seeds = [seed(i, "credit") for i in range(4)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds])
    async with cluster(tmp_path, genesis) as c:
        ms = await c.start_all([c.add(s) for s in seeds])
        payer, sender = ms[0].node, ms[1].node
        sp = sender.payments
        gift = seal(Transfer(sender.account, sp.ledger.sequence(sender.account), sp._epoch(), payer.account, 50_000),
                    sender.signer, sender.net_id)
        outcome = await sp._drive(OrderSubmitter(gift, sp.ledger.power_at(gift.msg.epoch), sp.authority.verify))
        assert isinstance(outcome, Certified)
        for n in (payer, sender):  # applied here only: no gossip, so the other two never saw it
            assert n.payments.accept(outcome.cert.encode()) == "applied"
        others = [m.node for m in ms[2:]]
        lacking = [n for n in others if n.payments.ledger.balance(payer.account) == 100_000]
        assert lacking  # (a periodic pull could have brought it already; then that node simply votes)

        cert = await payer.payments.transfer(sender.account, 120_000)  # more than the payer had before the gift
        assert cert.msg.amount == 120_000 and len(cert.votes) >= 3
        for n in lacking:
            assert n.net.counters.rejected("insufficient_funds") == 1  # refused once, then voted with the credit
        await wait_for(lambda: len({x.payments.ledger.state_digest() for x in c.nodes}) == 1, 20)
        payer.payments.ledger.assert_supply()


async def test_orders_that_arrive_together_share_one_lock_write_and_one_signature(tmp_path):
    seeds = [seed(i, "desk") for i in range(4)]
    users = [Ed25519Signer(seed(i, "desk-user")) for i in range(20)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds] + [(u.seed, 0, "minilm-l3") for u in users])
    async with cluster(tmp_path, genesis) as c:
        ms = await c.start_all([c.add(s) for s in seeds])
        client, auth = ms[0].node, ms[1].node
        epoch = client.payments._epoch()

        async def ask_all(us: list[Ed25519Signer]) -> tuple[list, list]:
            envs = [seal(Transfer(u.public_key, 0, epoch, ms[2].account, 7), u, client.net_id) for u in us]
            answers: dict[bytes, object] = {}

            async def ask(env) -> None:
                try:
                    resp = await client.net.request(auth.account, "order", OrderRequest(env.encode(), ()).encode())
                    answers[env.id] = OrderAnswer.decode(resp).vote
                except RemoteError as e:
                    answers[env.id] = e

            async with trio.open_nursery() as n:
                for env in envs:
                    n.start_soon(ask, env)
            return envs, [answers[e.id] for e in envs]

        envs, votes = await ask_all(users[:16])
        batched = [v for v in votes if isinstance(v, BatchVote)]
        assert auth.metrics.get("order_batches") >= 1 and len({v.sig for v in batched}) < len(batched)
        for env, v in zip(envs, votes):  # each vote is for its own order
            entry = vote_entry(auth.account, v)
            assert ed25519_verify(auth.account, signed_digest(vote_digest(env.id, epoch), entry), entry[1])
            assert auth.payments.authority.locked(env.msg.account, 0) == env.id
        # a batch vote certifies beside the other authorities' votes, and every node applies it
        sub = OrderSubmitter(envs[0], client.payments.ledger.power_at(epoch), client.payments.authority.verify)
        outcome = await client.payments._drive(sub)
        assert isinstance(outcome, Certified)
        for m in ms:
            assert m.node.payments.accept(outcome.cert.encode()) in ("applied", "duplicate")

        # a lock write that fails answers every waiting order with an error, and signs nothing
        store = auth.payments.authority.store

        def broken(rows):
            raise OSError("disk full")

        store.put_locks, put = broken, store.put_locks
        _, failed = await ask_all(users[16:])
        assert all(isinstance(f, RemoteError) and "internal" in str(f) for f in failed)
        assert all(auth.payments.authority.locked(u.public_key, 0) is None for u in users[16:])
        store.put_locks = put
        envs, votes = await ask_all(users[16:])
        assert all(v is not None and not isinstance(v, Exception) for v in votes)
