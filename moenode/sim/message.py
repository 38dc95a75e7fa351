"""The message level: every node is the real core state machine; the driver only delivers what comes out.

Theory of operation
-------------------
One heap of timed events drives the whole network on a virtual clock (integer ms). Event kinds:

    submit      a client seals an `Input` naming the submission's space, pays the fee into escrow, and starts a
                `SubmitterRound`; its shard is drawn from the stake that serves the space (`SpaceShards`: the
                daemon's `SpaceBook.power_in`), and a space no staked node serves is refused before paying
    deliver     an envelope reaches a node or a client; its bytes go through `open_signed` (unless the scenario
                turns decoding off), then to the expert's `ProxyDesk` or to the receiver's `ShardTable`
                (`moenode.core.shard`: its session, or the early buffer while the shard's Input has not arrived,
                as in the daemon). The bytes are opened once per envelope and the frozen result is shared by every
                recipient of a broadcast: each would compute the same from the bytes
    work_done   a member's (or, via proxy, an expert's) payload is ready: `ShardSession.work_done`
    verified    the lazy verification of one candidate finished: `ShardSession.verified`
    timer       a session's `deadline` came: `handle_timer`
    proxy_*     the ProxyRequest / reply exchange between a sponsor and an expert's desk
    settle      a certificate's reports are collected and the escrow is released through the balance book
    epoch       strikes, faulty marks and evidence slash stake (`checkpoint.next_table`); the new table and seed
                take effect two epochs on, as the checkpoint rule says
    churn       nodes leave and come back

Effects map one to one: `Send` becomes a delivery after the link's latency (per-link log-normal medians, jitter,
bandwidth for the bytes; packet loss costs a retransmission timeout, since direct streams are reliable; a partition
or an offline receiver drops the message), `Work` becomes routing plus a synthetic
payload (`moenode.sim.world` losses; the routing decision is `moenode.core.routing.plan` on the shared winner index,
with the member's own estimate taken from the world, where the daemon learns it from its own history),
`Verify` checks the claimed losses against the world's, `EvidenceFound` and `Outcome` are recorded. Routing, the
winner index, proxies and the other policies stay inside the round's space: one index per space, and an expert
refuses a request for a space it does not serve, as the daemon does. The in-round space check is the core's: in the
real mode the payloads carry each model's own vectors. Byzantine
nodes are the honest state machine with a twist in the driver: equivocators send a second, different Commit;
withholders never send their Reveal; fake-score nodes claim 30 % of their real loss; collapsed encoders score 1.0.

Runs are deterministic for a seed: every random draw comes from one seeded generator in event order, and the heap
breaks time ties by insertion order.

`events` counts what the scheduler does to the core: deliveries, timers that fire, work and verdicts coming back,
submissions, settlements, epochs and churn. A timer superseded by a later deadline and the fallback settlement of
a round already settled reach nothing and are not counted; neither is what an offline node would have received.
"""

import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from moenode.core.checkpoint import Item, evidence_key
from moenode.core.crypto import H
from moenode.core.errors import ProtocolError
from moenode.core.genesis import next_epoch_seed
from moenode.core.messages import (
    Commit,
    Input,
    Payload,
    ProxyRequest,
    Report,
    Reveal,
    Signed,
    Submission,
    batch_loss,
    open_signed,
    seal,
)
from moenode.core.proxy import Accepted, ProxyDesk, Refusal, proxy_request
from moenode.core.round import (
    EvidenceFound,
    Outcome,
    Send,
    ShardContext,
    SubmitterRound,
    Verify,
    Work,
    assemble_certificate,
)
from moenode.core.routing import plan
from moenode.core.shard import Refused, SessionEffect, ShardSession, ShardTable
from moenode.core.selection import quorum, voting_power
from moenode.sim.book import Book, escrow_id
from moenode.sim.config import Scenario
from moenode.sim.draw import SpaceShards, Uniforms
from moenode.sim.index import WinnerIndex
from moenode.sim.metrics import Recorder
from moenode.sim.policies import BIG, Baselines, batch_of, expert_batch_loss
from moenode.sim.population import Population, chunks, item_text, nonce_of, round_ids
from moenode.sim.world import micro, routing_vectors


@dataclass
class RoundMeta:
    """What the driver knows about one submission (the world's truth, never shown to the nodes)."""

    k: int
    client: bytes
    input_env: Signed
    ctx: ShardContext
    sub: SubmitterRound | None  # the client's round, once the fee is paid and the Input sent
    domain: int
    ids: np.ndarray  # item ids (b,)
    x: np.ndarray  # routing vectors (b, D)
    w: np.ndarray  # region weights (b, K)
    start: int
    members: np.ndarray  # node indices, pubkey order
    reports: dict[bytes, Signed] = field(default_factory=dict)
    certified_at: int | None = None
    settled: bool = False


class Network:
    """Per-link latency, bandwidth, retransmissions, partitions; which nodes are online."""

    def __init__(self, sc: Scenario, n_keys: int, rng: np.random.Generator):
        self.cfg = sc.net
        self.uniform = Uniforms(rng)
        self.seed = sc.sim.seed
        self.n_keys = n_keys
        self.online = np.ones(n_keys, dtype=bool)
        self.up: list[bool] = [True] * n_keys  # `online` as a list: read on every event, changed only by churn
        self.side = np.random.default_rng(sc.sim.seed + 11).random(n_keys)
        self._median: dict[int, float] = {}  # key a * n_keys + b for a < b
        self._bits_per_ms = sc.net.bandwidth_mbps * 1e3

    def set_online(self, first: np.ndarray) -> None:
        """The online flags of the first len(first) keys."""
        self.online[:len(first)] = first
        self.up[:] = self.online.tolist()

    def warm(self, nodes: list[int]) -> None:
        """Draw the medians of every not yet drawn link among `nodes` at once (one shard: all its links carry
        traffic); the values are those `median` would draw one at a time."""
        n = self.n_keys
        ends = sorted(set(nodes))
        pairs = [(a, b) for i, a in enumerate(ends) for b in ends[i + 1:] if a * n + b not in self._median]
        if pairs:
            a, b = np.array(pairs).T
            self._median.update(zip((a * n + b).tolist(), self._draw(a, b).tolist()))

    def _draw(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        from moenode.sim.world import gauss

        return self.cfg.latency_ms * np.exp(self.cfg.latency_spread * gauss(self.seed + 99, a, b))

    def median(self, a: int, b: int) -> float:
        key = a * self.n_keys + b if a < b else b * self.n_keys + a
        m = self._median.get(key)
        if m is None:
            lo, hi = (a, b) if a < b else (b, a)
            m = self._median[key] = float(self._draw(np.array([lo]), np.array([hi]))[0])
        return m

    def delay(self, a: int, b: int, size: int, now: int) -> int | None:
        """ms until `b` has the message from `a`, or None if it is lost."""
        c = self.cfg
        if not (self.up[a] and self.up[b]):
            return None
        if c.partitions and self._cut(a, b, now):
            return None
        median = self._median.get(a * self.n_keys + b if a < b else b * self.n_keys + a) or self.median(a, b)
        ms = median * (1.0 + c.jitter * self.uniform.one())
        if c.loss > 0:
            while self.uniform.one() < c.loss:
                ms += 200 + 3 * median  # a lost segment: streams are reliable, it costs a retransmission
        ms = int(ms + size * 8 / self._bits_per_ms)  # bits / (bits per ms)
        return ms if ms > 1 else 1

    def _cut(self, a: int, b: int, now: int) -> bool:
        """Whether a partition in force separates a and b."""
        for part in self.cfg.partitions:
            if part["start_ms"] <= now < part["end_ms"]:
                share = part.get("share", 0.5)
                if (self.side[a] < share) != (self.side[b] < share):
                    return True
        return False


class MessageSim:
    def __init__(self, sc: Scenario, pop: Population | None = None):
        self.sc, self.p = sc, sc.params
        self.pop = pop or Population.build(sc)
        s = sc.sim
        self.world = self.pop.world
        self.net_id = self.pop.genesis.network_id
        self.verify = self.pop.verify
        self.rng = np.random.default_rng(s.seed)
        self.items_rng = np.random.default_rng(s.seed)  # the item stream, drawn as the market level draws it
        self.keys = list(self.pop.keys) + list(self.pop.clients)
        self.idx = {k: i for i, k in enumerate(self.keys)}
        self.network = Network(sc, len(self.keys), self.rng)
        self.book = Book(self.p, {c: s.client_balance for c in self.pop.clients}, {k: s.stake for k in self.pop.keys})
        self.serving = {space: self.pop.serving(space) for space in self.pop.book.ids()}
        self.index = {space: WinnerIndex(self.world.dim, s.index_cap) for space in self.serving}  # routing per space
        self.classes = [self.pop.node_class(i) for i in range(s.nodes)]
        self.rec = Recorder(s.nodes, self.world.domains, self.classes)
        self.rec.expect_spaces(self.pop.cheats_by_space())
        self.prices = {k: int(self.world.price_bps[i]) for i, k in enumerate(self.pop.keys)}
        self.baselines = Baselines(self.world, self.serving, self.index, s.cbtm_clusters, self.p.routing_min_hits,
                                   s.seed, s.oracle_shortlist)
        self.heap: list = []
        self.seq = itertools.count()
        self.shards: dict[int, ShardTable] = {}  # node or client index -> its shard sessions, made on first use
        self.timers: dict[tuple[int, bytes], int] = {}
        self.meta: dict[bytes, RoundMeta] = {}
        self.desks: dict[int, ProxyDesk] = {}
        self.pending_proxy: dict[tuple[int, bytes], bool] = {}
        self.epoch = 0
        self.epoch_seed = self.pop.genesis.seed0()
        self.tables = {0: dict(self.book.stakes), 1: dict(self.book.stakes)}
        self._tables_for_epoch()
        self.epoch_ms = max(1, s.epoch_submissions * sc.net.interval_ms)
        self.items_pending: list[Item] = []
        self.evidence_seen: set[bytes] = set()
        self.events = 0
        self.deliveries = 0
        self.rejections: dict[str, int] = {}
        self.trace: list[dict] = []
        self.now = 0
        self.decode = sc.net.decode
        self.nodes = s.nodes
        self.behaviour: list[str] = list(self.pop.behaviour)
        # envelope bytes -> what `open_signed` makes of them, shared by every recipient of a broadcast (the result
        # is a pure function of the bytes); dropped with the shard's round state when it settles
        self.opened: dict[bytes, Signed] = {}
        self.opened_by_shard: dict[bytes, list[bytes]] = {}
        self._handlers: dict[str, Callable[[int, object], None]] = {
            name[4:]: getattr(self, name) for name in dir(self) if name.startswith("_ev_")}
        self._chunk_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        self._chunk_list = chunks(s.submissions, s.chunk, s.epoch_submissions)
        self._next_chunk = 0

    # scheduling ---------------------------------------------------------------------------------------------------
    def push(self, at: int, kind: str, who: int, payload: object) -> None:
        heapq.heappush(self.heap, (at, next(self.seq), kind, who, payload))

    def table(self, who: int) -> ShardTable:
        t = self.shards.get(who)
        if t is None:
            t = self.shards[who] = ShardTable(self.pop.signers[self.keys[who]], self.verify)
        return t

    def session(self, who: int, sid: bytes) -> ShardSession | None:
        t = self.shards.get(who)
        return t.sessions.get(sid) if t is not None else None

    def _tables_for_epoch(self) -> None:
        self.power = voting_power(self.tables[self.epoch])
        self.draws = SpaceShards(self.pop.book, self.power, self.pop.index_of)

    @property
    def n(self) -> int:
        """The shard size of the default space in this epoch."""
        pool = self.draws.get(self.pop.book.default.id)
        return pool.n if pool is not None else 0

    # the run ------------------------------------------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], None] | None = None) -> dict:
        s, nc = self.sc.sim, self.sc.net
        horizon = s.submissions * nc.interval_ms
        for e in range(1, -(-horizon // self.epoch_ms)):  # first: an epoch starts before that ms's submission
            self.push(e * self.epoch_ms, "epoch", -1, e)
        for k in range(s.submissions):
            self.push(k * nc.interval_ms, "submit", -1, k)
        if nc.churn > 0:
            for t in range(0, horizon + self.p.round_abort_ms, nc.churn_period_ms):
                self.push(t, "churn", -1, None)
        t0 = time.perf_counter()
        settled_before = 0
        heap, pop, online, handlers, nodes = self.heap, heapq.heappop, self.network.up, self._handlers, s.nodes
        while heap:
            at, _, kind, who, payload = pop(heap)
            self.now = at
            if 0 <= who < nodes and not online[who] and kind != "epoch" and kind != "churn":
                continue  # an offline node does nothing; what was scheduled for it is lost
            self.events += 1
            try:
                handlers[kind](who, payload)
            except ProtocolError as e:
                self.rejections[e.reason] = self.rejections.get(e.reason, 0) + 1
            if progress and self.book.settled + self.book.refunded != settled_before:
                settled_before = self.book.settled + self.book.refunded
                progress(settled_before, s.submissions)
        for sid, m in self.meta.items():
            if not m.settled:
                self._finish(m, None)
        self._ev_epoch(-1, self.epoch + 1)  # the last, partial epoch is checkpointed too
        self.book.check()
        return {"wall_s": time.perf_counter() - t0, "events": self.events, "deliveries": self.deliveries}

    # submissions --------------------------------------------------------------------------------------------------
    def _items_for(self, k: int) -> tuple[int, np.ndarray]:
        """Submission k's domain and vectors: drawn in chunks exactly as the market level draws them."""
        if self._chunk_cache is None or not self._chunk_cache[0] <= k < self._chunk_cache[0] + len(self._chunk_cache[1]):
            start, size = self._chunk_list[self._next_chunk]
            self._next_chunk += 1
            dom, x = self.world.draw_items(self.items_rng, size, self.sc.sim.per_batch)
            self._chunk_cache = (start, dom, x)
        start, dom, x = self._chunk_cache
        return int(dom[k - start]), x[k - start]

    def _ev_submit(self, _who: int, k: int) -> None:
        s, p = self.sc.sim, self.p
        b = s.per_batch
        domain, x = self._items_for(k)
        ids = np.arange(k * b, (k + 1) * b)
        items = [item_text(int(t)) for t in ids]
        client = self.pop.clients[k % len(self.pop.clients)]
        space = self.pop.space_of(k)
        pool = self.draws.get(space)
        if pool is None:  # the submitter learns before paying that no staked node serves the space
            self.rec.space_unserved(space)
            return
        sid, dh, pay_id, seed = round_ids(self.epoch, self.epoch_seed, items, nonce_of(k), client, space)
        inp = Input(shard_id=sid, epoch=self.epoch, submitter=client, pay_id=pay_id, pay_cert=b"", fee=s.fee,
                    data_hash=dh, nonce=nonce_of(k), modality="text", deadline_ms=self.now + p.round_abort_ms,
                    items=tuple(items), space=space)
        env = seal(inp, self.pop.signers[client], self.net_id)
        members = tuple(pool.sampler.sample(seed, pool.n))  # == sample_shard (tests/sim/test_draw.py)
        ctx = ShardContext(self.net_id, p, inp, seed, members, quorum(len(members)), space=pool.space)
        m = RoundMeta(k, client, env, ctx, None, domain, ids, x, self.world.region(x), self.now,
                      np.array([self.idx[pk] for pk in members]))
        self.meta[sid] = m
        self.network.warm([*m.members.tolist(), self.idx[client]])
        if not self.book.pay(client, escrow_id(sid), s.fee):
            m.settled = True
            return
        self.push(self.now + p.round_abort_ms + p.report_timeout_ms, "settle", -1, sid)
        session, out = self.table(self.idx[client]).submit(ctx, env, self.now)
        assert session.submitter is not None
        m.sub = session.submitter
        self._effects(self.idx[client], sid, out)

    # effects ------------------------------------------------------------------------------------------------------
    def _effects(self, who: int, sid: bytes, out: Sequence[SessionEffect]) -> None:
        """Carry out a round's effects, then re-arm its timer."""
        client = who >= self.nodes
        beh = "honest" if client else self.behaviour[who]
        idx = self.idx
        sends: list[tuple[int, Signed]] = []  # a run of Sends (a broadcast), scheduled in one go
        for e in out:
            if type(e) is Send:
                if beh == "honest":
                    sends.append((idx[e.to], e.env))
                else:
                    sends += self._twisted(who, sid, beh, idx[e.to], e.env)
                continue
            if sends:
                self._send(who, sends)
                sends = []
            if isinstance(e, Work):
                self._work(who, sid)
            elif isinstance(e, Verify):
                ok = self._check(sid, e.submission)
                self.push(self.now + self.sc.sim.verify_ms, "verified", who, (sid, e.member, ok))
            elif isinstance(e, EvidenceFound):
                key = evidence_key(e.evidence)
                if key not in self.evidence_seen:
                    self.evidence_seen.add(key)
                    kind = e.evidence.kind
                    self.items_pending.append(Item(self.epoch, kind, e.evidence.offender, key, 1))
            elif isinstance(e, Outcome):
                if e.role == "submitter":
                    self._on_client_outcome(sid, e)
            elif isinstance(e, Refused):
                self.rejections[e.error.reason] = self.rejections.get(e.error.reason, 0) + 1
        if sends:
            self._send(who, sends)
        self._arm(who, sid, self.session(who, sid))

    def _arm(self, who: int, sid: bytes, session: ShardSession | None) -> None:
        """Schedule the session's `handle_timer` for its deadline, unless that timer is already pending."""
        if session is not None:
            d = session.deadline
            if d is not None and self.timers.get((who, sid)) != d:
                self.timers[(who, sid)] = d
                heapq.heappush(self.heap, (d, next(self.seq), "timer", who, (sid, d)))

    def _twisted(self, who: int, sid: bytes, beh: str, to: int, env: Signed) -> list[tuple[int, Signed]]:
        """What a byzantine node sends instead of `env`."""
        if beh == "withhold" and isinstance(env.msg, Reveal):
            return []
        if beh == "equivocate" and isinstance(env.msg, Commit):
            twin = seal(Commit(sid, H("twin", env.msg.digest)), self.pop.signers[self.keys[who]], self.net_id)
            return [(to, env), (to, twin)]
        return [(to, env)]

    def _send(self, a: int, sends: list[tuple[int, Signed]]) -> None:
        """Schedule the delivery of each (receiver, envelope) from `a`; a broadcast's envelope is encoded once."""
        delay, heap, seq, now, decode = self.network.delay, self.heap, self.seq, self.now, self.decode
        last, data, size = None, b"", 256
        for b, env in sends:
            if decode and env is not last:
                last, data = env, env.encode()
                size = len(data)
            ms = delay(a, b, size, now)
            if ms is not None:
                heapq.heappush(heap, (now + ms, next(seq), "deliver", b, (a, data, env)))

    def _open(self, data: bytes) -> Signed:
        """`open_signed` once per envelope: every recipient would compute the same frozen result from the bytes."""
        env = self.opened.get(data)
        if env is None:
            env = open_signed(data, self.net_id, self.verify)  # a ProtocolError is not kept: it is raised again
            sid = getattr(env.msg, "shard_id", None)
            m = self.meta.get(sid)  # type: ignore[arg-type]
            if m is not None and not m.settled:
                self.opened[data] = env
                self.opened_by_shard.setdefault(sid, []).append(data)  # type: ignore[arg-type]
        return env

    # events -------------------------------------------------------------------------------------------------------
    def _ev_deliver(self, to: int, payload: tuple) -> None:
        src, data, env = payload
        self.deliveries += 1
        if self.decode:
            env = self._open(data)
        msg = env.msg
        sid = getattr(msg, "shard_id", None)
        m = self.meta.get(sid)  # type: ignore[arg-type]
        if m is None or m.settled:
            return  # stragglers after settlement: every round of that shard is over
        kind = type(msg)
        if kind is ProxyRequest:
            self._on_proxy_request(to, m, env)
            return
        table = self.table(to)
        if kind is Input:
            if sid not in table.sessions:
                self._effects(to, sid, table.open_member(m.ctx, env, self.now)[1])  # type: ignore[arg-type]
            return
        out = table.receive(self.keys[src], env, self.now)
        if to >= self.nodes and kind is Report:
            m.reports.setdefault(env.signer, env)
        if out:
            self._effects(to, sid, out)  # type: ignore[arg-type]
        else:  # most deliveries change only the session's state: just its timer may move
            self._arm(to, sid, table.sessions.get(sid))  # type: ignore[arg-type]

    def _ev_timer(self, who: int, payload: tuple) -> None:
        sid, d = payload
        if self.timers.get((who, sid)) != d:
            self.events -= 1  # superseded by a later deadline: nothing reaches the round, so it is no event
            return
        del self.timers[(who, sid)]
        session = self.session(who, sid)
        if session is not None:
            self._effects(who, sid, session.handle_timer(self.now))

    def _ev_work_done(self, who: int, payload: tuple) -> None:
        sid, sub = payload
        session = self.session(who, sid)
        if session is not None:
            self._effects(who, sid, session.work_done(sub, self.now))

    def _ev_verified(self, who: int, payload: tuple) -> None:
        sid, member, ok = payload
        session = self.session(who, sid)
        if session is not None:
            self._effects(who, sid, session.verified(member, ok, self.now))

    # work: routing, payloads, proxies -----------------------------------------------------------------------------
    def _payload(self, producer: int, m: RoundMeta) -> Payload:
        real = micro(self.world.realised_loss(np.full(len(m.ids), producer), m.ids, m.w))
        if self.pop.behaviour[producer] == "fake":
            real = real * 3 // 10
        losses = tuple(int(v) for v in real)
        pk = self.keys[producer]
        vec = self.world.payload_vectors(producer, m.ids)
        if vec is None:  # synthetic: unit rows near the item's routing vector, every producer in one space
            vec = m.x + 0.01 * np.float32(losses[0] / 1e6)
            vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
        emb = np.ascontiguousarray(vec, "<f4").tobytes()
        return Payload(model_id=H("model", pk), dim=vec.shape[1], embeddings=emb, views=H("views", pk + m.ctx.shard_id),
                       routing=m.x.astype("<f2").tobytes(), item_losses=losses, batch_loss=batch_loss(losses))

    def _compute_ms(self, node: int, m: RoundMeta) -> int:
        return int(self.world.ms_per_item[node]) * len(m.ids)

    def _work(self, who: int, sid: bytes) -> None:
        m = self.meta[sid]
        me = self.keys[who]
        if self.sc.sim.proxy and self.pop.behaviour[who] != "collapsed":
            own = int(self.world.estimate_micro(np.full(len(m.ids), who), m.w))
            prod, loss, cos = self.index[m.ctx.space.id].search(m.x, self.p.routing_k)
            neighbours = WinnerIndex.lists(prod, loss, cos, self.keys)
            # the member's own estimate comes from the world model (as its running average would), so no history
            pl = plan(neighbours, [[] for _ in neighbours], self.prices, self.p, me, m.ctx.members,
                      own_average_micro=own, tries=1)
            for c in pl.experts:  # one expert: after proxy_wait_ms we do our own work
                expert = self.idx[c.producer]
                # the expert gets proxy_wait_ms to answer; after that the member does its own work
                deadline = self.now + self.sc.sim.proxy_wait_ms
                req = proxy_request(self.pop.signers[me], self.net_id, m.input_env, c.price_bps, deadline)
                self.pending_proxy[(who, sid)] = True
                self._send(who, [(expert, req)])
                self.push(deadline, "proxy_timeout", who, sid)
                return
        self._own_work(who, m)

    def _own_work(self, who: int, m: RoundMeta) -> None:
        sub = Submission(shard_id=m.ctx.shard_id, member=self.keys[who], producer=self.keys[who],
                         payload=self._payload(who, m), proxy=None)
        self.push(self.now + self._compute_ms(who, m), "work_done", who, (m.ctx.shard_id, sub))

    def _on_proxy_request(self, expert: int, m: RoundMeta, env: Signed) -> None:
        desk = self.desks.get(expert)
        if desk is None:
            desk = self.desks[expert] = ProxyDesk(self.pop.signers[self.keys[expert]], self.net_id, self.verify,
                                                  self.p, int(self.world.price_bps[expert]))
        sponsor = self.idx[env.signer]
        req: ProxyRequest = env.msg
        back = int(self.network.median(expert, sponsor))
        if self.pop.serves[expert] != m.ctx.space.id:  # as the daemon's expert: only the spaces it serves
            got: object = Refusal("space", f"this node does not serve space {m.ctx.space.id}")
        elif self.now + self._compute_ms(expert, m) + back >= req.deadline_ms:
            got = Refusal("expired", "cannot answer before the sponsor's deadline")  # it knows its speed
        else:
            got = desk.accept(env, m.ctx.members, self.now)
        if isinstance(got, Accepted):
            sub = desk.sign(m.ctx.shard_id, env.signer, self._payload(expert, m))
            size = len(sub.payload.embeddings) + len(sub.payload.routing) + 512
            delay = self.network.delay(expert, sponsor, size, self.now)
            if delay is not None:
                self.push(self.now + self._compute_ms(expert, m) + delay, "proxy_reply", sponsor,
                          (m.ctx.shard_id, sub))
        else:
            delay = self.network.delay(expert, sponsor, 128, self.now)
            if delay is not None:
                self.push(self.now + delay, "proxy_reply", sponsor, (m.ctx.shard_id, None))

    def _ev_proxy_reply(self, who: int, payload: tuple) -> None:
        sid, sub = payload
        if not self.pending_proxy.pop((who, sid), False):
            return  # timed out: the sponsor already did its own work
        session = self.session(who, sid)
        if session is None:
            return
        if sub is None:
            self._own_work(who, self.meta[sid])
        else:
            self._effects(who, sid, session.work_done(sub, self.now))

    def _ev_proxy_timeout(self, who: int, sid: bytes) -> None:
        if self.pending_proxy.pop((who, sid), False):
            self._own_work(who, self.meta[sid])

    def _check(self, sid: bytes, sub: Submission) -> bool:
        """Lazy verification: re-derive the producer's losses from the world (the re-execution stand-in)."""
        m = self.meta[sid]
        producer = self.idx.get(sub.producer)
        if producer is None or producer >= self.sc.sim.nodes:
            return False
        real = micro(self.world.realised_loss(np.full(len(m.ids), producer), m.ids, m.w))
        return tuple(int(v) for v in real) == sub.payload.item_losses

    # outcomes, settlement, epochs ---------------------------------------------------------------------------------
    def _on_client_outcome(self, sid: bytes, o: Outcome) -> None:
        m = self.meta[sid]
        if o.status == "certified" and m.certified_at is None:
            m.certified_at = self.now
            # stragglers' identical reports still arrive: settle after the report timeout with all of them
            self.push(self.now + self.p.report_timeout_ms, "settle", -1, sid)

    def _ev_settle(self, _who: int, sid: bytes) -> None:
        m = self.meta[sid]
        if m.settled:
            self.events -= 1  # the fallback settlement of a round already settled does nothing: no event
            return
        cert = m.sub.certificate if m.sub is not None else None
        if cert is not None:
            full = assemble_certificate(cert.report, list(m.reports.values()), m.ctx.q) or cert
            full.check(self.net_id, self.verify, list(m.ctx.members), m.ctx.q)
            self._finish(m, full)
        else:
            self._finish(m, None)

    def _free(self, m: RoundMeta) -> None:
        """The shard's sessions and what the driver kept for them are done with: free them."""
        m.settled = True
        for data in self.opened_by_shard.pop(m.ctx.shard_id, ()):
            del self.opened[data]
        for i in m.members:
            t = self.shards.get(int(i))
            if t is not None:
                t.close(m.ctx.shard_id)
            self.pending_proxy.pop((int(i), m.ctx.shard_id), None)
            self.timers.pop((int(i), m.ctx.shard_id), None)

    def _finish(self, m: RoundMeta, cert) -> None:
        self._free(m)
        s, rec = self.sc.sim, self.rec
        esc = escrow_id(m.ctx.shard_id)
        sid = m.ctx.shard_id
        honest = np.array([self.network.online[i] and self.pop.behaviour[i] == "honest" for i in m.members])
        own = batch_of(micro(self.world.realised_loss(m.members[:, None], np.broadcast_to(m.ids, (len(m.members),
                       len(m.ids))), np.broadcast_to(m.w, (len(m.members),) + m.w.shape))))
        rand_pos = int(np.where(honest, own, BIG).argmin())
        rand = own[rand_pos] / 1e6 if honest.any() else float("nan")
        kind = self.world.kind
        if esc in self.book.escrows:
            if cert is None:
                self.book.refund(esc)
            else:
                r = cert.report
                split = self.book.settle(esc, r.winner, r.producer, r.producer_share_bps,
                                         [pk for pk, _ in cert.signatures], r.strikes, r.faulty)
                for pk, amount in split.items():
                    if pk in self.pop.index_of:
                        rec.earned[self.pop.index_of[pk]] += amount
                for pk in r.strikes:
                    self.items_pending.append(Item(r.epoch, "strike", pk, cert.id, 1))
                    rec.strikes[self.idx[pk]] += 1
                for pk in r.faulty:
                    self.items_pending.append(Item(r.epoch, "faulty", pk, cert.id, 1))
                    rec.faulty[self.idx[pk]] += 1
        ok = cert is not None
        mk = cert.report.loss_micro / 1e6 if ok else float("nan")
        producer = self.idx[cert.report.producer] if ok else 0
        winner = self.idx[cert.report.winner] if ok else 0
        if ok:
            rec.wins[producer, m.domain] += 1
            vec = routing_vectors(np.frombuffer(cert.report.routing, dtype="<f2").reshape(len(m.ids), -1))
            self.index[m.ctx.space.id].add(vec, np.full(len(m.ids), producer), np.array(cert.report.item_losses))
            end = m.certified_at if m.certified_at is not None else self.now
            rec.latency.append(np.array([end - m.start], dtype=np.float64))
        rec.certified.append(np.array([ok]))
        rec.add_policy("market", np.array([mk]), np.array([ok and producer != winner]),
                       np.array([kind[producer] == "specialist"]))
        rec.add_policy("random", np.array([rand]), np.array([False]), np.array([kind[m.members[rand_pos]] == "specialist"]))
        ids, w = m.ids[None, :], m.w[None]
        space = m.ctx.space.id
        self.rec.space_round(space, ok, self.world.label(producer), self.pop.cheat(producer))
        best = self.baselines.oracle(space, w, self.network.online[:s.nodes])
        rec.add_policy("oracle", expert_batch_loss(self.world, best, ids, w) / 1e6, np.array([True]),
                       kind[best] == "specialist")
        ce = self.baselines.route(space, m.x[None], self.network.online[:s.nodes])
        use = ce >= 0
        cb = np.where(use, expert_batch_loss(self.world, ce, ids, w) / 1e6, rand)
        rec.add_policy("cbtm", cb, use, np.where(use, kind[np.maximum(ce, 0)], kind[m.members[rand_pos]]) == "specialist")
        if s.trace:
            self.trace.append({"k": m.k, "space": space, "shard_id": sid.hex(),
                               "members": [self.keys[i].hex() for i in m.members],
                               "winner": cert.report.winner.hex() if ok else None,
                               "producer": cert.report.producer.hex() if ok else None,
                               "loss": cert.report.loss_micro if ok else None,
                               "strikes": sorted(pk.hex() for pk in cert.report.strikes) if ok else []})

    def _ev_epoch(self, _who: int, e: int) -> None:
        """Epoch e begins: items tagged e-1 and earlier fix the table of epoch e+1."""
        done = e - 1
        self.book.items.extend(self.items_pending)
        self.items_pending = []
        lost = self.book.end_epoch(done)
        for pk, amount in lost.items():
            self.rec.slashed[self.pop.index_of[pk]] += amount
        self.tables[e + 1] = dict(self.book.stakes)
        self.rec.specialization.append((done, self.world.specialization()))
        self.rec.supply.append((done, self.book.supply()))
        self.baselines.fit(e)
        for desk in self.desks.values():
            desk.prune(self.now)
        self.epoch = e
        self.epoch_seed = next_epoch_seed(e, self.epoch_seed)
        self._tables_for_epoch()

    def _ev_churn(self, _who: int, _payload: object) -> None:
        n = self.sc.sim.nodes
        self.network.set_online(self.network.uniform.many(n) >= self.sc.net.churn)
