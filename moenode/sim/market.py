"""The market level: one step per round, with the protocol's real decisions, fast enough for a million rounds.

Theory of operation
-------------------
Submissions are processed in chunks, and a chunk's submissions space by space: each names a vector space, and its
shard is the protocol's own draw from the stake that serves that space: the real `shard_seed` of its (epoch seed,
data hash, nonce, pay id) and `ShardSampler`, which is bit-for-bit `sample_shard`, over the pool the daemon's
`SpaceBook.power_in` gives for the space (`SpaceShards`, cached per epoch); a space no staked node serves is refused
before paying. Every shard member's routing goes through `moenode.core.routing.rank` once per submission on the
space's winner index (all honest members hold the same index) and the rule's `decide` per member (vectorised in
`decide_many`, tested equal to `decide`). An expert serves one sponsor per shard (the first by public key, as the
message level does with equal latencies) and never a shard it is in.

The round itself is abstracted into its outcome, following `moenode.core.round`, in named steps:
- `_shards`: the members, their realised losses and own estimates.
- `_route`: whom the members ask, and when the members refused or left unanswered start their own work.
- `_vote`: commit times are compute times; a proxied member waits for its expert plus two hops, a refused one starts
  its own work two hops late, an unanswered one after `proxy_wait_ms` (an expert refuses what it cannot deliver in
  time, and serves one sponsor per shard, the first request by public key); the vote closes when all live members
  committed, or at `t_q + min(max(grace_min, t_q - t_first), grace_cap)`, or at the commit deadline; later commits
  are rejected (strikes). Fewer than q accepted commits: the round fails and the escrow is refunded.
- `_evaluate`: equivocators are caught by their two commits (evidence, never accepted, and named faulty by the
  certificate, as the core's report names every member with evidence against it in the round); withholders commit
  but never reveal (strikes); fake-score members claim a loss their vectors do not support and fail verification
  (faulty) when they are tried; evaluation takes candidates by (claimed batch loss, member) exactly as the core
  does. Where the world knows the models' vectors (the real mode) each candidate first passes the core's in-round
  space check (`spaces.off_space`) on its revealed vectors against the others not yet shown to fail verification;
  one that fails is passed over, neither struck nor faulty. In the synthetic world every producer of a space reveals
  vectors near the items' own, so the check passes everyone and is skipped. The certificate is signed by every live
  member except equivocators and accepted withholders, whose own view of the round differs (a member struck for
  lateness still reaches the same report, as the core does); fewer than q such signers and no certificate forms.
- `_settle`: `settle_split` pays; strikes, faulty marks and evidence slash at the epoch transition
  (`checkpoint.next_table`).
The space's winner index learns each chunk's certificates after the chunk (a gossip delay of one chunk).

On the same item stream and the same realised losses it also evaluates the other policies, inside each space:
`random` (the shard as drawn, no proxies), `oracle` and `cbtm` (see `moenode.sim.policies`).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from moenode.core.checkpoint import Item
from moenode.core.crypto import H
from moenode.core.genesis import Params, next_epoch_seed
from moenode.core.routing import Candidate, rank
from moenode.core.selection import voting_power
from moenode.core.spaces import off_space
from moenode.sim.book import Book, escrow_id
from moenode.sim.config import Scenario
from moenode.sim.draw import SpacePool, SpaceShards
from moenode.sim.index import WinnerIndex
from moenode.sim.metrics import Recorder
from moenode.sim.policies import BIG, Baselines, expert_batch_loss
from moenode.sim.population import Population, item_text, nonce_of, round_ids
from moenode.sim.world import micro, routing_vectors


def decide_many(own: np.ndarray, ranked: list[Candidate], params: Params) -> np.ndarray:
    """`[decide(o, ranked, params).proxy for o in own]`, vectorised (members are never in `ranked`)."""
    if not ranked:
        return np.zeros(len(own), dtype=bool)
    return np.asarray(own.astype(np.int64) * 10_000 > params.routing_margin_bps * ranked[0].loss_micro)


@dataclass(frozen=True)
class Batch:
    """One chunk of the item stream and the space each submission names."""

    first: int  # the number of the chunk's first submission
    dom: np.ndarray  # (B,) domain
    ids: np.ndarray  # (B, b) item ids
    x: np.ndarray  # (B, b, D) routing vectors
    w: np.ndarray  # (B, b, K) region weights
    spaces: list[str]


@dataclass(frozen=True)
class Shards:
    """The rounds of one space in one chunk (G of them): who sits in each shard and what they would compute."""

    pool: SpacePool
    rows: np.ndarray  # (G,) positions in the chunk
    sids: list[bytes]
    M: np.ndarray  # (G, n) member node indices, pubkey order
    ids: np.ndarray
    x: np.ndarray
    w: np.ndarray
    dom: np.ndarray
    real: np.ndarray  # (G, n, b) realised item losses, micro
    own: np.ndarray  # (G, n) own batch loss, micro
    est: np.ndarray  # (G, n) own estimate, micro
    beh: np.ndarray  # (G, n) behaviour
    online: np.ndarray  # (G, n)
    member_keys: list[list[bytes]]


@dataclass(frozen=True)
class Routes:
    """Per shard, the expert that serves it (-1: none), its sponsor, who asked, and when the others start."""

    expert: np.ndarray
    sponsor: np.ndarray
    asked: np.ndarray  # (G, n) members that sent a ProxyRequest
    delay: np.ndarray  # (G,) when the members refused or left unanswered start their own work
    score: np.ndarray  # (G,) the rule's expected gain (the routing curve's order)
    has: np.ndarray  # (G,) an expert serves the shard
    ex_real: np.ndarray  # (G, b) the expert's realised item losses
    ex_batch: np.ndarray  # (G,) and its batch loss


@dataclass(frozen=True)
class Votes:
    """The commits, the vote and the reveals."""

    claimed: np.ndarray  # (G, n) claimed batch loss
    truthful: np.ndarray  # (G, n) the batch loss the vectors support
    fake: np.ndarray  # (G, n) the payload claims what its vectors do not support
    vote_at: np.ndarray  # (G,)
    accepted: np.ndarray
    revealed: np.ndarray
    signing: np.ndarray  # (G, n) members that sign the round's report
    enough: np.ndarray  # (G,) at least q accepted commits
    equiv: np.ndarray  # (G, n) live equivocators


@dataclass(frozen=True)
class Verdicts:
    """The outcome: certified or not, the winner, its producer, the strikes and faulty marks."""

    ok: np.ndarray
    win: np.ndarray  # (G,) the winner's position in the shard
    winner: np.ndarray  # (G,) node indices
    producer: np.ndarray
    win_loss: np.ndarray
    faulty: np.ndarray  # (G, n)
    struck: np.ndarray  # (G, n)


class ChunkScores:
    """Per-submission policy outcomes of one chunk, filled space by space, recorded in submission order."""

    def __init__(self, size: int):
        self.served = np.zeros(size, dtype=bool)  # the submission paid and ran (its space has stake)
        self.cols: dict[str, np.ndarray] = {}

    def put(self, rows: np.ndarray, **cols: np.ndarray) -> None:
        self.served[rows] = True
        for name, values in cols.items():
            v = np.asarray(values)
            if name not in self.cols:
                self.cols[name] = np.zeros(len(self.served), dtype=v.dtype)
            self.cols[name][rows] = v

    def record(self, rec: Recorder) -> None:
        if not self.served.any():
            return
        c = {name: col[self.served] for name, col in self.cols.items()}
        size = int(self.served.sum())
        rec.add_policy("random", c["random"], np.zeros(size, bool), c["random_spec"])
        rec.add_policy("market", c["market"], c["market_proxied"], c["market_spec"])
        rec.certified.append(c["ok"])
        rec.latency.append(c["latency"][c["ok"]])
        rec.add_policy("oracle", c["oracle"], np.ones(size, bool), c["oracle_spec"])
        rec.add_policy("cbtm", c["cbtm"], c["cbtm_use"], c["cbtm_spec"])
        rec.curve_score.append(c["curve_score"])
        rec.curve_proxied_loss.append(c["curve_loss"])


class MarketSim:
    def __init__(self, sc: Scenario, pop: Population | None = None):
        self.sc, self.p = sc, sc.params
        self.pop = pop or Population.build(sc)
        s = sc.sim
        self.rng = np.random.default_rng(s.seed + 1)  # churn
        self.items_rng = np.random.default_rng(s.seed)  # the item stream, shared with the message level
        self.world = self.pop.world
        keys = self.pop.keys
        self.book = Book(self.p, {c: s.client_balance for c in self.pop.clients}, {k: s.stake for k in keys})
        self.serving = {space: self.pop.serving(space) for space in self.pop.book.ids()}
        self.index = {space: WinnerIndex(self.world.dim, s.index_cap) for space in self.serving}  # routing per space
        self.classes = [self.pop.node_class(i) for i in range(s.nodes)]
        self.rec = Recorder(s.nodes, self.world.domains, self.classes)
        self.rec.expect_spaces(self.pop.cheats_by_space())
        self.prices = {k: int(self.world.price_bps[i]) for i, k in enumerate(keys)}
        self.keys_arr = np.array(keys + [b""], dtype=object)[:-1]  # object array of the public keys
        self.online = np.ones(s.nodes, dtype=bool)
        self.epoch = 0
        self.epoch_seed = self.pop.genesis.seed0()
        self.tables: dict[int, dict[bytes, int]] = {0: dict(self.book.stakes), 1: dict(self.book.stakes)}
        self._set_epoch_tables()
        self.strike_count: dict[bytes, int] = {}
        self.evidence: set[bytes] = set()
        self.faulty_marks: set[bytes] = set()
        self.domain_reward = np.zeros(self.world.domains)
        self.baselines = Baselines(self.world, self.serving, self.index, s.cbtm_clusters, self.p.routing_min_hits,
                                   s.seed, s.oracle_shortlist)
        self.trace: list[dict] = []
        self.done = 0
        self.events = 0

    # epochs ------------------------------------------------------------------------------------------------------
    def _set_epoch_tables(self) -> None:
        self.draws = SpaceShards(self.pop.book, voting_power(self.tables[self.epoch]), self.pop.index_of)

    def _end_epoch(self) -> None:
        e = self.epoch
        items = [Item(e, "strike", pk, H("strikes", pk + e.to_bytes(8, "big")), c)
                 for pk, c in self.strike_count.items()]
        items += [Item(e, "equivocation", pk, H("ev", pk + e.to_bytes(8, "big")), 1) for pk in self.evidence]
        items += [Item(e, "faulty", pk, H("faulty", pk + e.to_bytes(8, "big")), 1) for pk in self.faulty_marks]
        self.strike_count, self.evidence, self.faulty_marks = {}, set(), set()
        self.book.items.extend(items)
        lost = self.book.end_epoch(e)
        for pk, amount in lost.items():
            self.rec.slashed[self.pop.index_of[pk]] += amount
        self.tables[e + 2] = dict(self.book.stakes)  # effective two epochs on, as the checkpoint rule says
        # operators invest, the oracle's shortlist and cbtm's clusters follow the new skills and history
        self.world.invest(self.domain_reward, self.sc.sim.invest_rate)
        self.domain_reward[:] = 0
        self.rec.specialization.append((e, self.world.specialization()))
        self.rec.supply.append((e, self.book.supply()))
        self.baselines.refresh()
        self.baselines.fit(self.epoch)
        if self.sc.net.churn > 0:  # nodes leave and (re)join between epochs
            self.online = self.rng.random(self.sc.sim.nodes) >= self.sc.net.churn
        self.epoch = e + 1
        self.epoch_seed = next_epoch_seed(self.epoch, self.epoch_seed)
        self._set_epoch_tables()

    # the run -----------------------------------------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], None] | None = None) -> dict:
        s = self.sc.sim
        t0 = time.perf_counter()
        while self.done < s.submissions:
            b = min(s.chunk, s.submissions - self.done, s.epoch_submissions - self.done % s.epoch_submissions)
            self._chunk(b)
            self.done += b
            if self.done % s.epoch_submissions == 0:
                self._end_epoch()
            if progress:
                progress(self.done, s.submissions)
        if self.done % s.epoch_submissions:
            self._end_epoch()  # the last, partial epoch is checkpointed too
        for esc in list(self.book.escrows):
            self.book.refund(esc)
        self.book.check()
        self.rec.quality = self.world.delivered_quality()
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "events": self.events}

    def _chunk(self, B: int) -> None:
        """B submissions: drawn, then run space by space; the winner indexes learn after the chunk."""
        batch = self._draw(B)
        scores = ChunkScores(B)
        learned: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        traced = len(self.trace)
        for space in dict.fromkeys(batch.spaces):
            rows = np.array([i for i, sp in enumerate(batch.spaces) if sp == space], dtype=np.int64)
            pool = self.draws.get(space)
            if pool is None:  # the submitter learns before paying that no staked node serves the space
                for _ in rows:
                    self.rec.space_unserved(space)
                continue
            sh = self._shards(batch, rows, pool)
            rt = self._route(sh)
            vt = self._vote(sh, rt)
            vd = self._evaluate(sh, rt, vt)
            learned[space] = self._settle(sh, rt, vt, vd)
            scores.put(rows, **self._score(sh, rt, vt, vd))
        self.trace[traced:] = sorted(self.trace[traced:], key=lambda t: t["k"])
        for space, parts in learned.items():
            if parts:
                self.index[space].add(*(np.concatenate(part) for part in zip(*parts)))
        scores.record(self.rec)
        self.events += B  # one step per round at this level

    def _draw(self, B: int) -> Batch:
        b = self.sc.sim.per_batch
        dom, x = self.world.draw_items(self.items_rng, B, b)
        ids = (self.done * b + np.arange(B * b)).reshape(B, b)
        return Batch(self.done, dom, ids, x, self.world.region(x), [self.pop.space_of(self.done + i) for i in range(B)])

    def _shards(self, batch: Batch, rows: np.ndarray, pool: SpacePool) -> Shards:
        """The protocol's draw for every submission of one space, and what each member would compute."""
        b, w_, clients = self.sc.sim.per_batch, self.world, self.pop.clients
        M = np.empty((len(rows), pool.n), dtype=np.int64)
        sids: list[bytes] = []
        for g, i in enumerate(rows.tolist()):
            k = batch.first + i
            items = [item_text(int(t)) for t in batch.ids[i]]
            sid, _, _, seed = round_ids(self.epoch, self.epoch_seed, items, nonce_of(k), clients[k % len(clients)],
                                        pool.space.id)
            sids.append(sid)
            M[g] = pool.node[np.sort(pool.sampler.indices(seed, pool.n))]  # pool order is pubkey order
        ids, x, w = batch.ids[rows], batch.x[rows], batch.w[rows]
        real = micro(w_.realised_loss(M[:, :, None], ids[:, None, :], w[:, None, :, :]))  # (G, n, b)
        own = (2 * real.sum(axis=2) + b) // (2 * b)  # batch_loss rounding, as the Payload schema requires
        est = w_.estimate_micro(M[:, :, None], w[:, None, :, :])
        return Shards(pool, rows, sids, M, ids, x, w, batch.dom[rows], real, own, est, self.pop.behaviour[M],
                      self.online[M], self.keys_arr[M].tolist())

    def _route(self, sh: Shards) -> Routes:
        """The space's winner index's neighbours, ranked once per shard, decided per member."""
        s, p, w_ = self.sc.sim, self.p, self.world
        G, b = sh.ids.shape
        prod, nloss, ncos = self.index[sh.pool.space.id].search(sh.x.reshape(G * b, -1), p.routing_k)
        lists = WinnerIndex.lists(prod, nloss, ncos, self.pop.keys)
        expert, sponsor = np.full(G, -1, dtype=np.int64), np.full(G, -1, dtype=np.int64)
        asked, delay, score = np.zeros(sh.M.shape, dtype=bool), np.zeros(G), np.zeros(G)
        can_route = sh.online & (sh.beh != "collapsed")
        est_min = sh.est.min(axis=1).tolist()
        for i in range(G if s.proxy else 0):
            ranked = rank(lists[i * b:(i + 1) * b], self.prices, p, exclude=sh.member_keys[i])
            if not ranked:
                continue
            want = decide_many(sh.est[i], ranked, p) & can_route[i]
            score[i] = est_min[i] - ranked[0].loss_micro  # expected gain over the shard's best own estimate
            if want.any():
                e = self.pop.index_of[ranked[0].producer]
                asked[i] = want
                if not self.online[e]:
                    delay[i] = s.proxy_wait_ms  # no answer: the members wait it out
                elif 2 * s.link_ms + w_.ms_per_item[e] * b >= s.proxy_wait_ms:
                    delay[i] = 2 * s.link_ms  # the expert knows it cannot answer in time and refuses
                else:
                    delay[i] = 2 * s.link_ms  # the others are refused: one sponsor per shard
                    expert[i] = e
                    sponsor[i] = int(np.argmax(want))  # the first request by public key arrives first
        has = expert >= 0
        ex_real = np.zeros((G, b), dtype=np.int64)
        if has.any():
            ex_real[has] = micro(w_.realised_loss(expert[has][:, None], sh.ids[has], sh.w[has]))
        ex_batch = (2 * ex_real.sum(axis=1) + b) // (2 * b)
        return Routes(expert, sponsor, asked, delay, score, has, ex_real, ex_batch)

    def _vote(self, sh: Shards, rt: Routes) -> Votes:
        """Claims, commit times, the vote, acceptance and reveals."""
        s, p, w_ = self.sc.sim, self.p, self.world
        G, n = sh.M.shape
        b = sh.ids.shape[1]
        has, sponsor, expert = rt.has, rt.sponsor, rt.expert
        claimed = sh.own.copy()
        claimed[has, sponsor[has]] = rt.ex_batch[has]
        truthful = claimed.copy()
        fake = sh.beh == "fake"
        fake[has, sponsor[has]] = self.pop.behaviour[expert[has]] == "fake"  # a proxied payload is the expert's
        claimed[fake] = claimed[fake] * 3 // 10
        t_commit = (w_.ms_per_item[sh.M] * b).astype(np.float64) + np.where(rt.asked, rt.delay[:, None], 0.0)
        t_commit[has, sponsor[has]] = w_.ms_per_item[expert[has]] * b + 2 * s.link_ms
        t_commit[~sh.online] = np.inf
        t_arr = np.where(np.isfinite(t_commit), t_commit + s.link_ms, np.inf)  # as the others see it
        # the commit deadline, as ShardContext.commit_deadline computes it (every batch here is under one MiB)
        deadline = float(p.commit_timeout_ms + p.commit_ms_per_mib)
        t_arr = np.where(t_arr <= deadline, t_arr, np.inf)  # a commit after the deadline never counts
        ts = np.sort(t_arr, axis=1)
        n_commit = np.isfinite(ts).sum(axis=1)
        q = sh.pool.q
        t_first, t_q = ts[:, 0], ts[:, q - 1]
        grace = np.minimum(np.maximum(p.grace_min_ms, t_q - t_first), p.grace_cap_ms)
        last = np.where(n_commit > 0, ts[np.arange(G), np.maximum(n_commit - 1, 0)], np.inf)
        vote_at = np.where(n_commit >= n, last, np.where(n_commit >= q, np.minimum(t_q + grace, deadline), deadline))
        accepted = (t_arr <= vote_at[:, None]) & (sh.beh != "equivocate")
        revealed = accepted & (sh.beh != "withhold")
        # q identical reports: withholders and equivocators sign a different report (they count their own reveal)
        signing = sh.online & (sh.beh != "equivocate") & ~((sh.beh == "withhold") & accepted)
        equiv = (sh.beh == "equivocate") & sh.online
        return Votes(claimed, truthful, fake, vote_at, accepted, revealed, signing, accepted.sum(axis=1) >= q, equiv)

    def _evaluate(self, sh: Shards, rt: Routes, vt: Votes) -> Verdicts:
        """Candidates by (claimed loss, member); the lowest that passes the space check and verification wins."""
        G, n = sh.M.shape
        rows = np.arange(G)
        cv = np.where(vt.revealed & ~vt.fake, vt.claimed, BIG)
        win = cv.argmin(axis=1)
        found = cv[rows, win] < BIG
        win_claim = cv[rows, win]
        pos = np.arange(n)[None, :]
        tried = (vt.claimed < win_claim[:, None]) | ((vt.claimed == win_claim[:, None]) & (pos < win[:, None]))
        failed = vt.revealed & vt.fake & tried  # verified and found false
        if self.world.reveals_vectors:
            win, found, failed = self._space_checked(sh, rt, vt)
        ok = vt.enough & found & (vt.signing.sum(axis=1) >= sh.pool.q)
        # a report names faulty the members that failed verification and those with evidence against them
        faulty = (failed | vt.equiv) & ok[:, None]
        struck = ((~vt.accepted) | (vt.accepted & ~vt.revealed)) & ~faulty & ~vt.equiv
        winner = sh.M[rows, win]
        producer = np.where(rt.has & (rt.sponsor == win), rt.expert, winner)
        return Verdicts(ok, win, winner, producer, vt.truthful[rows, win], faulty, struck)

    def _space_checked(self, sh: Shards, rt: Routes, vt: Votes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The core's evaluation walk with the in-round space check on the revealed vectors: (winner position,
        whether one was found, who failed verification)."""
        G, n = sh.M.shape
        win, found, failed = np.zeros(G, dtype=np.int64), np.zeros(G, dtype=bool), np.zeros((G, n), dtype=bool)
        for i in range(G):
            keys = sh.member_keys[i]
            shown: dict[bytes, tuple[int, bytes]] = {}  # revealed candidates not shown to fail verification
            for j in np.flatnonzero(vt.revealed[i]).tolist():
                producer = rt.expert[i] if rt.has[i] and rt.sponsor[i] == j else sh.M[i, j]
                vec = self.world.payload_vectors(int(producer), sh.ids[i])
                assert vec is not None
                shown[keys[j]] = (vec.shape[1], np.ascontiguousarray(vec, "<f4").tobytes())
            for j in sorted(np.flatnonzero(vt.revealed[i]).tolist(), key=lambda j: (int(vt.claimed[i, j]), j)):
                if off_space(sh.pool.space, keys[j], shown):
                    continue  # passed over: it cannot win, and is neither struck nor faulty
                if vt.fake[i, j]:
                    failed[i, j] = True
                    del shown[keys[j]]
                    continue
                win[i], found[i] = j, True
                break
        return win, found, failed

    def _settle(self, sh: Shards, rt: Routes, vt: Votes, vd: Verdicts
                ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pay, refund, strike and mark; returns what the space's winner index learns (vectors, producers, losses)."""
        s, keys, book, rec = self.sc.sim, self.pop.keys, self.book, self.rec
        clients, space = self.pop.clients, sh.pool.space.id
        learned: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        earned: dict[bytes, int] = {}
        any_equiv, any_struck, any_faulty = (np.any(a, axis=1).tolist() for a in (vt.equiv, vd.struck, vd.faulty))
        for g, i in enumerate(sh.rows.tolist()):
            k, members, esc = self.done + i, sh.M[g], escrow_id(sh.sids[g])
            if not book.pay(clients[k % len(clients)], esc, s.fee):
                continue
            if any_equiv[g]:
                self.evidence.update(keys[m] for m in members[vt.equiv[g]])
            producer, winner = int(vd.producer[g]), int(vd.winner[g])
            rec.space_round(space, bool(vd.ok[g]), self.world.label(producer), self.pop.cheat(producer))
            if not vd.ok[g]:
                book.refund(esc)
                self._trace(k, sh, g, None)
                continue
            share = int(self.world.price_bps[producer]) if producer != winner else 0
            signers = [k_ for k_, sg in zip(sh.member_keys[g], vt.signing[g]) if sg]  # late members sign it too
            unpaid_struck = tuple(keys[m] for m in members[vd.struck[g]]) if any_struck[g] else ()
            unpaid_faulty = tuple(keys[m] for m in members[vd.faulty[g]]) if any_faulty[g] else ()
            for pk, amount in book.settle(esc, keys[winner], keys[producer], share, signers, unpaid_struck,
                                          unpaid_faulty).items():
                earned[pk] = earned.get(pk, 0) + amount
            for m in members[vd.struck[g]] if any_struck[g] else ():
                self.strike_count[keys[m]] = self.strike_count.get(keys[m], 0) + 1
            if any_faulty[g]:
                self.faulty_marks.update(keys[m] for m in members[vd.faulty[g]])
            rec.wins[producer, sh.dom[g]] += 1
            self.world.deliver(space, producer, sh.ids[g])
            self.domain_reward[sh.dom[g]] += s.fee
            loss = rt.ex_real[g] if producer != winner else sh.real[g, vd.win[g]]
            learned.append((routing_vectors(sh.x[g]), np.full(len(loss), producer), loss))
            self._trace(k, sh, g, vd)
        for pk, amount in earned.items():
            rec.earned[self.pop.index_of[pk]] += amount
        rec.strikes += np.bincount(sh.M[vd.struck], minlength=s.nodes)
        rec.faulty += np.bincount(sh.M[vd.faulty], minlength=s.nodes)
        return learned

    def _trace(self, k: int, sh: Shards, g: int, vd: Verdicts | None) -> None:
        if not self.sc.sim.trace:
            return
        keys = self.pop.keys
        ok = vd is not None and bool(vd.ok[g])
        self.trace.append({
            "k": k, "space": sh.pool.space.id, "shard_id": sh.sids[g].hex(),
            "members": [keys[m].hex() for m in sh.M[g]],
            "winner": keys[vd.winner[g]].hex() if vd is not None and ok else None,
            "producer": keys[vd.producer[g]].hex() if vd is not None and ok else None,
            "loss": int(vd.win_loss[g]) if vd is not None and ok else None,
            "strikes": sorted(keys[m].hex() for m in sh.M[g][vd.struck[g]]) if vd is not None and ok else []})

    def _score(self, sh: Shards, rt: Routes, vt: Votes, vd: Verdicts) -> dict[str, np.ndarray]:
        """Every policy's loss on the same batches and realised losses, inside the space."""
        s, w_, kind = self.sc.sim, self.world, self.world.kind
        G = len(sh.rows)
        rows, space = np.arange(G), sh.pool.space.id
        honest_ok = sh.online & (sh.beh == "honest")
        rand = np.where(honest_ok, sh.own, BIG).min(axis=1)
        rand_pos = np.where(honest_ok, sh.own, BIG).argmin(axis=1)
        rand_f = np.where(rand < BIG, rand / 1e6, np.nan)
        rand_spec = kind[sh.M[rows, rand_pos]] == "specialist"
        best = self.baselines.oracle(space, sh.w, self.online)
        ce = self.baselines.route(space, sh.x, self.online)
        use = ce >= 0
        prox = np.where(rt.has, np.minimum(rt.ex_batch, rand), rand)  # proxying each to its ranked expert
        return {
            "random": rand_f, "random_spec": rand_spec,
            "market": np.where(vd.ok, vd.win_loss / 1e6, np.nan), "market_proxied": vd.ok & (vd.producer != vd.winner),
            "market_spec": kind[vd.producer] == "specialist", "ok": vd.ok,
            "latency": vt.vote_at + 3 * s.link_ms + s.verify_ms,
            "oracle": expert_batch_loss(w_, best, sh.ids, sh.w) / 1e6, "oracle_spec": kind[best] == "specialist",
            "cbtm": np.where(use, expert_batch_loss(w_, ce, sh.ids, sh.w) / 1e6, rand_f), "cbtm_use": use,
            "cbtm_spec": np.where(use, kind[np.maximum(ce, 0)] == "specialist", rand_spec),
            "curve_score": np.where(rt.has, rt.score, 0.0),
            "curve_loss": np.where(rand < BIG, prox / 1e6, np.nan)}
