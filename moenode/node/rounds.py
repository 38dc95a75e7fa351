"""The round driver: real-network glue around the sans-IO shard rounds of `moenode.core.round`.

Theory of operation: a *slot* holds one shard's rounds on this node: our `MemberRound` if we are in the shard,
our `SubmitterRound` if we submitted the batch, or both. The driver does for them what `moenode.testing.inproc`
does on a virtual clock, on the real one:

* **Ingress.** Every envelope from a peer goes through `messages.open_signed` first (size cap, value budget,
  canonical decoding, network, schema, signature; on a worker thread when it is large, `node.decoding`). An
  `Input` opens the member round (after deriving the shard from our ledger's stake table and checking the payment
  certificate); any other round message goes to the slot of its shard. A message whose Input has not arrived yet
  is buffered if its signer holds stake (only they can be members), within bounds per shard, in shards and in
  bytes, and for a limited time.
  An envelope (its id and signer: equal bodies from two members share an id) seen twice in one round is a replay, except when we hold both roles: members legitimately send
  the submitter the same Report and Reveal they broadcast to the shard, and two couriers carry the winning Reveal.
* **Effects.** `Send` goes to a per-peer outbox (one sender task per peer keeps each peer's messages in order
  without blocking the handler); a Send to ourselves is delivered through a local queue. `Work` and `Verify` run on
  worker threads and feed their result back (`on_work_done`, `on_verified`). `Outcome` is handed to the node
  (certificates: verify, settle, index, gossip). `EvidenceFound` goes to the ledger.
* **Timers.** One task per slot sleeps until the earliest `deadline` of its rounds, or until an effect changed
  the state, then calls `on_timer`.
* **Work.** Embed the batch with the router model, look up the winner index, and apply `core.routing`: do it
  ourselves, or proxy to the best expert with a deadline and fall back to ourselves if it fails or its payload
  does not verify. The fallback is hedged: our own computation runs while the expert is being waited for, and
  once it is ready we wait for the expert only until the shard's vote is near, so a slow expert does not make us
  late (the price is our own compute, spent in rounds we proxy).
* **Expert.** The `proxy` RPC serves other members through `core.proxy.ProxyDesk` (one sponsor per shard, never a
  shard we are in, only paid shards) and answers a `ProxyAnswer`. As a sponsor we open the expert's answer with
  `core.proxy.open_answer`; a malformed answer, a submission that is not what we asked for, or a payload that does
  not verify is a rejection counted by reason against the expert, and we fall back to our own work.

Protocol errors are counted by reason and logged with the peer id by the node; they never end a round or the node.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import trio

from moenode.core.crypto import ed25519_verify
from moenode.core.errors import NotInShard, ProtocolError, Replay, StateError
from moenode.core.messages import (
    Commit,
    CommitVotes,
    Input,
    OptOut,
    ProxyRequest,
    Report,
    Reveal,
    Signed,
    Submission,
    open_signed,
    open_wire,
    seal,
    shard_id as derive_shard_id,
)
from moenode.core.proxy import ProxyAnswer, ProxyDesk, Refusal, open_answer, proxy_request
from moenode.core.round import (
    EvidenceFound,
    LocalRoundError,
    MemberRound,
    Outcome,
    Send,
    ShardContext,
    SubmitterRound,
    Verify,
    Work,
)
from moenode.core.routing import decide, median_low, rank
from moenode.core.selection import data_hash
from moenode.node.decoding import decode_off_loop

if TYPE_CHECKING:
    from moenode.node.daemon import Node

log = logging.getLogger("moenode.node")

ROUND_TYPES = (Input, OptOut, Commit, CommitVotes, Reveal, Report)
MEMBER_TYPES = (OptOut, Commit, CommitVotes, Reveal, Report)
SUBMITTER_TYPES = (Report, Reveal, OptOut)
EARLY_PER_SHARD = 64
EARLY_SHARDS = 256
EARLY_TTL = 300.0  # seconds a message may wait for its Input
EARLY_BYTES = 64 << 20  # all buffered messages together
CLOSED_KEEP = 10_000
LINGER = 30.0  # seconds a finished slot stays to absorb stragglers quietly
OUTBOX = 1024
SEND_RETRIES = (0.2, 1.0, None)  # seconds before each retry of a failed send; None: give up
MAX_SLOTS = 512  # rounds open at once (a bound on memory under a flood of Inputs)
PROXY_TRIES = 3  # experts asked in rank order before doing the work ourselves
PROXY_MIN_MS = 1_000  # do not start a proxy request with less time than this before the commit deadline
PROXY_RESPONSE_CAP = ProxyAnswer.MAX_BYTES
HEDGE_MARGIN_MS = 300  # with our own work ready, wait for an expert until this long before the shard's vote
HEDGE_POLL_S = 0.05


@dataclass
class Slot:
    ctx: ShardContext
    input_env: Signed
    member: MemberRound | None = None
    submitter: SubmitterRound | None = None
    seen: set[bytes] = field(default_factory=set)
    changed: trio.Event = field(default_factory=trio.Event)
    sub_done: trio.Event = field(default_factory=trio.Event)
    finished_at: float | None = None
    route: str = ""

    @property
    def shard_id(self) -> bytes:
        return self.ctx.shard_id

    def deadline(self) -> int | None:
        ds = [r.deadline for r in (self.member, self.submitter) if r is not None and r.deadline is not None]
        return min(ds) if ds else None

    @property
    def finished(self) -> bool:
        return (self.member is None or self.member.outcome is not None) and \
            (self.submitter is None or self.submitter.done)


@dataclass
class Attempt:
    shard_id: bytes
    status: str
    reason: str = ""
    outcome: Outcome | None = None
    refunded: bool = False
    elapsed_ms: int = 0
    pay_ms: int = 0

    def summary(self) -> dict:
        return {"shard_id": self.shard_id.hex(), "status": self.status, "reason": self.reason,
                "refunded": self.refunded, "elapsed_ms": self.elapsed_ms, "pay_ms": self.pay_ms}


def _key(env: Signed) -> bytes:
    return env.id + env.signer


def _size(env: Signed) -> int:
    """A cheap upper bound of an envelope's size: its payload blobs (a Reveal's vectors) dominate."""
    msg = env.msg
    if isinstance(msg, Reveal):
        p = msg.submission.payload
        return len(p.embeddings) + len(p.views) + len(p.routing) + 4096
    return 4096


class SubmitError(RuntimeError):
    def __init__(self, message: str, attempts: list[Attempt]):
        super().__init__(message)
        self.attempts = attempts


class Rounds:
    def __init__(self, node: Node):
        self.node = node
        self.slots: dict[bytes, Slot] = {}
        self.early: OrderedDict[bytes, list[tuple[bytes, Signed, float]]] = OrderedDict()
        self.early_bytes = 0
        self.closed: OrderedDict[bytes, None] = OrderedDict()
        self._outboxes: dict[bytes, trio.MemorySendChannel] = {}
        self._local_send, self._local_recv = trio.open_memory_channel[Signed](OUTBOX)
        self.desk = ProxyDesk(node.signer, node.net_id, ed25519_verify, node.params, node.config.price_bps)
        self.own_loss: int | None = None  # moving estimate of our own batch loss, for the routing rule
        self.latencies: list[int] = []  # ms from Input to our member outcome, last 100 rounds

    @property
    def me(self) -> bytes:
        return self.node.signer.public_key

    # ingress ---------------------------------------------------------------------------------------------------------
    async def on_envelope(self, peer: bytes, data: bytes) -> None:
        try:
            env = await decode_off_loop(open_signed, data, self.node.net_id, ed25519_verify, ROUND_TYPES)
        except ProtocolError as e:
            self.node.reject(peer, e, "envelope")
            return
        self.dispatch(peer, env)

    def dispatch(self, peer: bytes, env: Signed) -> None:
        try:
            if isinstance(env.msg, Input):
                self._on_input(env)
            else:
                self._on_round_message(peer, env)
        except ProtocolError as e:
            self.node.reject(peer, e, env.msg.TYPE)

    async def run_local_queue(self) -> None:
        async for env in self._local_recv:
            self.dispatch(self.me, env)

    def _check_payment(self, inp: Input) -> None:
        self.node.payments.ledger.payment_check()(inp)
        self.node.payments.accept(inp.pay_cert)  # the escrow, so that our Settle vote can check it later

    def _derive(self, inp: Input) -> ShardContext:
        led = self.node.payments.ledger
        cur = self.node.genesis.epoch(self.node.now_ms())
        if inp.epoch not in (cur - 1, cur):
            raise StateError(f"Input: epoch {inp.epoch} is not current ({cur})")
        try:
            power, seed = led.power_at(inp.epoch), led.epoch_seed(inp.epoch)
        except KeyError as e:
            raise StateError(f"Input: {e}") from None
        return ShardContext.derive(self.node.net_id, self.node.params, inp, power, seed, self.node.genesis.space_book)

    def _on_input(self, env: Signed) -> None:
        inp: Input = env.msg  # type: ignore[assignment]
        sid = inp.shard_id
        slot = self.slots.get(sid)
        if slot is not None and slot.member is not None:
            if _key(env) in slot.seen:
                raise Replay("Input delivered twice")
            raise StateError("a second, different Input for this shard")
        if sid in self.closed:
            raise Replay("Input for a round that is already over")
        if slot is None and len(self.slots) >= MAX_SLOTS:
            raise StateError(f"{len(self.slots)} rounds open: not taking more", reason="rate_limited")
        ctx = slot.ctx if slot is not None else self._derive(inp)
        if self.me not in ctx.members:
            raise NotInShard(f"we are not in shard {sid.hex()[:16]}")
        now = self.node.now_ms()
        member, out = MemberRound.open(ctx, env, self.node.signer, ed25519_verify, now, self._check_payment)
        if slot is None:
            slot = Slot(ctx, env)
            self.slots[sid] = slot
            self.node.spawn(self._timer, slot)
        slot.member = member
        slot.seen.add(_key(env))
        self.node.metrics.inc("rounds_opened")
        self._effects(slot, out, "member")
        for peer, early, _t in self.early.pop(sid, []):
            self.early_bytes -= _size(early)
            self.dispatch(peer, early)

    def _on_round_message(self, peer: bytes, env: Signed) -> None:
        msg = env.msg
        sid: bytes = msg.shard_id  # type: ignore[attr-defined]
        slot = self.slots.get(sid)
        if slot is None or (slot.member is None and self.me in slot.ctx.members and isinstance(msg, MEMBER_TYPES)
                            and not isinstance(msg, SUBMITTER_TYPES)):
            if sid in self.closed:
                return  # a straggler after the round: normal, not misbehaviour
            self._buffer(sid, peer, env)
            return
        key = _key(env)
        if key in slot.seen:
            if (slot.member is not None and slot.submitter is not None) or \
                    (slot.submitter is not None and isinstance(msg, Reveal)):
                return  # by design: members send the submitter what they broadcast; two couriers carry one reveal
            raise Replay(f"{msg.TYPE} delivered twice")
        slot.seen.add(key)
        now = self.node.now_ms()
        errors: list[ProtocolError] = []
        handled = False
        if slot.member is not None and isinstance(msg, MEMBER_TYPES):
            try:
                self._effects(slot, slot.member.handle(env, now), "member")
                handled = True
            except ProtocolError as e:
                errors.append(e)
        elif slot.member is None and self.me in slot.ctx.members and isinstance(msg, MEMBER_TYPES):
            self._buffer(sid, peer, env)  # our own Input has not been processed yet
            slot.seen.discard(key)
        if slot.submitter is not None and isinstance(msg, SUBMITTER_TYPES):
            try:
                self._effects(slot, slot.submitter.handle(env, now), "submitter")
                handled = True
            except ProtocolError as e:
                errors.append(e)
        if slot.submitter is not None and slot.member is None and not isinstance(msg, SUBMITTER_TYPES) \
                and self.me not in slot.ctx.members:
            errors.append(StateError(f"{msg.TYPE} is not for the submitter"))
        if errors and not handled:
            raise errors[0]

    def _buffer(self, sid: bytes, peer: bytes, env: Signed) -> None:
        """Keep a message for a shard whose Input we have not seen, if its signer could be a member at all."""
        led = self.node.payments.ledger
        epoch = max(0, self.node.genesis.epoch(self.node.now_ms()))
        try:
            staked = any(led.power_at(e).get(env.signer, 0) > 0 for e in {max(0, epoch - 1), epoch})
        except KeyError:
            staked = True  # our table is behind: give the benefit of the doubt, the budget still holds
        if not staked:
            raise NotInShard(f"{env.msg.TYPE} from {env.signer.hex()[:16]}, who holds no stake")
        size = _size(env)
        if self.early_bytes + size > EARLY_BYTES:
            self.node.metrics.inc("early_dropped")
            return
        box = self.early.get(sid)
        if box is None:
            if len(self.early) >= EARLY_SHARDS:
                _, dropped = self.early.popitem(last=False)
                self.early_bytes -= sum(_size(b[1]) for b in dropped)
                self.node.metrics.inc("early_dropped")
            box = self.early[sid] = []
        if len(box) >= EARLY_PER_SHARD:
            self.node.metrics.inc("early_dropped")
            return
        box.append((peer, env, trio.current_time()))
        self.early_bytes += size

    # effects -----------------------------------------------------------------------------------------------------------
    def _effects(self, slot: Slot, out: list, role: str) -> None:
        for e in out:
            if isinstance(e, Send):
                self._send(e.to, e.env)
            elif isinstance(e, Work):
                self.node.spawn(self._work, slot, e)
            elif isinstance(e, Verify):
                self.node.spawn(self._verify, slot, e)
            elif isinstance(e, EvidenceFound):
                self.node.on_evidence(e.evidence)
            elif isinstance(e, Outcome):
                if role == "member":
                    self._member_outcome(slot, e)
                else:
                    slot.sub_done.set()
        if slot.finished and slot.finished_at is None:
            slot.finished_at = trio.current_time()
        slot.changed.set()

    def _send(self, to: bytes, env: Signed) -> None:
        if to == self.me:
            try:
                self._local_send.send_nowait(env)
            except trio.WouldBlock:
                self.node.metrics.inc("outbox_dropped")
            return
        box = self._outboxes.get(to)
        if box is None:
            box, recv = trio.open_memory_channel[bytes](OUTBOX)
            self._outboxes[to] = box
            self.node.spawn(self._sender, to, recv)
        try:
            box.send_nowait(env.encode())
        except trio.WouldBlock:
            self.node.metrics.inc("outbox_dropped")

    async def _sender(self, peer: bytes, recv: trio.MemoryReceiveChannel) -> None:
        async for data in recv:
            for delay in SEND_RETRIES:
                try:
                    await self.node.net.send(peer, data)
                    self.node.metrics.inc("envelopes_sent")
                    break
                except Exception as e:  # NetError or a transport failure (a connection being replaced, say)
                    if delay is None:  # the round tolerates a lost message; we tried
                        self.node.metrics.inc("send_failed")
                        log.info("send to %s failed: %r", peer.hex()[:16], e, extra={"peer": peer.hex()})
                        break
                    self.node.metrics.inc("send_retried")
                    await trio.sleep(delay)

    def _member_outcome(self, slot: Slot, out: Outcome) -> None:
        self.node.metrics.inc(f"rounds_{out.status}")
        assert slot.member is not None
        took = self.node.now_ms() - slot.member.started
        self.latencies = (self.latencies + [took])[-100:]
        log.info("round %s: %s %s (%d ms, route %s)", slot.shard_id.hex()[:16], out.status, out.reason, took,
                 slot.route or "-")
        if out.certificate is not None:
            self.node.spawn(self.node.on_certificate, out.certificate, None, slot.input_env.msg.pay_cert)

    # timers ------------------------------------------------------------------------------------------------------------
    async def _timer(self, slot: Slot) -> None:
        while not slot.finished:
            slot.changed = trio.Event()
            due = slot.deadline()
            if due is None:
                await slot.changed.wait()
                continue
            delay = (due - self.node.now_ms()) / 1000
            if delay > 0:
                with trio.move_on_after(delay):
                    await slot.changed.wait()
                continue
            now = self.node.now_ms()
            for role, rnd in (("member", slot.member), ("submitter", slot.submitter)):
                if rnd is not None and rnd.deadline is not None and rnd.deadline <= now:
                    self._effects(slot, rnd.on_timer(now), role)
            if slot.deadline() == due:
                await trio.sleep(0.05)  # the round did not move its deadline: do not spin

    # work --------------------------------------------------------------------------------------------------------------
    async def _work(self, slot: Slot, w: Work) -> None:
        try:
            sub = await self._produce(slot, w)
        except Exception:
            self.node.metrics.inc("work_failed")
            log.exception("work for shard %s failed", slot.shard_id.hex()[:16])
            return
        m = slot.member
        if sub is not None and m is not None and m.outcome is None:
            self._effects(slot, m.on_work_done(sub, self.node.now_ms()), "member")

    async def _produce(self, slot: Slot, w: Work) -> Submission:
        node, items = self.node, list(w.items)
        p = node.params
        if len(node.index):
            vecs = await trio.to_thread.run_sync(node.compute.routing_vectors, items)
            neigh = await trio.to_thread.run_sync(node.index.neighbours, vecs, p.routing_k, p.routing_min_cos_micro,
                                                  slot.ctx.input.space)
            ranked = rank(neigh, node.prices(), p, exclude=set(slot.ctx.members) | {self.me})
            estimate, experts = self._estimate(neigh), []
            for cand in ranked[:PROXY_TRIES]:  # an expert already serving another sponsor refuses: ask the next
                d = decide(estimate, [cand], p, self.me)
                if not d.proxy or d.producer is None:
                    break
                experts.append((d.producer, d.price_bps))
            if experts:
                return await self._proxy_hedged(slot, w, experts)
        return await self._own(slot, w)

    async def _own(self, slot: Slot, w: Work) -> Submission:
        own = await trio.to_thread.run_sync(self.node.compute.payload, list(w.items), w.shard_seed,
                                            abandon_on_cancel=True)
        self._learn(own.batch_loss)
        slot.route = slot.route or "self"
        return Submission(shard_id=w.shard_id, member=self.me, producer=self.me, payload=own, proxy=None)

    async def _proxy_hedged(self, slot: Slot, w: Work, experts: list[tuple[bytes, int]]) -> Submission:
        """Ask the experts in rank order while computing our own submission as a hedge. A member whose commit comes
        after the shard's vote is struck, so once ours is ready we wait for the expert only until the vote is near
        (the round knows when it is due once a quorum has committed; until then the commit deadline bounds it).
        The expert's answer wins whenever it comes in time; a slow or silent expert never makes us late."""
        node, own, got = self.node, [], []
        expert_done = trio.Event()

        def vote_due() -> int:
            m = slot.member
            return m.vote_due() if m is not None else slot.ctx.commit_deadline(node.now_ms())

        async def hedge(nursery: trio.Nursery) -> None:
            try:
                own.append(await self._own(slot, w))
            except Exception:  # the expert may still answer
                log.exception("own work for shard %s failed while proxying", slot.shard_id.hex()[:16])
                return
            while not expert_done.is_set() and node.now_ms() < vote_due() - HEDGE_MARGIN_MS:
                with trio.move_on_after(HEDGE_POLL_S):
                    await expert_done.wait()
            nursery.cancel_scope.cancel()  # the vote is near: commit our own rather than wait on the expert

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hedge, nursery)
            for producer, price_bps in experts:
                sub = await self._proxy(slot, producer, price_bps)
                if sub is not None:
                    slot.route = f"proxy:{producer.hex()[:12]}"
                    got.append(sub)
                    nursery.cancel_scope.cancel()  # our own computation is not needed
                    break
            else:
                node.metrics.inc("proxy_fallbacks")
                expert_done.set()
        if got:
            return got[0]
        if not own:
            raise RuntimeError("neither the experts nor our own work produced a submission")
        if not expert_done.is_set():
            node.metrics.inc("proxy_hedged")  # the expert had not answered when the vote came near
        return own[0]

    def _estimate(self, neigh: list[list[tuple[bytes, int, int]]]) -> int:
        """Our expected batch loss, without computing it (the choice must be fast): the moving average of our own
        past batch losses; before we have any, the typical winning loss of this region (the median of the
        neighbours' losses), so a first round proxies only to an expert clearly better than the region's norm."""
        if self.own_loss is not None:
            return self.own_loss
        return median_low([loss for item in neigh for _, loss, _ in item] or [1_000_000])

    def _learn(self, loss: int) -> None:
        self.own_loss = loss if self.own_loss is None else (3 * self.own_loss + loss) // 4

    async def _proxy(self, slot: Slot, producer: bytes, price_bps: int) -> Submission | None:
        now = self.node.now_ms()
        budget = slot.ctx.commit_deadline(slot.member.started if slot.member else now) - now - PROXY_MIN_MS
        if budget < PROXY_MIN_MS:
            return None
        req = proxy_request(self.node.signer, self.node.net_id, slot.input_env, price_bps, now + budget)
        self.node.metrics.inc("proxies_sent")
        try:
            raw = await self.node.net.request(producer, "proxy", req.encode(), timeout=budget / 1000)
        except Exception as e:  # unreachable, timed out, refused by its RPC layer
            log.info("proxy to %s failed: %r", producer.hex()[:16], e)
            return None
        try:
            sub = await decode_off_loop(open_answer, raw, req.msg, producer, self.node.net_id, ed25519_verify)
        except ProtocolError as e:
            self.node.reject(producer, e, "proxy answer")
            return None
        if isinstance(sub, Refusal):
            log.info("expert %s refused shard %s: %s", producer.hex()[:16], slot.shard_id.hex()[:16], sub.detail)
            self.node.metrics.inc("proxies_refused")
            return None
        ok, why = await trio.to_thread.run_sync(self.node.compute.verify, list(slot.ctx.input.items),
                                                slot.ctx.shard_seed, sub.payload, None)
        if not ok:
            self.node.metrics.inc("proxies_bad")
            self.node.reject(producer, ProtocolError(f"ProxyAnswer: the payload does not verify: {why}",
                                                     reason="bad_payload"), "proxy answer")
            return None
        return sub

    async def _verify(self, slot: Slot, v: Verify) -> None:
        m = slot.member
        assert m is not None
        try:
            ok, why = await trio.to_thread.run_sync(self.node.compute.verify, list(slot.ctx.input.items),
                                                    slot.ctx.shard_seed, v.submission.payload, v.sample_seed)
        except Exception as e:
            log.exception("verification crashed")
            ok, why = False, f"verification failed locally: {e!r:.100}"
        if not ok:
            self.node.metrics.inc("verify_failed")
            log.warning("candidate %s of shard %s failed verification: %s", v.member.hex()[:16],
                        slot.shard_id.hex()[:16], why)
        if m.outcome is None:
            self._effects(slot, m.on_verified(v.member, ok, self.node.now_ms(), why), "member")

    # the expert ----------------------------------------------------------------------------------------------------------
    async def serve_proxy(self, peer: bytes, req: bytes) -> bytes:
        node = self.node
        env = await decode_off_loop(open_signed, req, node.net_id, ed25519_verify, (ProxyRequest,))
        if not node.config.serve_proxies:
            return ProxyAnswer.of(Refusal("off", "this node does not serve proxies")).encode()
        inp_env = open_wire(env.msg.input, node.net_id, ed25519_verify, (Input,))  # type: ignore[attr-defined]
        inp: Input = inp_env.msg  # type: ignore[assignment]
        if inp.space not in node.genesis.space_book.serves(node.account):
            node.metrics.inc("proxies_refused_space")
            return ProxyAnswer.of(Refusal("space", f"this node does not serve space {inp.space}")).encode()
        ctx = self._derive(inp)
        self._check_payment(inp)
        res = self.desk.accept(env, ctx.members, node.now_ms())
        if isinstance(res, Refusal):
            return ProxyAnswer.of(res).encode()
        payload = await trio.to_thread.run_sync(node.compute.payload, list(inp.items), ctx.shard_seed)
        sub = self.desk.sign(inp.shard_id, env.signer, payload)
        node.metrics.inc("proxies_served")
        return ProxyAnswer.of(sub).encode()

    # the submitter ---------------------------------------------------------------------------------------------------------
    async def submit(self, texts: list[str], fee: int, attempts: int, space: str = ""
                     ) -> tuple[Attempt, list[Attempt]]:
        """Pay, send the Input, drive the SubmitterRound; on failure refund after the deadline and retry. `space` ""
        is this node's default (config submit_space, else the network's); a space the network does not list or
        that no stake serves raises SubmitError before anything is paid."""
        space = self.submit_space(space)
        done: list[Attempt] = []
        for _ in range(attempts):
            a = await self._attempt(texts, fee, space)
            done.append(a)
            if a.status == "certified":
                return a, done
        raise SubmitError(f"no certificate after {len(done)} attempt(s)", done)

    def submit_space(self, space: str = "") -> str:
        """The space a submission names, checked against the genesis and the current stake table."""
        node = self.node
        book = node.genesis.space_book
        space = space or node.config.submit_space or book.default.id
        try:
            book.space(space)
        except ProtocolError as e:
            raise SubmitError(str(e), []) from None
        epoch = max(0, node.genesis.epoch(node.now_ms()))
        try:
            power = node.payments.ledger.power_at(epoch)
        except KeyError:
            return space
        if not any(vp > 0 for vp in book.power_in(power, space).values()):
            raise SubmitError(f"no staked node serves space {space} in epoch {epoch}: nothing was paid", [])
        return space

    async def _attempt(self, texts: list[str], fee: int, space: str) -> Attempt:
        node = self.node
        t0 = node.now_ms()
        epoch = max(0, node.genesis.epoch(t0))
        nonce = os.urandom(32)
        dh = data_hash([t.encode("utf-8") for t in texts])
        sid = derive_shard_id(epoch, dh, nonce, self.me, space)
        deadline = t0 + node.params.round_abort_ms
        pay = await node.payments.pay_escrow(sid, fee, deadline)
        paid = node.now_ms()
        try:
            a = await self._run_round(texts, fee, epoch, nonce, dh, sid, deadline, pay, t0, space)
        except (ProtocolError, LocalRoundError) as e:  # e.g. the epoch's table closed between paying and sending
            a = Attempt(sid, "failed", f"could not start the round: {e}", None, elapsed_ms=node.now_ms() - t0)
        a.pay_ms = paid - t0
        if a.status == "certified":
            return a
        wait = (deadline - node.now_ms()) / 1000
        if wait > 0:
            await trio.sleep(wait + 0.05)
        if a.outcome is None or a.outcome.certificate is None:
            try:
                a.refunded = await node.payments.refund(pay) is not None
            except Exception as e:
                a.reason += f"; refund failed: {e}"
                log.warning("refund of shard %s failed: %s", sid.hex()[:16], e)
        return a

    async def _run_round(self, texts: list[str], fee: int, epoch: int, nonce: bytes, dh: bytes, sid: bytes,
                         deadline: int, pay, t0: int, space: str) -> Attempt:
        node = self.node
        inp = Input(shard_id=sid, epoch=epoch, submitter=self.me, pay_id=pay.id, pay_cert=pay.encode(), fee=fee,
                    data_hash=dh, nonce=nonce, modality="text", deadline_ms=deadline, items=tuple(texts), space=space)
        env = seal(inp, node.signer, node.net_id)
        ctx = self._derive(inp)
        rnd = SubmitterRound(ctx, env)
        slot = Slot(ctx, env, submitter=rnd)
        self.slots[sid] = slot
        node.spawn(self._timer, slot)
        node.metrics.inc("submissions")
        self._effects(slot, rnd.start(node.now_ms()), "submitter")
        await slot.sub_done.wait()
        out = rnd.outcome
        if out is None:
            return Attempt(sid, "failed", "the round was abandoned", None, elapsed_ms=node.now_ms() - t0)
        a = Attempt(sid, out.status, out.reason, out, elapsed_ms=node.now_ms() - t0)
        if out.status == "certified" and out.winner_reveal is not None:
            assert out.certificate is not None
            node.spawn(node.on_certificate, out.certificate, None, b"")
        elif out.status == "certified":
            a.status, a.reason = "incomplete", out.reason or "the winning reveal never arrived"
        return a

    # housekeeping -----------------------------------------------------------------------------------------------------------
    def prune(self) -> None:
        now_t, now_ms = trio.current_time(), self.node.now_ms()
        for sid, slot in list(self.slots.items()):
            over = slot.ctx.input.deadline_ms + int(LINGER * 1000) < now_ms
            if over or (slot.finished_at is not None and now_t - slot.finished_at > LINGER):
                del self.slots[sid]
                slot.changed.set()
                slot.sub_done.set()
                self.closed[sid] = None
                while len(self.closed) > CLOSED_KEEP:
                    self.closed.popitem(last=False)
        for sid, box in list(self.early.items()):
            keep = [b for b in box if now_t - b[2] < EARLY_TTL]
            self.early_bytes -= sum(_size(b[1]) for b in box if b not in keep)
            box[:] = keep
            if not box:
                del self.early[sid]
        self.desk.prune(now_ms)

    def counts(self) -> dict[str, int]:
        return {"active": sum(1 for s in self.slots.values() if not s.finished), "buffered_shards": len(self.early)}

    def routing_vectors_of(self, report: Report) -> np.ndarray:
        n = len(report.item_losses)
        return np.frombuffer(report.routing, "<f2").reshape(n, -1).astype(np.float32)
