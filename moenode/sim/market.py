"""The market level: one step per round, with the protocol's real decisions, fast enough for a million rounds.

Theory of operation
-------------------
Submissions are processed in chunks. For every submission the shard is the protocol's own draw: the real
`shard_seed` of its (epoch seed, data hash, nonce, pay id) and `ShardSampler`, which is bit-for-bit `sample_shard`
on the epoch's `voting_power` (cached per epoch). Every shard member's routing goes through
`moenode.core.routing.rank` once per submission (all honest members hold the same winner index) and the rule's
`decide` per member (vectorised in `decide_many`, tested equal to `decide`). An expert serves one sponsor per shard
(the first by public key, as the message level does with equal latencies) and never a shard it is in.

The round itself is abstracted into its outcome, following `moenode.core.round`:
- commit times are compute times; a proxied member waits for its expert plus two hops, a refused one starts its own
  work two hops late, an unanswered one after `proxy_wait_ms` (an expert refuses what it cannot deliver in time,
  and serves one sponsor per shard, the first request by public key); the vote closes when all
  live members committed, or at `t_q + min(max(grace_min, t_q - t_first), grace_cap)`, or at the commit deadline;
  later commits are rejected (strikes). Fewer than q accepted commits: the round fails and the escrow is refunded.
- equivocators are caught by their two commits (evidence, never accepted, and named faulty by the certificate, as
  the core's report names every member with evidence against it in the round); withholders commit but never reveal
  (strikes); fake-score members claim a loss their vectors do not support and fail verification (faulty) when they
  are the lowest claim; evaluation takes candidates by (claimed batch loss, member) exactly as the core does.
- the certificate is signed by every live member except equivocators and accepted withholders, whose own view of
  the round differs (a member struck for lateness still reaches the same report, as the core does); fewer than q such
  signers and no certificate forms; `settle_split` pays;
  strikes, faulty marks and evidence slash at the epoch transition (`checkpoint.next_table`).
The winner index learns each chunk's certificates after the chunk (a gossip delay of one chunk).

On the same item stream and the same realised losses it also evaluates the other policies: `random` (the shard as
drawn, no proxies), `oracle` and `cbtm` (see `moenode.sim.policies`).
"""

import time
from collections.abc import Callable

import numpy as np

from moenode.core.checkpoint import Item
from moenode.core.crypto import H
from moenode.core.genesis import Params, next_epoch_seed
from moenode.core.routing import Candidate, rank
from moenode.core.selection import shard_size, voting_power
from moenode.sim.book import Book, escrow_id
from moenode.sim.config import Scenario
from moenode.sim.draw import ShardSampler
from moenode.sim.index import WinnerIndex
from moenode.sim.metrics import Recorder
from moenode.sim.population import Population, item_text, nonce_of, round_ids
from moenode.sim.policies import BIG, Cbtm, expert_batch_loss, oracle_expert
from moenode.sim.world import micro, routing_vectors



def decide_many(own: np.ndarray, ranked: list[Candidate], params: Params) -> np.ndarray:
    """`[decide(o, ranked, params).proxy for o in own]`, vectorised (members are never in `ranked`)."""
    if not ranked:
        return np.zeros(len(own), dtype=bool)
    return own.astype(np.int64) * 10_000 > params.routing_margin_bps * ranked[0].loss_micro


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
        self.index = WinnerIndex(self.world.dim, s.index_cap)
        self.classes = [self.pop.node_class(i) for i in range(s.nodes)]
        self.rec = Recorder(s.nodes, self.world.domains, self.classes)
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
        self.cbtm = Cbtm(s.cbtm_clusters, self.p.routing_min_hits, s.seed)
        self.oracle_short = self.world.top_experts(s.oracle_shortlist)
        self.trace: list[dict] = []
        self.done = 0
        self.events = 0

    # epochs ------------------------------------------------------------------------------------------------------
    def _set_epoch_tables(self) -> None:
        table = self.tables[self.epoch]
        power = voting_power(table)
        self.sampler = ShardSampler(power)
        self.pool_node = np.array([self.pop.index_of[k] for k in self.sampler.keys], dtype=np.int64)
        self.n, self.q = shard_size(sum(1 for v in power.values() if v > 0))

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
        self.oracle_short = self.world.top_experts(self.sc.sim.oracle_shortlist)
        self._refit_cbtm()
        if self.sc.net.churn > 0:  # nodes leave and (re)join between epochs
            self.online = self.rng.random(self.sc.sim.nodes) >= self.sc.net.churn
        self.epoch = e + 1
        self.epoch_seed = next_epoch_seed(self.epoch, self.epoch_seed)
        self._set_epoch_tables()

    def _refit_cbtm(self) -> None:
        self.cbtm.fit(self.index, self.epoch)

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
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "events": self.events}

    def _chunk(self, B: int) -> None:
        s, p, w_ = self.sc.sim, self.p, self.world
        b = s.per_batch
        keys = self.pop.keys
        dom, x = w_.draw_items(self.items_rng, B, b)
        first = self.done * b
        ids = (first + np.arange(B * b)).reshape(B, b)
        w = w_.region(x)  # (B, b, K)
        n, q = self.n, self.q
        # shards: the protocol's draw for every submission
        M = np.empty((B, n), dtype=np.int64)
        sids: list[bytes] = []
        clients = self.pop.clients
        for i in range(B):
            k = self.done + i
            items = [item_text(int(t)) for t in ids[i]]
            client = clients[k % len(clients)]
            sid, _, _, seed = round_ids(self.epoch, self.epoch_seed, items, nonce_of(k), client)
            sids.append(sid)
            pos = self.sampler.indices(seed, n)
            M[i] = self.pool_node[np.sort(pos)]  # pool order is pubkey order
        # realised and expected losses of every member on every item
        real = micro(w_.realised_loss(M[:, :, None], ids[:, None, :], w[:, None, :, :]))  # (B, n, b)
        own = (2 * real.sum(axis=2) + b) // (2 * b)  # batch_loss rounding, as the Payload schema requires
        est = w_.estimate_micro(M[:, :, None], w[:, None, :, :])
        behaviour = self.pop.behaviour
        beh = behaviour[M]
        online = self.online[M]
        # routing: the winner index's neighbours, rank once per shard, decide per member
        prod, nloss, ncos = self.index.search(x.reshape(B * b, -1), p.routing_k)
        lists = WinnerIndex.lists(prod, nloss, ncos, keys)
        expert = np.full(B, -1, dtype=np.int64)  # the expert that serves the shard
        sponsor = np.full(B, -1, dtype=np.int64)
        asked = np.zeros((B, n), dtype=bool)  # members that sent a ProxyRequest
        delay = np.zeros(B)  # when the members refused or left unanswered start their own work
        score = np.zeros(B)
        member_keys = self.keys_arr[M].tolist()  # (B, n) public keys
        can_route = online & (beh != "collapsed")
        est_min = est.min(axis=1).tolist()
        for i in range(B):
            if not s.proxy:
                break
            ranked = rank(lists[i * b:(i + 1) * b], self.prices, p, exclude=member_keys[i])
            if not ranked:
                continue
            want = decide_many(est[i], ranked, p) & can_route[i]
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
        ex_real = np.zeros((B, b), dtype=np.int64)
        if has.any():
            ex_real[has] = micro(w_.realised_loss(expert[has][:, None], ids[has], w[has]))
        ex_batch = (2 * ex_real.sum(axis=1) + b) // (2 * b)
        # candidates as claimed, commit times, the vote, acceptance
        rows = np.arange(B)
        claimed = own.copy()
        claimed[has, sponsor[has]] = ex_batch[has]
        truthful = claimed.copy()
        fake = beh == "fake"
        fake[has, sponsor[has]] = behaviour[expert[has]] == "fake"  # a proxied payload is the expert's
        claimed[fake] = claimed[fake] * 3 // 10
        t_commit = (w_.ms_per_item[M] * b).astype(np.float64) + np.where(asked, delay[:, None], 0.0)
        t_commit[has, sponsor[has]] = w_.ms_per_item[expert[has]] * b + 2 * s.link_ms
        t_commit[~online] = np.inf
        t_arr = np.where(np.isfinite(t_commit), t_commit + s.link_ms, np.inf)  # as the others see it
        # the commit deadline, as ShardContext.commit_deadline computes it (every batch here is under one MiB)
        deadline = float(p.commit_timeout_ms + p.commit_ms_per_mib)
        t_arr = np.where(t_arr <= deadline, t_arr, np.inf)  # a commit after the deadline never counts
        ts = np.sort(t_arr, axis=1)
        n_commit = np.isfinite(ts).sum(axis=1)
        t_first, t_q = ts[:, 0], ts[:, q - 1]
        grace = np.minimum(np.maximum(p.grace_min_ms, t_q - t_first), p.grace_cap_ms)
        last = np.where(n_commit > 0, ts[rows, np.maximum(n_commit - 1, 0)], np.inf)
        vote_at = np.where(n_commit >= n, last, np.where(n_commit >= q, np.minimum(t_q + grace, deadline), deadline))
        accepted = (t_arr <= vote_at[:, None]) & (beh != "equivocate")
        revealed = accepted & (beh != "withhold")
        enough = accepted.sum(axis=1) >= q
        valid = revealed & ~fake
        cv = np.where(valid, claimed, BIG)
        win = cv.argmin(axis=1)
        # q identical reports: withholders and equivocators sign a different report (they count their own reveal)
        signing = online & (beh != "equivocate") & ~((beh == "withhold") & accepted)
        ok = enough & (cv[rows, win] < BIG) & (signing.sum(axis=1) >= q)
        win_claim = cv[rows, win]
        pos = np.arange(n)[None, :]
        tried_before = (claimed < win_claim[:, None]) | ((claimed == win_claim[:, None]) & (pos < win[:, None]))
        equiv = (beh == "equivocate") & online
        # a report names faulty the members that failed verification and those with evidence against them
        faulty = ((revealed & fake & tried_before) | equiv) & ok[:, None]
        struck = ((~accepted) | (accepted & ~revealed)) & ~faulty & ~equiv
        # settle, strike, learn
        winner = M[rows, win]
        producer = np.where(has & (sponsor == win), expert, winner)
        win_loss = truthful[rows, win]
        book, rec = self.book, self.rec
        add_vec, add_prod, add_loss = [], [], []
        earned: dict[bytes, int] = {}
        any_equiv, any_struck, any_faulty = equiv.any(axis=1), struck.any(axis=1), faulty.any(axis=1)
        for i in range(B):
            sid = sids[i]
            esc = escrow_id(sid)
            if not book.pay(clients[(self.done + i) % len(clients)], esc, s.fee):
                continue
            if any_equiv[i]:
                self.evidence.update(keys[m] for m in M[i][equiv[i]])
            if not ok[i]:
                book.refund(esc)
                if s.trace:
                    self.trace.append({"shard_id": sid.hex(), "members": [keys[m].hex() for m in M[i]],
                                       "winner": None, "producer": None, "loss": None, "strikes": []})
                continue
            wk, pk_ = keys[winner[i]], keys[producer[i]]
            share = int(self.world.price_bps[producer[i]]) if producer[i] != winner[i] else 0
            signers = [k_ for k_, sg in zip(member_keys[i], signing[i]) if sg]  # late members sign it too
            unpaid_struck = tuple(keys[m] for m in M[i][struck[i]]) if any_struck[i] else ()
            unpaid_faulty = tuple(keys[m] for m in M[i][faulty[i]]) if any_faulty[i] else ()
            for pk, amount in book.settle(esc, wk, pk_, share, signers, unpaid_struck, unpaid_faulty).items():
                earned[pk] = earned.get(pk, 0) + amount
            if any_struck[i]:
                for m in M[i][struck[i]]:
                    self.strike_count[keys[m]] = self.strike_count.get(keys[m], 0) + 1
            if any_faulty[i]:
                self.faulty_marks.update(keys[m] for m in M[i][faulty[i]])
            rec.wins[producer[i], dom[i]] += 1
            self.domain_reward[dom[i]] += s.fee
            add_vec.append(routing_vectors(x[i]))
            add_prod.append(np.full(b, producer[i]))
            add_loss.append(ex_real[i] if producer[i] != winner[i] else real[i, win[i]])
            if s.trace:
                self.trace.append({"shard_id": sid.hex(), "members": [keys[m].hex() for m in M[i]],
                                   "winner": wk.hex(), "producer": pk_.hex(), "loss": int(win_loss[i]),
                                   "strikes": sorted(keys[m].hex() for m in M[i][struck[i]])})
        for pk, amount in earned.items():
            rec.earned[self.pop.index_of[pk]] += amount
        rec.strikes += np.bincount(M[struck], minlength=s.nodes)
        rec.faulty += np.bincount(M[faulty], minlength=s.nodes)
        if add_vec:
            self.index.add(np.concatenate(add_vec), np.concatenate(add_prod), np.concatenate(add_loss))
        # the policies, on the same realised losses
        kind = self.world.kind
        honest_ok = online & (beh == "honest")
        rand = np.where(honest_ok, own, BIG).min(axis=1)
        rand_pos = np.where(honest_ok, own, BIG).argmin(axis=1)
        rand_f = np.where(rand < BIG, rand / 1e6, np.nan)
        rec.add_policy("random", rand_f, np.zeros(B, bool), kind[M[rows, rand_pos]] == "specialist")
        mk = np.where(ok, win_loss / 1e6, np.nan)
        rec.add_policy("market", mk, ok & (producer != winner), kind[producer] == "specialist")
        rec.certified.append(ok)
        lat = vote_at + 3 * s.link_ms + s.verify_ms
        rec.latency.append(np.where(ok, lat, np.nan)[ok])
        # oracle and cbtm
        best = oracle_expert(w_, self.oracle_short, w, self.online)
        rec.add_policy("oracle", expert_batch_loss(w_, best, ids, w) / 1e6, np.ones(B, bool),
                       kind[best] == "specialist")
        ce = self.cbtm.route(x, self.online)
        use = ce >= 0
        cb = np.where(use, expert_batch_loss(w_, ce, ids, w) / 1e6, rand_f)
        rec.add_policy("cbtm", cb, use, np.where(use, kind[np.maximum(ce, 0)], kind[M[rows, rand_pos]]) == "specialist")
        # the routing curve: what proxying each submission to its ranked expert would have scored
        prox = np.where(has, np.minimum(ex_batch, rand), rand)
        rec.curve_score.append(np.where(has, score, 0.0))
        rec.curve_proxied_loss.append(np.where(rand < BIG, prox / 1e6, np.nan))
        self.events += B  # one step per round at this level
