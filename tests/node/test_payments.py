"""Our own orders over the network. Nothing is asked while too little voting power is reachable (so nothing can
lock our sequence); an order that got votes but no quorum all the same (authorities died mid-collection) is kept,
durably, and finished once they are back, renewed in a later epoch if its own has passed. A crash at any step
between signing an order and closing it in the outbox leaves every ledger converging on it. An authority that
lacks a credit is asked again with it. Orders that reach an authority together are voted on together."""

import sys
import time

import pytest
import trio

from moenode.core.crypto import Ed25519Signer, ed25519_verify
from moenode.core.ledger_client import Certified, OrderSubmitter
from moenode.core.messages import seal
from moenode.core.orders import BatchVote, OrderAnswer, OrderRequest, Transfer, signed_digest, vote_digest, vote_entry
from moenode.net import RemoteError
from moenode.node.payments import PaymentError, Unreachable
from moenode.testing.nodekit import cluster, make_genesis, seed, wait_for

pytestmark = pytest.mark.slow


def one_ledger(c) -> bool:
    return len({x.payments.ledger.state_digest() for x in c.nodes}) == 1


async def linked(c) -> None:
    """Until every running node is connected to every other (a restarted node hears adverts only later)."""
    await wait_for(lambda: all(len(x.net.connected()) >= len(c.nodes) - 1 for x in c.nodes), 30)


async def test_two_of_four_down_nothing_is_signed_and_a_locked_order_is_renewed_once_they_are_back(tmp_path):
    """4 authorities of 2,500 voting power each. With 2 down, a transfer is refused before anything is signed, in
    one line (the CLI too). A transfer whose two authorities die while it is out gets 5,000 of the 6,667 it needs:
    it is kept, nothing else is signed for its sequence, and once its epoch has passed and they are back it is
    renewed in the current epoch and certifies; the account then works as before."""
    seeds = [seed(i, "renewal") for i in range(4)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds], epoch_ms=6_000)
    async with cluster(tmp_path, genesis) as c:
        ms = await c.start_all([c.add(s) for s in seeds])
        payer, friend = ms[0].node, ms[1].account
        pay = payer.payments
        for m in ms[2:]:
            await c.stop(m)
        with pytest.raises(Unreachable, match=r"^only 5,000 of 6,667 voting power reachable; nothing was signed$"):
            await pay.transfer(friend, 11)
        assert pay.authority.locked(ms[0].account, 0) is None and not pay.outgoing
        cli = await trio.run_process([sys.executable, "-m", "moenode", "transfer", "--home", str(ms[0].home),
                                      friend.hex(), "11"], capture_stdout=True, capture_stderr=True, check=False)
        err = cli.stderr.decode().strip()
        assert cli.returncode == 1 and err.count("\n") == 0 and "Traceback" not in err, err
        assert err.endswith("only 5,000 of 6,667 voting power reachable; nothing was signed"), err

        for m in ms[2:]:
            await c.start(m)
        await linked(c)
        for m in ms[2:]:  # they take the request and die before they answer
            async def hang(*args, **kwargs):
                await trio.sleep_forever()
            m.node.payments.vote = hang
        failed: list[PaymentError] = []

        async def pay_11() -> None:
            try:
                await pay.transfer(friend, 11)
            except PaymentError as e:
                failed.append(e)

        async with trio.open_nursery() as n:
            n.start_soon(pay_11)
            await wait_for(lambda: ms[1].node.payments.authority.locked(ms[0].account, 0) is not None, 20)
            for m in ms[2:]:
                await c.stop(m)
        assert failed and "kept and sent again" in str(failed[0])
        (out,) = pay.outgoing.values()
        order = out.env
        assert order.msg.sequence == 0 and pay.authority.locked(ms[0].account, 0) == order.id
        with pytest.raises(Unreachable, match="nothing was signed"):  # no second order at sequence 0, ever
            await pay.transfer(friend, 22)

        await wait_for(lambda: genesis.epoch(payer.now_ms()) >= order.msg.epoch + 2, 20)  # its epoch has passed
        for m in ms[2:]:
            await c.start(m)
        await linked(c)
        await wait_for(lambda: all(x.payments.ledger.applied.get((ms[0].account, 0)) == order.id for x in c.nodes),
                       40)
        assert payer.metrics.get("orders_renewed") == 1 and payer.metrics.get("orders_finished_late") == 1
        assert not pay.outgoing

        cert = await pay.transfer(friend, 22)  # the account is usable: sequence 1
        assert cert.msg.sequence == 1
        await wait_for(lambda: one_ledger(c), 20)
        assert c.nodes[2].payments.ledger.balance(friend) == 100_000 + 33
        pay.ledger.assert_supply()


class Crash(Exception):
    """The payer's process dies here."""


def crash_at(payments, point: str) -> None:
    """Make the payer die at `point`: before that step of the outbox's driver, or, for "record", once the votes
    are in and before anything is written. After that it does nothing more (it is dead) until it is stopped."""
    step, drive = payments._step, payments._drive
    dead: list[bool] = []

    async def die() -> None:
        dead.append(True)
        raise Crash(point)

    async def crashing_step(name, out):
        if dead:
            await trio.sleep_forever()
        if name == point:
            await die()
        await step(name, out)

    async def crashing_drive(sub):
        if dead:
            await trio.sleep_forever()
        outcome = await drive(sub)
        if point == "record":
            await die()
        return outcome

    payments._step, payments._drive = crashing_step, crashing_drive


async def test_a_payer_that_dies_at_any_step_of_its_order_converges_with_the_network_after_restart(tmp_path):
    """The window of a payer's own order, step by step: written but not sent; votes in but nothing written;
    certificate written but not gossiped; gossiped but not applied; applied but not closed. Each time the payer
    dies there and restarts, every ledger converges on that order, and its next order certifies."""
    seeds = [seed(i, "crash") for i in range(4)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds])
    async with cluster(tmp_path, genesis) as c:
        ms = await c.start_all([c.add(s) for s in seeds])
        payer_m, friend = ms[0], ms[1].account
        for i, point in enumerate(["record", "collect", "publish", "apply", "close"]):
            payer = payer_m.node
            crash_at(payer.payments, point)
            with pytest.raises(Crash):
                await payer.payments.transfer(friend, 100 + i)
            await c.stop(payer_m)  # as a kill -9 would: what is on disk is what the next run finds
            payer = await c.start(payer_m)
            await linked(c)
            await wait_for(lambda: all(x.payments.ledger.sequence(payer_m.account) == i + 1 for x in c.nodes)
                           and one_ledger(c) and not payer.payments.outgoing, 40)
        cert = await payer.payments.transfer(friend, 1)
        assert cert.msg.sequence == 5
        await wait_for(lambda: one_ledger(c), 20)
        assert c.nodes[3].payments.ledger.balance(friend) == 100_000 + sum(100 + i for i in range(5)) + 1
        payer.payments.ledger.assert_supply()


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

        # the first lock write holds until another request is queued behind it, as it would on a busy node: on a
        # loaded machine the requests might otherwise be served one by one, and no batch would form
        desk = auth.payments.desk
        put, first = desk.write_locks, [True]

        def held_first_write(rows):
            deadline = time.monotonic() + 20
            while first[0] and not desk._queue and time.monotonic() < deadline:
                time.sleep(0.01)
            first[0] = False
            put(rows)

        desk.write_locks = held_first_write
        envs, votes = await ask_all(users[:16])
        desk.write_locks = put
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

        def broken(rows):
            raise OSError("disk full")

        desk.write_locks, put = broken, desk.write_locks
        _, failed = await ask_all(users[16:])
        assert all(isinstance(f, RemoteError) and "internal" in str(f) for f in failed)
        assert all(auth.payments.authority.locked(u.public_key, 0) is None for u in users[16:])
        desk.write_locks = put
        envs, votes = await ask_all(users[16:])
        assert all(v is not None and not isinstance(v, Exception) for v in votes)


async def test_a_large_order_request_is_decoded_off_the_event_loop(tmp_path, monkeypatch):
    """The order RPC takes requests of up to 4 MiB (a Settle carries a shard certificate, and so may each
    attachment), and it decoded them on the event loop, the last peer input above 64 KiB that did. A small request
    still decodes inline, where a thread hop would cost more than the decoding."""
    import threading

    from moenode.testing.nodekit import Cluster

    from moenode.node.config import Config
    from moenode.node import Node

    genesis = make_genesis([(seed(0), 1_000, "minilm-l3"), (seed(1), 0, "minilm-l3")])
    m = Cluster(tmp_path, genesis, None).add(seed(0))
    node = Node(m.home, config=Config(home=m.home, model=m.model), genesis=genesis)
    decoded_on: list[int] = []
    decode = OrderRequest.decode
    monkeypatch.setattr(OrderRequest, "decode", classmethod(
        lambda cls, data: decoded_on.append(threading.get_ident()) or decode(data)))
    payer = Ed25519Signer(seed(1))
    order = seal(Transfer(payer.public_key, 0, 0, m.account, 1), payer, genesis.network_id).encode()
    try:
        small = OrderAnswer.decode(await node.payments.serve_order(payer.public_key, OrderRequest(order, ()).encode()))
        large = OrderRequest(order, (bytes(256 << 10),)).encode()  # an attachment that is no certificate
        refused = OrderAnswer.decode(await node.payments.serve_order(payer.public_key, large))
    finally:
        node.archive.close()
        node.payments.close()
    assert small.vote is not None and refused.refusal == "malformed"
    assert decoded_on[0] == threading.get_ident() != decoded_on[1]
