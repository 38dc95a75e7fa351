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
certificates that touch the account it named.

Every order we sign lives in the outbox (`moenode.store.outbox`, in the ledger's sqlite file) until its
certificate is out, and goes through the steps of `delivery_steps`: written (fsynced) before any authority is
asked; votes collected; the certificate written before anything else sees it; gossiped; applied here; closed. So a
kill -9 at any point leaves this node at worst behind the network (it applies on restart), never ahead of it, and
never loses an order it signed. Nothing is asked while the authorities we are connected to (and we) hold less than
the quorum: an order with votes below the quorum would hold our sequence at the authorities that voted. One that
got such votes all the same (authorities failed mid-collection) stays open: it is sent again, the same bytes,
before our next order and every few seconds in the background (`resend`), renewed in the current epoch once its
own has passed (SPEC 6.8), until it certifies; no other order is signed for its sequence meanwhile. On start,
`resend` finishes whatever the last run left open and publishes certificates it had not got out.

Who sends which order: the submitter pays (PayEscrow) before its Input and refunds (Refund) after a failed
round's deadline; the round's winner settles (Settle, carrying the shard certificate); anyone may transfer or
stake from the control API.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from moenode.core.authority import Authority
from moenode.core.crypto import ed25519_verify
from moenode.core.errors import ConflictingCertificates, ProtocolError
from moenode.core.genesis import Genesis
from moenode.core.ledger import Ledger
from moenode.core.ledger_client import (
    Certified,
    CertPool,
    Effect,
    Failed,
    OrderSubmitter,
    SendOrder,
    delivery_steps,
    unreachable,
    vote_epoch_for,
)
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
    open_order,
)
from moenode.node.context import Context, NetLink
from moenode.node.decoding import decode_off_loop
from moenode.node.logs import event
from moenode.node.writer import StoreWriter
from moenode.store.ledger_db import open_authority
from moenode.store.outbox import Outbox

log = logging.getLogger("moenode.node")

VOTE_TIMEOUT = 10.0
RESEND_S = 2.0  # how often the outbox looks at the orders it holds open (cheap while too little power is reachable)
RESEND_MAX_S = 60.0  # the longest pause between two attempts at an order the authorities refused


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

    def __init__(self, authority: Authority, now_ms: Callable[[], int], count: Callable[[str, int], None],
                 write_locks: Callable[[list[tuple[bytes, bytes, bytes, bytes]]], None]):
        self.authority, self.now_ms, self.count, self.write_locks = authority, now_ms, count, write_locks
        self.running = False
        self._alone = trio.Lock()  # without the desk task, one ballot at a time all the same
        self._queue: list[tuple[bytes, int | None, list]] = []  # (order, vote epoch, [done event, answer once set])
        self._wake = trio.Event()

    async def vote(self, order: bytes, vote_epoch: int | None = None) -> bytes | BatchVote | ProtocolError:
        """This authority's vote for `order` (signed bytes; in `vote_epoch` for a renewal), or the ProtocolError
        that says why not."""
        if self.running:
            slot: list = [trio.Event()]
            self._queue.append((order, vote_epoch, slot))
            self._wake.set()
            await slot[0].wait()
            answer = slot[1]
        else:  # no desk task (a node that is not serving yet): answer alone
            async with self._alone:
                answer = (await self._answer([order], [vote_epoch]))[0]
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
                    answers = await self._answer([order for order, _, _ in batch], [e for _, e, _ in batch])
                    for (_, _, slot), answer in zip(batch, answers):
                        slot.append(answer)
                        slot[0].set()
        finally:
            self.running = False

    async def _answer(self, orders: list[bytes], vote_epochs: list[int | None]) -> list[bytes | BatchVote | Exception]:
        auth = self.authority
        try:
            ballot = auth.prepare(orders, self.now_ms(), batch_vote=len(orders) > 1, vote_epochs=vote_epochs)
        except Exception as e:  # the store failed while fixing a due stake table: answer, and keep serving
            log.exception("preparing %d order votes failed", len(orders))
            return [e] * len(orders)
        if ballot.leaves and ballot.batch_vote:
            self.count("order_batches", 1)
            self.count("orders_batched", len(ballot.leaves))
        try:
            if ballot.rows:
                with trio.CancelScope(shield=True):  # once started, the write's outcome must be known
                    await trio.to_thread.run_sync(self.write_locks, ballot.rows)
        except Exception as e:  # writing the locks failed: no vote exists, and every waiter hears of it
            auth.release(ballot)
            log.error("order votes failed (%d orders): %r", len(orders), e)
            return [e] * len(orders)
        return auth.sign(ballot)  # type: ignore[return-value]


class PaymentError(RuntimeError):
    """An order could not be certified (too few authorities answered, or they refused it)."""


class Unreachable(PaymentError):
    """The authorities this node can reach hold less than the quorum: no votes were asked for."""


@dataclass(eq=False)
class Outgoing:
    """An order we signed, open in the outbox: its certificate once we have it, and whether it reached a peer."""

    env: Signed
    attach: tuple[bytes, ...]
    cert: CertifiedOrder | None = None
    published: bool = False
    late: bool = False  # the call that made it gave up (or died with the process): whoever finishes it tidies up
    lock: trio.Lock = field(default_factory=trio.Lock)

    @property
    def order(self) -> Order:
        return self.env.msg


class Payments:
    """The ledger, the authority over it (its writes through a `StoreWriter`), the order desk and our outbox.

    Collaborators: the context, the ledger store's path (HOME/ledger.sqlite: the authority's store and the
    outbox), and the net link (votes are asked for over the `order` RPC, certificates gossiped on `orders`)."""

    def __init__(self, ctx: Context, ledger_path: Path, link: NetLink):
        self.ctx, self.link = ctx, link
        # StoreError (corrupt, foreign network, log that does not replay) propagates: the node refuses to start
        self.authority: Authority = open_authority(ledger_path, ctx.genesis, ctx.signer, ed25519_verify)
        self.store = StoreWriter(self.authority.store)  # type: ignore[arg-type]  # open_authority's LedgerDB
        self.authority.store = self.store
        self.ledger: Ledger = self.authority.ledger
        self.desk = OrderDesk(self.authority, ctx.now_ms, ctx.metrics.inc, self.store.write_locks)
        self._own = trio.Lock()  # one order of ours in flight at a time: each consumes our next sequence number
        self.own_recent: deque[CertifiedOrder] = deque(maxlen=3)  # our last certified orders, to attach
        self.credits_recent: deque[CertifiedOrder] = deque(maxlen=MAX_ATTACH)  # certified orders that credited us
        try:
            self.outbox = Outbox(ledger_path)
            self.outgoing: dict[bytes, Outgoing] = {}  # the outbox's open entries, by order id
            self._load_outbox()
        except BaseException:
            self.store.close()
            raise
        self._retry_at: dict[bytes, tuple[float, float]] = {}  # order id -> (next try, backoff), for `resend`

    def _load_outbox(self) -> None:
        """Our last certificates (to attach) and the orders a previous run left open (to finish: `resend`)."""
        net, verify = self.ctx.net_id, self.authority.verify
        for data in self.outbox.recent(self.me, self.own_recent.maxlen or 3):
            with contextlib.suppress(ProtocolError):
                self.own_recent.append(CertifiedOrder.decode(data, net, verify))
        for e in self.outbox.open_entries():
            try:
                env = open_order(e.order, net, verify)
                cert = None if e.cert is None else CertifiedOrder.decode(e.cert, net, verify)
            except ProtocolError as err:  # only our own writes are in the outbox: say so loudly, keep starting
                log.error("outbox: an entry does not decode (%s); it is skipped", err)
                continue
            self.outgoing[env.id] = Outgoing(env, e.attach, cert, late=True)
        if self.outgoing:
            log.info("outbox: %d order(s) of ours to finish from the last run", len(self.outgoing))

    def close(self) -> None:
        """Close the outbox, write what the authority still has queued, close the ledger store."""
        try:
            self.outbox.close_db()
        finally:
            self.store.close()

    @property
    def me(self) -> bytes:
        return self.ctx.account

    async def run(self) -> None:
        """The authority's desk, its store's writes, and the outbox: what a previous run or a failed call left
        open is finished."""
        async with trio.open_nursery() as n:
            n.start_soon(self.store.run)
            n.start_soon(self.desk.run)
            while True:
                await trio.sleep(RESEND_S)
                await self.resend()

    # the authority's RPC -------------------------------------------------------------------------------------------
    async def serve_order(self, peer: bytes, req: bytes) -> bytes:
        q = await decode_off_loop(OrderRequest.decode, req)  # malformed raises: the net layer counts and refuses it
        self.ctx.metrics.inc("orders_served")
        answer = await self.vote(q.order, q.attach, q.vote_epoch)
        if isinstance(answer, ProtocolError):  # a refusal is an answer: the client may retry with what we lack
            self.ctx.reject(peer, answer, "order")
        return OrderAnswer.of(answer).encode()

    async def vote(self, order: bytes, attach: tuple[bytes, ...], vote_epoch: int | None = None
                   ) -> bytes | BatchVote | ProtocolError:
        """Our vote as an authority for a request (in `vote_epoch` for a renewal), through the desk, or why not."""
        try:
            self.authority.take_attachments(attach, self.ctx.now_ms())
        except ProtocolError as e:
            return e
        return await self.desk.vote(order, vote_epoch)

    # applying ------------------------------------------------------------------------------------------------------
    def accept(self, data: bytes) -> str:
        """Check and apply a certified order (bytes). Raises ProtocolError; a conflict is logged loudly."""
        cert = CertifiedOrder.decode(data, self.authority.ledger.net, self.authority.verify)
        try:
            status = self.authority.accept_decoded(cert, data)
        except ConflictingCertificates as e:
            log.error("CONFLICTING CERTIFIED ORDERS (a third of the voting power equivocated): %s", e)
            self.ctx.metrics.inc("conflicting_certificates")
            return "conflict"
        if status == "applied":
            self._remember(cert)
        return status

    def _remember(self, cert: CertifiedOrder) -> None:
        """Keep our own orders and the ones that credited us: authorities that lack them get them attached."""
        o, me = cert.msg, self.me
        if o.account == me:
            self.own_recent.append(cert)
        elif (isinstance(o, Transfer) and o.recipient == me) or (isinstance(o, Refund) and cert.order.signer == me) \
                or (isinstance(o, Settle) and (o.certificate.report.producer == me
                                               or me in {pk for pk, _ in o.certificate.signatures})):
            self.credits_recent.append(cert)

    async def on_gossip(self, origin: bytes, data: bytes) -> None:
        status = self.accept(data)
        self.ctx.metrics.inc(f"orders_{status}")

    async def publish(self, cert: CertifiedOrder) -> bool:
        """Gossip a certificate of ours; True if peers subscribed to `orders` were there to take it."""
        gossip = self.link.host.gossip if self.link.host is not None else None
        if gossip is None or not gossip.topic_peers("orders"):
            return False
        try:
            with trio.CancelScope(shield=True):
                await gossip.publish("orders", cert.encode())
        except Exception as e:  # gossip is best effort: the outbox publishes it again, and sync carries it too
            log.warning("could not gossip %s: %r", cert.msg.TYPE, e)
            return False
        return True

    # the client ----------------------------------------------------------------------------------------------------
    async def certify(self, env: Signed, attach: list[bytes] | tuple[bytes, ...] = ()) -> CertifiedOrder | None:
        """Get an order we signed certified and out (SPEC 6.6): it is written to the outbox before any authority
        is asked, votes are collected until they carry the threshold, the certificate is written, gossiped, and
        only then applied here. Raises PaymentError; the order then stays in the outbox and is sent again
        (`resend`, or before our next order) until it certifies.

        `attach`: certified orders every authority needs to judge this one (a Settle's or Refund's payment); they
        go with the first request, as do our own last orders when the order is ours. If we hold an earlier open
        order for the same (account, sequence) (a Refund whose collection failed, say), that one is finished
        instead: signing a second one there could lock the sequence for good. None if there is nothing to do.
        """
        o: Order = env.msg
        for earlier in self._open(o.account, o.sequence):
            if earlier.env.id != env.id:
                return await self._finish(earlier)
        out = self.outgoing.get(env.id)
        if out is None:
            out = Outgoing(env, tuple(attach))
            await self._write(self.outbox.add, env.id, o.account, o.sequence, env.encode(), out.attach)
            self.outgoing[env.id] = out
        try:
            return await self._deliver(out)
        except PaymentError:
            out.late = True
            raise

    async def _finish(self, out: Outgoing) -> CertifiedOrder | None:
        """Deliver an order an earlier call or run left open; a PayEscrow's round is gone by then: refund it."""
        cert = await self._deliver(out)
        if cert is not None and out.late:
            out.late = False
            self.ctx.metrics.inc("orders_finished_late")
            log.info("finished our %s at sequence %d, which had lacked a quorum", cert.msg.TYPE, cert.msg.sequence)
            if isinstance(cert.msg, PayEscrow) and cert.msg.account == self.me:
                self.ctx.spawn(self._refund_when_due, cert)
        return cert

    async def _deliver(self, out: Outgoing) -> CertifiedOrder | None:
        """Run the steps left for `out` (`delivery_steps`), each durable before the next."""
        async with out.lock:
            if out.env.id not in self.outgoing:  # another task finished it while we waited
                return out.cert
            o = out.order
            for step in delivery_steps(out.cert is not None, out.env.id, self.ledger.applied.get((o.account,
                                                                                                  o.sequence))):
                await self._step(step, out)
            return out.cert

    async def _step(self, step: str, out: Outgoing) -> None:
        oid = out.env.id
        if step == "collect":
            out.cert = await self._collect(out.env, out.attach)
        elif step == "record":
            await self._write(self.outbox.record, oid, out.cert.encode())  # type: ignore[union-attr]
        elif step == "publish":
            out.published = await self.publish(out.cert)  # type: ignore[arg-type]
        elif step == "apply":
            self.accept(out.cert.encode())  # type: ignore[union-attr]
        elif step == "close" and (out.published or out.cert is None):  # else: published again later
            await self.store.flush()  # its certificate is in the ledger's log before the outbox lets it go
            await self._write(self.outbox.close, oid, self.me)
            self.outgoing.pop(oid, None)
        elif step == "drop":
            log.info("outbox: our %s at sequence %d is moot (the sequence holds another order)", out.order.TYPE,
                     out.order.sequence)
            await self._write(self.outbox.drop, oid)
            self.outgoing.pop(oid, None)

    @staticmethod
    async def _write(fn: Callable[..., None], *args: object) -> None:
        """An outbox write, on a worker thread; once started, its outcome must be known."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(fn, *args)

    def _open(self, account: bytes, sequence: int | None = None) -> list[Outgoing]:
        """Our open orders of `account` (at `sequence` only, if given), oldest sequence first."""
        return sorted((out for out in self.outgoing.values() if out.order.account == account
                       and sequence in (None, out.order.sequence)), key=lambda out: out.order.sequence)

    def _reachable(self) -> set[bytes]:
        return {self.me, *self.link.connected()}

    async def _collect(self, env: Signed, attach: tuple[bytes, ...]) -> CertifiedOrder:
        """Collect votes from the authorities until they carry the threshold (in a later epoch, a renewal, if the
        order's has passed). Nothing is asked while the reachable voting power is below the quorum."""
        order: Order = env.msg
        what = f"{order.TYPE} at sequence {order.sequence}"
        try:
            vote_epoch = vote_epoch_for(order.epoch, self._epoch(), self.ledger.known_through)
            power = self.ledger.power_at(order.epoch if vote_epoch is None else vote_epoch)
        except (KeyError, ValueError) as e:
            raise PaymentError(f"{what}: {e}") from None
        why = unreachable(power, self._reachable())
        if why:
            raise Unreachable(f"{what}: {why}; not sent, it is kept and sent again until it certifies")
        given = [CertifiedOrder.decode(d, self.ctx.net_id, self.authority.verify) for d in attach]
        first = given + (list(self.own_recent) if order.account == self.me else [])
        pool = CertPool()
        for c in first + list(self.credits_recent):
            pool.add(c)
        sub = OrderSubmitter(env, power, self.authority.verify, pool, tuple(first), vote_epoch=vote_epoch)
        outcome = await self._drive(sub)
        if isinstance(outcome, Failed):
            raise PaymentError(f"{what}: {outcome.reason}; it is kept and sent again until it certifies")
        if vote_epoch is not None:
            self.ctx.metrics.inc("orders_renewed")
            log.info("our %s of epoch %d certified in epoch %d (renewed)", what, order.epoch, vote_epoch)
        return outcome.cert

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
                return OrderAnswer.of(await self.vote(e.order, e.attachments, e.vote_epoch))
            req = OrderRequest(e.order, e.attachments, e.vote_epoch).encode()
            return OrderAnswer.decode(await self.link.host.request(e.authority, "order", req, timeout=VOTE_TIMEOUT))
        except (NetError, ProtocolError) as err:  # unreachable now, or an answer that is not one
            return repr(err)[:200]

    def _epoch(self) -> int:
        return self.ctx.epoch()

    async def _own_order(self, make: Callable[[int, int], Order]) -> CertifiedOrder:
        """Certify an order of our own account; `make(sequence, epoch)` builds it once our turn has come.

        Nothing is signed while the reachable voting power is below the quorum, nor while an earlier order of
        ours is still open (it is finished first: any other order at its sequence could lock it for good)."""
        async with self._own:
            epoch = self._epoch()
            try:
                power = self.ledger.power_at(epoch)
            except KeyError as e:
                raise PaymentError(str(e)) from None
            why = unreachable(power, self._reachable())
            if why:
                self.ctx.metrics.inc("orders_unreachable")
                raise Unreachable(f"{why}; nothing was signed")
            await self._finish_own()
            order = make(self.ledger.sequence(self.me), epoch)
            cert = await self.certify(seal(order, self.ctx.signer, self.ctx.net_id))
            assert cert is not None  # a fresh sequence of ours: never moot
            return cert

    async def _finish_own(self) -> None:
        """Finish our open orders, oldest first; raise PaymentError (nothing new is signed) if one cannot be."""
        for out in self._open(self.me):
            try:
                await self._finish(out)
            except PaymentError as e:
                raise PaymentError(f"our earlier {e}; no new order is signed before it certifies") from None

    async def resend(self) -> None:
        """Finish what the outbox holds open: collect the votes of orders that have none yet (renewed if their
        epoch has passed), publish and apply recorded certificates. An order that fails is tried again later,
        with a growing pause, for as long as it takes; nothing is asked while too little power is reachable."""
        now = self.ctx.clock.timer()
        for oid, out in list(self.outgoing.items()):
            at, pause = self._retry_at.get(oid, (0.0, RESEND_S))
            if now < at or out.lock.locked():
                continue
            own = out.order.account == self.me
            if own and self._own.locked():
                continue  # an order of ours is in flight; it finishes this one first anyway
            try:
                if own:
                    async with self._own:
                        await self._finish(out)
                else:
                    await self._finish(out)
            except Unreachable:
                self._retry_at[oid] = (now + RESEND_S, pause)
            except (PaymentError, ProtocolError) as e:
                log.warning("outbox: %s", e)
                self._retry_at[oid] = (now + pause, min(pause * 2, RESEND_MAX_S))
            except Exception:  # the store failed, say: keep the node up, and the order, and try again later
                log.exception("outbox: finishing our %s at sequence %d failed", out.order.TYPE, out.order.sequence)
                self._retry_at[oid] = (now + pause, min(pause * 2, RESEND_MAX_S))
            else:
                self._retry_at.pop(oid, None)

    async def _refund_when_due(self, pay: CertifiedOrder) -> None:
        wait = (pay.msg.deadline_ms - self.ctx.now_ms()) / 1000  # type: ignore[attr-defined]
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
        done = await self.certify(seal(order, self.ctx.signer, self.ctx.net_id), [pay_cert] if pay_cert else [])
        r = cert.report
        event(log, "paid", shard=r.shard_id, amount=r.fee, producer=r.producer, producer_share_bps=r.producer_share_bps)
        return done

    async def refund(self, pay: CertifiedOrder) -> CertifiedOrder | None:
        p: PayEscrow = pay.msg  # type: ignore[assignment]
        esc = escrow_account(p.shard_id)
        if self.ledger.sequence(esc) > 0:
            return None
        order = Refund(account=esc, sequence=0, epoch=self._epoch(), shard_id=p.shard_id, pay_id=pay.id,
                       amount=p.fee)
        done = await self.certify(seal(order, self.ctx.signer, self.ctx.net_id), [pay.encode()])
        event(log, "refund", shard=p.shard_id, amount=p.fee, to=p.account)
        return done

    async def transfer(self, to: bytes, amount: int) -> CertifiedOrder:
        done = await self._own_order(lambda seq, epoch: Transfer(
            account=self.me, sequence=seq, epoch=epoch, recipient=to, amount=amount))
        event(log, "transfer", amount=amount, to=to, order=done.id, balance=self.ledger.balance(self.me))
        return done

    async def stake(self, amount: int, spaces: tuple[str, ...] = ()) -> CertifiedOrder:
        """Bond `amount`; `spaces` (sorted ids of this network's spaces) declares what the model serves from the
        table the stake joins, () keeps the account's declaration."""
        done = await self._own_order(lambda seq, epoch: Stake(account=self.me, sequence=seq, epoch=epoch,
                                                              amount=amount, spaces=spaces))
        event(log, "stake", amount=amount, account=self.me, epoch=done.msg.epoch, order=done.id,
              bonding=self.ledger.bonding.get(self.me, 0), spaces=list(spaces))
        return done

    # views -----------------------------------------------------------------------------------------------------------
    def served_spaces(self, epoch: int | None = None) -> tuple[str, ...]:
        """The spaces this node's account serves in `epoch` (default: the newest fixed one), by the ledger: its
        genesis declaration, or the one its last checkpointed Stake made (protocol/spaces.md 3.2)."""
        led = self.ledger
        e = led.known_through if epoch is None else min(max(0, epoch), led.known_through)
        return led.space_book_at(e).serves(self.me)

    def strikes(self, account: bytes) -> int:
        return sum(it.value for it in self.ledger.items.values() if it.kind == "strike" and it.account == account)


def model_spaces(genesis: Genesis, model: str) -> tuple[str, ...]:
    """The spaces of this network that `model` belongs to (its zoo family; a model file: the default space), which
    a Stake declares; () if the genesis lists none of them."""
    from moenode.encoders import zoo

    space = zoo.space_of(model)
    return (space,) if space in genesis.space_book.ids() else ()


ORDERS_TOPIC_CAP = CertifiedOrder.MAX_BYTES + 4 * KiB
