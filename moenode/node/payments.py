"""The node's ledger side: its full copy of the ledger, its authority, and the client that gets orders certified.

Theory of operation: every node keeps the whole ledger (`moenode.core.ledger.Ledger`) behind an `Authority`
(`moenode.core.authority`) whose store is the ledger database (`moenode.store.ledger_db`, HOME/ledger.sqlite), so
every certificate it accepts is on disk and a restart replays and re-checks them. The ledger changes only through
certified orders, which arrive three ways: our own (we collected the votes), gossip (topic `orders`), and sync.

An order is certified by driving the sans-IO `OrderSubmitter` (`moenode.core.ledger_client`): its requests go to
every authority of the order's epoch over the `order` RPC in parallel (`OrderRequest` in, `OrderAnswer` out: a
vote, or a refusal naming the account whose history the authority lacks), and it stops once the votes carry
>= 6,667 of the 10,000 voting power; our own vote, if we are an authority, is taken locally. The first request
carries certificates the authority may lack: the PayEscrow of the shard for a Settle or a Refund, and our own last
few certified orders (an authority that missed their gossip would see a sequence gap). An authority that still
refuses for lack of state (sequence gap, insufficient funds, unknown escrow) is asked again with the recent
certificates that touch the account it named. The result is applied locally first and then gossiped once. Our own
orders go one at a time; one that got votes but no quorum (authorities failed mid-collection) holds our sequence
number at the authorities that voted, so it is sent again, the same bytes, before the next one
(`_finish_unfinished`).

Who sends which order: the submitter pays (PayEscrow) before its Input and refunds (Refund) after a failed
round's deadline; the round's winner settles (Settle, carrying the shard certificate); anyone may transfer or
stake from the control API.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from moenode.core.authority import Authority
from moenode.core.crypto import ed25519_verify
from moenode.core.errors import ProtocolError
from moenode.core.ledger import ConflictingCertificates, Ledger
from moenode.core.ledger_client import Certified, CertPool, Effect, Failed, OrderSubmitter, SendOrder
from moenode.core.messages import KiB, Certificate, Signed, seal
from moenode.core.orders import (
    MAX_ATTACH,
    MAX_BATCH,
    BatchVote,
    CertifiedOrder,
    Order,
    OrderAnswer,
    OrderRequest,
    PayEscrow,
    Refund,
    Settle,
    Stake,
    Transfer,
    escrow_account,
)
from moenode.store.ledger_db import open_authority

if TYPE_CHECKING:
    from moenode.node.daemon import Node

log = logging.getLogger("moenode.node")

VOTE_TIMEOUT = 10.0


async def ask_authorities(power: dict[bytes, int], me: bytes, ask: Callable[[bytes], Awaitable[bool]]) -> None:
    """Ask every authority with voting power at once (ourselves first); return as soon as one `ask` reports that
    the votes gathered so far carry the quorum, or once every authority has answered or failed."""
    enough = trio.Event()

    async def one(pk: bytes) -> None:
        if await ask(pk):
            enough.set()

    async def ask_all() -> None:
        async with trio.open_nursery() as inner:
            for pk in sorted(power, key=lambda p: (p != me, p)):
                if power[pk] > 0:
                    inner.start_soon(one, pk)
        enough.set()

    async with trio.open_nursery() as n:
        n.start_soon(ask_all)
        await enough.wait()
        n.cancel_scope.cancel()


class OrderDesk:
    """The authority's front desk: order requests that arrive together are voted on together.

    Requests wait in a queue; one task (`run`) takes everything queued at once, checks it and reserves the locks
    (`Authority.prepare`), writes the locks on a worker thread (one transaction, one fsync, while the event loop
    goes on), then signs: a plain vote for a lone order, one batch vote for several. Nothing waits on purpose: a
    batch forms from the requests that arrived while the previous one was being written, so an idle authority
    answers as soon as it can and a busy one writes and signs once per batch instead of once per order.
    """

    def __init__(self, authority: Authority, now_ms: Callable[[], int], count: Callable[[str, int], None]):
        self.authority, self.now_ms, self.count = authority, now_ms, count
        self.running = False
        self._alone = trio.Lock()  # without the desk task, one ballot at a time all the same
        self._queue: list[tuple[bytes, list]] = []  # (order, [done event, answer once set])
        self._wake = trio.Event()

    async def vote(self, order: bytes) -> bytes | BatchVote | ProtocolError:
        """This authority's vote for `order` (signed bytes), or the ProtocolError that says why not."""
        if self.running:
            slot: list = [trio.Event()]
            self._queue.append((order, slot))
            self._wake.set()
            await slot[0].wait()
            answer = slot[1]
        else:  # no desk task (a node that is not serving yet): answer alone
            async with self._alone:
                answer = (await self._answer([order]))[0]
        if isinstance(answer, Exception) and not isinstance(answer, ProtocolError):
            raise answer  # the store failed: the net layer reports an internal error, and nothing was signed
        return answer

    async def run(self) -> None:
        self.running = True
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                if self._queue:
                    self._wake.set()
                if batch:
                    for (_, slot), answer in zip(batch, await self._answer([order for order, _ in batch])):
                        slot.append(answer)
                        slot[0].set()
        finally:
            self.running = False

    async def _answer(self, orders: list[bytes]) -> list[bytes | BatchVote | Exception]:
        auth = self.authority
        try:
            ballot = auth.prepare(orders, self.now_ms(), batch_vote=len(orders) > 1)
        except Exception as e:  # the store failed while fixing a due stake table: answer, and keep serving
            log.exception("preparing %d order votes failed", len(orders))
            return [e] * len(orders)
        if ballot.leaves and ballot.batch_vote:
            self.count("order_batches", 1)
            self.count("orders_batched", len(ballot.leaves))
        try:
            if ballot.rows:
                with trio.CancelScope(shield=True):  # once started, the write's outcome must be known
                    await trio.to_thread.run_sync(auth.store.put_locks, ballot.rows)
        except Exception as e:  # writing the locks failed: no vote exists, and every waiter hears of it
            auth.release(ballot)
            log.error("order votes failed (%d orders): %r", len(orders), e)
            return [e] * len(orders)
        return auth.sign(ballot)  # type: ignore[return-value]


class PaymentError(RuntimeError):
    """An order could not be certified (too few authorities answered, or they refused it)."""


class Payments:
    def __init__(self, node: Node):
        self.node = node
        # StoreError (corrupt, foreign network, log that does not replay) propagates: the node refuses to start
        self.authority: Authority = open_authority(node.config.path("ledger"), node.genesis, node.signer,
                                                   ed25519_verify)
        self.ledger: Ledger = self.authority.ledger
        self.desk = OrderDesk(self.authority, node.now_ms, node.metrics.inc)
        self.published: set[bytes] = set()
        self._own = trio.Lock()  # one order of ours in flight at a time: each consumes our next sequence number
        self.unfinished: Signed | None = None  # our last order, while it lacks a quorum
        self.own_recent: deque[CertifiedOrder] = deque(maxlen=3)  # our last certified orders, to attach
        self.credits_recent: deque[CertifiedOrder] = deque(maxlen=MAX_ATTACH)  # certified orders that credited us

    def close(self) -> None:
        self.authority.store.close()  # type: ignore[attr-defined]

    @property
    def me(self) -> bytes:
        return self.node.signer.public_key

    # the authority's RPC -------------------------------------------------------------------------------------------
    async def serve_order(self, peer: bytes, req: bytes) -> bytes:
        q = OrderRequest.decode(req)  # a malformed request raises: the net layer counts and refuses it
        self.node.metrics.inc("orders_served")
        answer = await self.vote(q.order, q.attach)
        if isinstance(answer, ProtocolError):  # a refusal is an answer: the client may retry with what we lack
            self.node.reject(peer, answer, "order")
        return OrderAnswer.of(answer).encode()

    async def vote(self, order: bytes, attach: tuple[bytes, ...]) -> bytes | BatchVote | ProtocolError:
        """Our vote as an authority for a request, through the desk, or why not."""
        try:
            self.authority.take_attachments(attach, self.node.now_ms())
        except ProtocolError as e:
            return e
        return await self.desk.vote(order)

    # applying ------------------------------------------------------------------------------------------------------
    def accept(self, data: bytes) -> str:
        """Check and apply a certified order (bytes). Raises ProtocolError; a conflict is logged loudly."""
        try:
            status = self.authority.accept_certificate(data)
        except ConflictingCertificates as e:
            log.error("CONFLICTING CERTIFIED ORDERS (a third of the voting power equivocated): %s", e)
            self.node.metrics.inc("conflicting_certificates")
            return "conflict"
        if status == "applied":
            self._remember(data)
        return status

    def _remember(self, data: bytes) -> None:
        """Keep our own orders and the ones that credited us: authorities that lack them get them attached."""
        cert = CertifiedOrder.decode(data, self.node.net_id, self.authority.verify)  # verified: cached
        o, me = cert.msg, self.me
        if o.account == me:
            self.own_recent.append(cert)
        elif (isinstance(o, Transfer) and o.recipient == me) or (isinstance(o, Refund) and cert.order.signer == me) \
                or (isinstance(o, Settle) and (o.certificate.report.producer == me
                                               or me in {pk for pk, _ in o.certificate.signatures})):
            self.credits_recent.append(cert)

    async def on_gossip(self, origin: bytes, data: bytes) -> None:
        status = self.accept(data)
        self.node.metrics.inc(f"orders_{status}")

    async def publish(self, cert: CertifiedOrder) -> None:
        if cert.id in self.published:
            return
        self.published.add(cert.id)
        await self.node.net.gossip.publish("orders", cert.encode())

    # the client ----------------------------------------------------------------------------------------------------
    async def certify(self, env: Signed, attach: list[bytes] | tuple[bytes, ...] = ()) -> CertifiedOrder:
        """Collect votes from the epoch's authorities until they carry the threshold; apply and gossip.

        `attach`: certified orders every authority needs to judge this one (a Settle's or Refund's payment); they
        go with the first request, as do our own last orders when the order is ours.
        """
        order: Order = env.msg  # type: ignore[assignment]
        try:
            power = self.ledger.power_at(order.epoch)
        except KeyError as e:
            raise PaymentError(str(e)) from None
        given = [CertifiedOrder.decode(d, self.node.net_id, self.authority.verify) for d in attach]
        first = given + (list(self.own_recent) if order.account == self.me else [])
        pool = CertPool()
        for c in first + list(self.credits_recent):
            pool.add(c)
        outcome = await self._drive(OrderSubmitter(env, power, self.authority.verify, pool, tuple(first)))
        if isinstance(outcome, Failed):
            raise PaymentError(f"{order.TYPE}: {outcome.reason}")
        cert = outcome.cert
        self.accept(cert.encode())
        with trio.CancelScope(shield=True):
            try:
                await self.publish(cert)
            except Exception as e:  # gossip is best effort: sync and attachments cover a missed message
                log.warning("could not gossip %s: %r", order.TYPE, e)
        return cert

    async def _drive(self, sub: OrderSubmitter) -> Certified | Failed:
        """Send the submitter's requests in parallel and feed it every answer, until it is certified or fails."""
        outcome: list[Certified | Failed] = []

        async with trio.open_nursery() as nursery:
            def take(effects: list[Effect]) -> None:
                for e in effects:
                    if isinstance(e, SendOrder):
                        nursery.start_soon(send, e)
                    elif not outcome:
                        outcome.append(e)
                        nursery.cancel_scope.cancel()  # the answers still out do not matter

            async def send(e: SendOrder) -> None:
                answer = await self._ask(e)
                if isinstance(answer, OrderAnswer) and answer.vote is not None:
                    take(sub.on_vote(e.authority, answer.vote))
                elif isinstance(answer, OrderAnswer):
                    take(sub.on_refusal(e.authority, answer.refusal or "", answer.account, answer.why))
                else:
                    take(sub.on_refusal(e.authority, "unreachable", None, answer))

            take(sub.start())
        if not outcome:
            raise PaymentError("the order submitter ended with neither a certificate nor a failure")
        return outcome[0]

    async def _ask(self, e: SendOrder) -> OrderAnswer | str:
        """One authority's answer, ours taken locally; a string says why there is none."""
        from moenode.net import NetError

        try:
            if e.authority == self.me:
                return OrderAnswer.of(await self.vote(e.order, e.attachments))
            req = OrderRequest(e.order, e.attachments).encode()
            return OrderAnswer.decode(await self.node.net.request(e.authority, "order", req, timeout=VOTE_TIMEOUT))
        except (NetError, ProtocolError) as err:  # unreachable now, or an answer that is not one
            return repr(err)[:200]

    def _epoch(self) -> int:
        return max(0, self.node.genesis.epoch(self.node.now_ms()))

    async def _own_order(self, make) -> CertifiedOrder:
        """Certify an order of our own account; `make(sequence, epoch)` builds it once our turn has come."""
        async with self._own:
            await self._finish_unfinished()
            order = make(self.ledger.sequence(self.me), self._epoch())
            env = seal(order, self.node.signer, self.node.net_id)
            self.unfinished = env  # until certified: the authorities that voted hold our sequence for it
            cert = await self.certify(env)
            self.unfinished = None
            return cert

    async def _finish_unfinished(self) -> None:
        """Resend our last order that got votes but no quorum (the same bytes: the authorities that voted hold our
        sequence number for it, and would refuse any other order there). If it cannot be finished either, the next
        order is tried anyway: it still certifies when the votes held by the old one are below a third."""
        env, self.unfinished = self.unfinished, None
        if env is None or self.ledger.sequence(self.me) > env.msg.sequence:  # type: ignore[attr-defined]
            return
        try:
            cert = await self.certify(env)
        except PaymentError as e:
            log.warning("our unfinished %s at sequence %d could not be finished: %s", env.msg.TYPE,
                        env.msg.sequence, e)  # type: ignore[attr-defined]
            return
        self.node.metrics.inc("orders_finished_late")
        log.info("finished our %s at sequence %d, which had lacked a quorum", cert.msg.TYPE, cert.msg.sequence)
        if isinstance(cert.msg, PayEscrow):  # its round is long gone: take the fee back once the deadline passes
            self.node.spawn(self._refund_when_due, cert)

    async def _refund_when_due(self, pay: CertifiedOrder) -> None:
        wait = (pay.msg.deadline_ms - self.node.now_ms()) / 1000  # type: ignore[attr-defined]
        await trio.sleep(max(0.0, wait) + 0.05)
        try:
            await self.refund(pay)
        except Exception as e:
            log.warning("refund of a late-certified payment failed: %s", e)

    async def pay_escrow(self, shard_id: bytes, fee: int, deadline_ms: int) -> CertifiedOrder:
        bal = self.ledger.balance(self.me)
        if bal < fee:
            raise PaymentError(f"balance {bal} is below the fee {fee}")
        return await self._own_order(lambda seq, epoch: PayEscrow(
            account=self.me, sequence=seq, epoch=epoch, shard_id=shard_id, fee=fee, deadline_ms=deadline_ms))

    async def settle(self, cert: Certificate, pay_cert: bytes) -> CertifiedOrder | None:
        esc = escrow_account(cert.report.shard_id)
        if self.ledger.sequence(esc) > 0:
            return None  # already settled (or refunded)
        order = Settle(account=esc, sequence=0, epoch=self._epoch(), certificate=cert)
        return await self.certify(seal(order, self.node.signer, self.node.net_id), [pay_cert] if pay_cert else [])

    async def refund(self, pay: CertifiedOrder) -> CertifiedOrder | None:
        p: PayEscrow = pay.msg  # type: ignore[assignment]
        esc = escrow_account(p.shard_id)
        if self.ledger.sequence(esc) > 0:
            return None
        order = Refund(account=esc, sequence=0, epoch=self._epoch(), shard_id=p.shard_id, pay_id=pay.id,
                       amount=p.fee)
        return await self.certify(seal(order, self.node.signer, self.node.net_id), [pay.encode()])

    async def transfer(self, to: bytes, amount: int) -> CertifiedOrder:
        return await self._own_order(lambda seq, epoch: Transfer(
            account=self.me, sequence=seq, epoch=epoch, recipient=to, amount=amount))

    async def stake(self, amount: int) -> CertifiedOrder:
        return await self._own_order(lambda seq, epoch: Stake(account=self.me, sequence=seq, epoch=epoch,
                                                              amount=amount))

    # views -----------------------------------------------------------------------------------------------------------
    def strikes(self, account: bytes) -> int:
        return sum(it.value for it in self.ledger.items.values() if it.kind == "strike" and it.account == account)


ORDERS_TOPIC_CAP = CertifiedOrder.MAX_BYTES + 4 * KiB
