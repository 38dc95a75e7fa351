"""The round driver: real-network glue around the sans-IO shard sessions of `moenode.core.shard`.

Theory of operation: our `ShardTable` holds one `ShardSession` per shard we take part in (our member round, our
submitter round, or both), the messages that outran their Input, and the replay rules. The driver does for it what
`moenode.testing.inproc` and the simulator do on a virtual clock, on the real one, and keeps no protocol rules:

* **Ingress.** Every envelope from a peer goes through `messages.open_signed` first (size cap, value budget,
  canonical decoding, network, schema, signature; on a worker thread when it is large, `node.decoding`). An
  `Input` opens the member session after we derive the shard from our ledger's stake table and check the payment
  certificate (the problem found, if any, is the session's input); any other round message goes to the table.
  The table's one question to the ledger is whether a message's signer holds stake (only stakers are kept early).
* **Effects.** `Send` goes to a per-peer outbox (one sender task per peer keeps each peer's messages in order
  without blocking the handler); a Send to ourselves is delivered through a local queue. `Work` and `Verify` run on
  worker threads and feed their result back (`on_work_done`, `on_verified`). `Outcome` is handed to the
  certificates' door (`on_certificate`, given by the daemon: verify, settle, index, gossip), and our submitter's
  to `run_submission`'s caller (`moenode.node.submitter`). `EvidenceFound` goes to `on_evidence`; `Refused` (a
  message that waited for its Input) is counted against its sender.
* **Timers.** One task per session sleeps until its `deadline`, or until an effect changed the state, then calls
  `handle_timer`.
* **Work.** Embed the batch with the router model, look up the winner index and our own history (the per-item
  losses of every payload we computed), and execute `core.routing.plan`: do it ourselves, or proxy to the experts
  it names in rank order, with a deadline, and fall back to ourselves if they fail or a payload does not verify
  (our own payload reuses the routing vectors that chose the route).
  The fallback is hedged: our own computation runs while the expert is being waited for, and
  once it is ready we wait for the expert only until the shard's vote is near, so a slow expert does not make us
  late (the price is our own compute, spent in rounds we proxy).
* **Expert.** The `proxy` RPC serves other members through `core.proxy.ProxyDesk` (one sponsor per shard, never a
  shard we are in, only paid shards) and answers a `ProxyAnswer`. As a sponsor we open the expert's answer with
  `core.proxy.open_answer`; a malformed answer, a submission that is not what we asked for, or a payload that does
  not verify is a rejection counted by reason against the expert, and we fall back to our own work.
* **Verification.** A member re-executes the round's candidate on a worker thread, except its own submission:
  that one it computed, or it re-executed the expert's answer before committing it.
* **CPU by stage.** Round steps (decoding, checking, sealing, signing) count as `codec_signatures`, the work as
  its own stages (`moenode.node.stages`, shown in /status).

Protocol errors are counted by reason and logged with the peer id by the node; they never end a round or the node.
"""

from __future__ import annotations

import logging
from functools import partial
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import trio

from moenode.core.crypto import ed25519_verify
from moenode.core.errors import ProtocolError, StateError
from moenode.core.messages import (
    Certificate,
    Evidence,
    Input,
    Payload,
    ProxyRequest,
    Signed,
    Submission,
    open_signed,
    open_wire,
)
from moenode.core.proxy import ProxyAnswer, ProxyDesk, Refusal, open_answer, proxy_request
from moenode.core.round import EvidenceFound, Outcome, Send, ShardContext, Verify, Work
from moenode.core.routing import plan
from moenode.core.shard import ROUND_TYPES, Refused, SessionEffect, ShardSession, ShardTable
from moenode.node.compute import Compute
from moenode.node.config import Config
from moenode.node.context import Context, NetLink
from moenode.node.decoding import decode_off_loop
from moenode.node.logs import event
from moenode.node.payments import Payments
from moenode.node.stages import STAGES
from moenode.node.winner_index import WinnerIndex, routing_vectors

log = logging.getLogger("moenode.node")

OUTBOX = 1024
SEND_RETRIES = (0.2, 1.0, None)  # seconds before each retry of a failed send; None: give up
PROXY_TRIES = 3  # experts asked in rank order before doing the work ourselves
PROXY_MIN_MS = 1_000  # do not start a proxy request with less time than this before the commit deadline
PROXY_RESPONSE_CAP = ProxyAnswer.MAX_BYTES
HEDGE_MARGIN_MS = 300  # with our own work ready, wait for an expert until this long before the shard's vote
HEDGE_POLL_S = 0.05
OWN_HISTORY_MAX = 20_000  # items of our own past work kept for the own estimate


@dataclass
class Slot:
    """A session and what the driver keeps beside it: the events its tasks wait on, and the route taken."""

    session: ShardSession
    changed: trio.Event = field(default_factory=trio.Event)
    sub_done: trio.Event = field(default_factory=trio.Event)
    route: str = ""
    checked: Submission | None = None  # the submission we committed, computed or verified by us

    @property
    def ctx(self) -> ShardContext:
        return self.session.ctx

    @property
    def input_env(self) -> Signed:
        return self.session.input_env

    @property
    def shard_id(self) -> bytes:
        return self.session.shard_id


class Rounds:
    """Collaborators: the context; the net link (envelopes, the `proxy` RPC); payments (the ledger a shard is derived
    from and a payment is checked against); the encoders (`compute`) and the winner index (routing); the node's
    config (its proxy price, whether it serves proxies); the experts' prices; and where outcomes go:
    `on_certificate(cert, origin, pay_cert)`, `on_evidence(evidence)`."""

    def __init__(self, ctx: Context, link: NetLink, *, payments: Payments, compute: Compute, index: WinnerIndex,
                 config: Config, prices: Callable[[], dict[bytes, int]],
                 on_certificate: Callable[[Certificate, bytes | None, bytes], Awaitable[object]],
                 on_evidence: Callable[[Evidence], None]):
        self.ctx, self.link, self.payments, self.compute, self.index = ctx, link, payments, compute, index
        self.config, self.prices, self.on_certificate, self.on_evidence = config, prices, on_certificate, on_evidence
        self.table = ShardTable(ctx.signer, ed25519_verify, staked=self._staked)
        self.slots: dict[bytes, Slot] = {}
        self._outboxes: dict[bytes, trio.MemorySendChannel] = {}
        self._local_send, self._local_recv = trio.open_memory_channel[Signed](OUTBOX)
        self.desk = ProxyDesk(ctx.signer, ctx.net_id, ed25519_verify, ctx.params, config.price_bps)
        self.own_loss: int | None = None  # running average of our own batch loss: the estimate outside known regions
        self._history: WinnerIndex | None = None
        self.latencies: list[int] = []  # ms from Input to our member outcome, last 100 rounds

    @property
    def history(self) -> WinnerIndex:
        """Our own per-item losses near each routing vector, from every payload we computed (won or lost): the
        routing rule's estimate of what we would score on a batch in that region (in memory; it refills as we work)."""
        if self._history is None:
            p = self.ctx.params
            self._history = WinnerIndex(self.compute.routing_dim, epochs=p.index_epochs,
                                        max_entries=OWN_HISTORY_MAX)
        return self._history

    @property
    def me(self) -> bytes:
        return self.ctx.account

    # ingress ---------------------------------------------------------------------------------------------------------
    async def on_envelope(self, peer: bytes, data: bytes) -> None:
        try:
            env = await decode_off_loop(open_signed, data, self.ctx.net_id, ed25519_verify, ROUND_TYPES)
        except ProtocolError as e:
            self.ctx.reject(peer, e, "envelope")
            return
        self.dispatch(peer, env)

    def dispatch(self, peer: bytes, env: Signed) -> None:
        dropped = self.table.dropped
        try:
            with STAGES.measure("codec_signatures"):  # the round steps: they check, seal and sign
                if isinstance(env.msg, Input):
                    self._on_input(env)
                else:
                    sid: bytes = env.msg.shard_id
                    out = self.table.receive(peer, env, self.ctx.now_ms())
                    slot = self.slots.get(sid)
                    if slot is not None:
                        self._effects(slot, out)
        except ProtocolError as e:
            self.ctx.reject(peer, e, env.msg.TYPE)
        if self.table.dropped != dropped:
            self.ctx.metrics.inc("early_dropped", self.table.dropped - dropped)

    async def run_local_queue(self) -> None:
        async for env in self._local_recv:
            self.dispatch(self.me, env)

    def _check_payment(self, inp: Input) -> None:
        """Raise a ProtocolError unless the Input's payment certificate holds; a good one's escrow enters our ledger,
        so that our Settle vote can check it later."""
        self.payments.ledger.payment_check()(inp)
        self.payments.accept(inp.pay_cert)

    def _payment_problem(self, inp: Input) -> str:
        """`_check_payment` as the member session's input: what is wrong with the payment, or ""."""
        try:
            self._check_payment(inp)
        except ProtocolError as e:
            return str(e)
        return ""

    def _staked(self, signer: bytes) -> bool:
        """Whether `signer` holds stake in the current or the previous epoch (only stakers can be members)."""
        led = self.payments.ledger
        epoch = self.ctx.epoch()
        try:
            return any(led.power_at(e).get(signer, 0) > 0 for e in {max(0, epoch - 1), epoch})
        except KeyError:
            return True  # our table is behind: give the benefit of the doubt, the buffer's bounds still hold

    def _derive(self, inp: Input) -> ShardContext:
        led = self.payments.ledger
        cur = self.ctx.genesis.epoch(self.ctx.now_ms())
        if inp.epoch not in (cur - 1, cur):
            raise StateError(f"Input: epoch {inp.epoch} is not current ({cur})")
        try:
            power, seed, book = led.power_at(inp.epoch), led.epoch_seed(inp.epoch), led.space_book_at(inp.epoch)
        except KeyError as e:
            raise StateError(f"Input: {e}") from None
        return ShardContext.derive(self.ctx.net_id, self.ctx.params, inp, power, seed, book)

    def _on_input(self, env: Signed) -> None:
        inp: Input = env.msg
        ctx = self.table.check_input(env) or self._derive(inp)
        problem = self._payment_problem(inp) if self.me in ctx.member_set else ""  # else open_member refuses it
        session, out = self.table.open_member(ctx, env, self.ctx.now_ms(), problem)
        self.ctx.metrics.inc("rounds_opened")
        self._effects(self._slot(session), out)

    def _slot(self, session: ShardSession) -> Slot:
        """The driver's side of a session, made (with its timer task) the first time the session is seen."""
        slot = self.slots.get(session.shard_id)
        if slot is None:
            slot = self.slots[session.shard_id] = Slot(session)
            self.ctx.spawn(self._timer, slot)
        return slot

    # effects -----------------------------------------------------------------------------------------------------------
    def _effects(self, slot: Slot, out: Sequence[SessionEffect]) -> None:
        for e in out:
            if isinstance(e, Send):
                self._send(e.to, e.env)
            elif isinstance(e, Work):
                self.ctx.spawn(self._work, slot, e)
            elif isinstance(e, Verify):
                self.ctx.spawn(self._verify, slot, e)
            elif isinstance(e, EvidenceFound):
                self.on_evidence(e.evidence)
            elif isinstance(e, Outcome):
                if e.role == "member":
                    self._member_outcome(slot, e)
                else:
                    slot.sub_done.set()
            elif isinstance(e, Refused):
                self.ctx.reject(e.peer, e.error, e.what)
        slot.changed.set()

    def _send(self, to: bytes, env: Signed) -> None:
        if to == self.me:
            try:
                self._local_send.send_nowait(env)
            except trio.WouldBlock:
                self.ctx.metrics.inc("outbox_dropped")
            return
        box = self._outboxes.get(to)
        if box is None:
            box, recv = trio.open_memory_channel[bytes](OUTBOX)
            self._outboxes[to] = box
            self.ctx.spawn(self._sender, to, recv)
        try:
            box.send_nowait(env.encode())
        except trio.WouldBlock:
            self.ctx.metrics.inc("outbox_dropped")

    async def _sender(self, peer: bytes, recv: trio.MemoryReceiveChannel) -> None:
        async for data in recv:
            for delay in SEND_RETRIES:
                try:
                    await self.link.host.send(peer, data)
                    self.ctx.metrics.inc("envelopes_sent")
                    break
                except Exception as e:  # NetError or a transport failure (a connection being replaced, say)
                    if delay is None:  # the round tolerates a lost message; we tried
                        self.ctx.metrics.inc("send_failed")
                        log.info("send to %s failed: %r", peer.hex()[:16], e, extra={"peer": peer.hex()})
                        break
                    self.ctx.metrics.inc("send_retried")
                    await trio.sleep(delay)

    def _member_outcome(self, slot: Slot, out: Outcome) -> None:
        self.ctx.metrics.inc(f"rounds_{out.status}")
        assert slot.session.member is not None
        took = self.ctx.now_ms() - slot.session.member.started
        self.latencies = (self.latencies + [took])[-100:]
        log.info("round %s: %s %s (%d ms, route %s)", slot.shard_id.hex()[:16], out.status, out.reason, took,
                 slot.route or "-")
        if out.certificate is not None:
            self.ctx.spawn(self.on_certificate, out.certificate, None, slot.input_env.msg.pay_cert)

    # timers ------------------------------------------------------------------------------------------------------------
    async def _timer(self, slot: Slot) -> None:
        session = slot.session
        while not session.finished and self.slots.get(slot.shard_id) is slot:
            slot.changed = trio.Event()
            due = session.deadline
            if due is None:
                await slot.changed.wait()
                continue
            delay = (due - self.ctx.now_ms()) / 1000
            if delay > 0:
                with trio.move_on_after(delay):
                    await slot.changed.wait()
                continue
            with STAGES.measure("codec_signatures"):
                self._effects(slot, session.handle_timer(self.ctx.now_ms()))
            if session.deadline == due:
                await trio.sleep(0.05)  # the round did not move its deadline: do not spin

    # work --------------------------------------------------------------------------------------------------------------
    async def _work(self, slot: Slot, w: Work) -> None:
        try:
            sub = await self._produce(slot, w)
        except Exception:
            self.ctx.metrics.inc("work_failed")
            log.exception("work for shard %s failed", slot.shard_id.hex()[:16])
            return
        if sub is not None:
            with STAGES.measure("codec_signatures"):
                self._effects(slot, slot.session.work_done(sub, self.ctx.now_ms()))

    async def _produce(self, slot: Slot, w: Work) -> Submission:
        items = list(w.items)
        p = self.ctx.params
        vecs = None
        if len(self.index):
            vecs = await trio.to_thread.run_sync(self.compute.routing_vectors, items)
            neigh = await trio.to_thread.run_sync(self.index.neighbours, vecs, p.routing_k, p.routing_min_cos_micro,
                                                  slot.ctx.input.space)
            mine = await trio.to_thread.run_sync(self.history.neighbours, vecs, p.routing_k, p.routing_min_cos_micro)
            pl = plan(neigh, mine, self.prices(), p, self.me, slot.ctx.members, self.own_loss, tries=PROXY_TRIES)
            log.info("route shard %s: %s (own %s from %s; experts %s)", slot.shard_id.hex()[:16], pl.reason,
                     pl.own_estimate_micro, pl.own_source,
                     [(c.producer.hex()[:12], c.loss_micro) for c in pl.experts] or "-",
                     extra={"event": "route", "shard": slot.shard_id.hex(), "proxy": pl.proxy})
            if pl.proxy:
                return await self._proxy_hedged(slot, w, [(c.producer, c.price_bps) for c in pl.experts], vecs)
        return await self._own(slot, w, vecs)

    async def _own(self, slot: Slot, w: Work, routing: np.ndarray | None) -> Submission:
        """Our own payload; `routing`: the router's vectors if we computed them to route (the payload reuses them)."""
        work = partial(self.compute.payload, list(w.items), w.shard_seed, routing)
        own = await trio.to_thread.run_sync(work, abandon_on_cancel=True)  # type: ignore[call-arg]  # mypy 1.19: Unpack[Ts]
        self._learn(own.batch_loss)
        await self._remember(w.shard_id, own)
        slot.route = slot.route or "self"
        sub = Submission(shard_id=w.shard_id, member=self.me, producer=self.me, payload=own, proxy=None)
        slot.checked = sub
        return sub

    async def _proxy_hedged(self, slot: Slot, w: Work, experts: list[tuple[bytes, int]],
                            routing: np.ndarray | None) -> Submission:
        """Ask the experts in rank order while computing our own submission as a hedge. A member whose commit comes
        after the shard's vote is struck, so once ours is ready we wait for the expert only until the vote is near
        (the round knows when it is due once a quorum has committed; until then the commit deadline bounds it).
        The expert's answer wins whenever it comes in time; a slow or silent expert never makes us late."""
        own: list[Submission] = []
        got: list[Submission] = []
        expert_done = trio.Event()

        def vote_due() -> int:
            m = slot.session.member
            return m.vote_due() if m is not None else slot.ctx.commit_deadline(self.ctx.now_ms())

        async def hedge(nursery: trio.Nursery) -> None:
            try:
                own.append(await self._own(slot, w, routing))
            except Exception:  # the expert may still answer
                log.exception("own work for shard %s failed while proxying", slot.shard_id.hex()[:16])
                return
            while not expert_done.is_set() and self.ctx.now_ms() < vote_due() - HEDGE_MARGIN_MS:
                with trio.move_on_after(HEDGE_POLL_S):
                    await expert_done.wait()
            nursery.cancel_scope.cancel()  # the vote is near: commit our own rather than wait on the expert

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hedge, nursery)
            for producer, price_bps in experts:
                sub = await self._proxy(slot, producer, price_bps)
                if sub is not None:
                    slot.route = f"proxy:{producer.hex()[:12]}"
                    slot.checked = sub  # _proxy verified it
                    got.append(sub)
                    nursery.cancel_scope.cancel()  # our own computation is not needed
                    break
            else:
                self.ctx.metrics.inc("proxy_fallbacks")
                expert_done.set()
        if got:
            return got[0]
        if not own:
            raise RuntimeError("neither the experts nor our own work produced a submission")
        if not expert_done.is_set():
            self.ctx.metrics.inc("proxy_hedged")  # the expert had not answered when the vote came near
        return own[0]

    async def _remember(self, shard_id: bytes, payload: Payload) -> None:
        """Our per-item losses of a payload we computed, into our own history (bounded: the oldest go first)."""
        epoch = self.ctx.epoch()
        vecs = routing_vectors(payload)

        def add() -> None:
            self.history.add(shard_id, vecs, self.me, payload.item_losses, epoch)
            self.history.trim(epoch)

        await trio.to_thread.run_sync(add)

    def _learn(self, loss: int) -> None:
        self.own_loss = loss if self.own_loss is None else (3 * self.own_loss + loss) // 4

    async def _proxy(self, slot: Slot, producer: bytes, price_bps: int) -> Submission | None:
        now = self.ctx.now_ms()
        m = slot.session.member
        budget = slot.ctx.commit_deadline(m.started if m else now) - now - PROXY_MIN_MS
        if budget < PROXY_MIN_MS:
            return None
        req = proxy_request(self.ctx.signer, self.ctx.net_id, slot.input_env, price_bps, now + budget)
        self.ctx.metrics.inc("proxies_sent")
        try:
            raw = await self.link.host.request(producer, "proxy", req.encode(), timeout=budget / 1000)
        except Exception as e:  # unreachable, timed out, refused by its RPC layer
            log.info("proxy to %s failed: %r", producer.hex()[:16], e)
            return None
        try:
            sub = await decode_off_loop(open_answer, raw, req.msg, producer, self.ctx.net_id, ed25519_verify)
        except ProtocolError as e:
            self.ctx.reject(producer, e, "proxy answer")
            return None
        if isinstance(sub, Refusal):
            log.info("expert %s refused shard %s: %s", producer.hex()[:16], slot.shard_id.hex()[:16], sub.detail)
            self.ctx.metrics.inc("proxies_refused")
            return None
        ok, why = await trio.to_thread.run_sync(self.compute.verify, list(slot.ctx.input.items),
                                                slot.ctx.shard_seed, sub.payload, None)
        if not ok:
            self.ctx.metrics.inc("proxies_bad")
            self.ctx.reject(producer, ProtocolError(f"ProxyAnswer: the payload does not verify: {why}",
                                                     reason="bad_payload"), "proxy answer")
            return None
        event(log, "proxy", role="member", shard=slot.shard_id, producer=producer, price_bps=price_bps,
              fee=slot.ctx.input.fee)
        return sub

    async def _verify(self, slot: Slot, v: Verify) -> None:
        try:
            if v.member == self.me and v.submission == slot.checked:
                ok, why = True, "our own submission"  # we computed it, or re-executed the expert's: not again
                self.ctx.metrics.inc("verify_own_skipped")
            else:
                ok, why = await trio.to_thread.run_sync(self.compute.verify, list(slot.ctx.input.items),
                                                        slot.ctx.shard_seed, v.submission.payload, v.sample_seed)
        except Exception as e:
            log.exception("verification crashed")
            ok, why = False, f"verification failed locally: {e!r:.100}"
        if not ok:
            self.ctx.metrics.inc("verify_failed")
            log.warning("candidate %s of shard %s failed verification: %s", v.member.hex()[:16],
                        slot.shard_id.hex()[:16], why)
        with STAGES.measure("codec_signatures"):
            self._effects(slot, slot.session.verified(v.member, ok, self.ctx.now_ms(), why))

    # the expert ----------------------------------------------------------------------------------------------------------
    async def serve_proxy(self, peer: bytes, req: bytes) -> bytes:
        env = await decode_off_loop(open_signed, req, self.ctx.net_id, ed25519_verify, (ProxyRequest,))
        if not self.config.serve_proxies:
            return ProxyAnswer.of(Refusal("off", "this node does not serve proxies")).encode()
        inp_env = open_wire(env.msg.input, self.ctx.net_id, ed25519_verify, (Input,))  # type: ignore[attr-defined]
        inp: Input = inp_env.msg  # type: ignore[assignment]
        if inp.space not in self.payments.served_spaces(inp.epoch):
            self.ctx.metrics.inc("proxies_refused_space")
            return ProxyAnswer.of(Refusal("space", f"this node does not serve space {inp.space}")).encode()
        ctx = self._derive(inp)
        self._check_payment(inp)
        res = self.desk.accept(env, ctx.members, self.ctx.now_ms())
        if isinstance(res, Refusal):
            return ProxyAnswer.of(res).encode()
        payload = await trio.to_thread.run_sync(self.compute.payload, list(inp.items), ctx.shard_seed)
        await self._remember(inp.shard_id, payload)
        sub = self.desk.sign(inp.shard_id, env.signer, payload)
        self.ctx.metrics.inc("proxies_served")
        event(log, "proxy", role="expert", shard=inp.shard_id, member=env.signer,
              price_bps=env.msg.price_bps, fee=inp.fee)  # type: ignore[attr-defined]
        return ProxyAnswer.of(sub).encode()

    # our own rounds (the submitter, `moenode.node.submitter`) ------------------------------------------------------------
    async def run_submission(self, env: Signed) -> Outcome | None:
        """Open our submitter's session for `env` (an Input we sealed), send the Input to the shard, and wait until
        the round ends: its outcome, or None if the session was pruned first."""
        ctx = self._derive(env.msg)
        session, effects = self.table.submit(ctx, env, self.ctx.now_ms())
        slot = self._slot(session)
        self.ctx.metrics.inc("submissions")
        with STAGES.measure("codec_signatures"):
            self._effects(slot, effects)
        await slot.sub_done.wait()
        return session.submitter.outcome if session.submitter is not None else None

    # housekeeping -----------------------------------------------------------------------------------------------------------
    def prune(self) -> None:
        for sid in self.table.prune(self.ctx.now_ms()):
            slot = self.slots.pop(sid, None)
            if slot is not None:
                slot.changed.set()
                slot.sub_done.set()
        self.desk.prune(self.ctx.now_ms())

    def counts(self) -> dict[str, int]:
        return self.table.counts()
