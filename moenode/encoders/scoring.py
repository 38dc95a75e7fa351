"""The split-half differential loss: the score that decides who is paid (protocol/scoring.md is normative).

Theory of operation. An item's content tokens are cut to a bucket length T (8, 16, 32, 64 or 128). For each of M
patterns P_j (drawn from the shard seed, shared by every item of bucket T) the item yields two views: the tokens at
P_j and the tokens elsewhere, each wrapped in [CLS] ... [SEP], dropped tokens gone and order kept. A good encoder maps
the two halves of one item closer to each other than to the halves of other items: the loss of an item is the share
of (pattern, negative) pairs where a negative's half scores at least as well as its own other half. Negatives are the
other items of the bucket, topped up from the shipped reference corpus with the shard seed when the batch is small.

Everything that decides payment is integer arithmetic on revealed float16 vectors: a float16 value is an integer
multiple of 2^-24, so `round(v * 2^24)` is exact, a dot product of two unit float16 vectors is an integer below 2^49,
and float64 sums of such integers are exact in any order. Anyone holding the batch, the shard seed, the reference
corpus and the revealed views recomputes every per-item micro-loss bit for bit (`losses_from_views`).

`make_payload` computes a producer's Payload; `verify_payload` is the lazy check a shard member runs on the best
candidate (model id, exact loss recomputation, re-execution of a seed-chosen sample of views, embeddings and routing
vectors). `additive_losses` is the seed's literal identity, kept for research: it rewards linear models (a bag of
tokens and the zero encoder score a perfect 0), so it never pays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from moenode.core.crypto import H
from moenode.core.genesis import Params
from moenode.core.messages import Payload, batch_loss
from moenode.encoders.runtime import CLS, MASK, SEP, Encoder, content_ids

BUCKETS = (8, 16, 32, 64, 128)
MICRO = 1_000_000
UNSCORED = MICRO  # loss of an item no candidate can be scored on: the same for all, so it never changes a ranking
FIX = 1 << 24  # float16 values are integer multiples of 2^-24
ONE = FIX * FIX  # a unit dot product in fixed point (2^48)
EPS = ONE // MICRO  # the tie margin 1e-6 of the protocol, in fixed point
NORM_TOL = ONE >> 8  # a revealed row is zero or has |norm^2 - 1| <= 2^-8

Timer = Callable[[str], AbstractContextManager]  # stage name -> a block that accounts its CPU (node.stages)


def untimed(_stage: str) -> AbstractContextManager:
    return nullcontext()


# seed streams ----------------------------------------------------------------------------------------------------
class Stream:
    """Uniform integers from H(tag, key || counter): 32-byte blocks read as big-endian 32-bit words."""

    def __init__(self, tag: str, key: bytes):
        self.tag, self.key, self.block, self.words = tag, key, 0, []

    def word(self) -> int:
        if not self.words:
            h = H(self.tag, self.key + self.block.to_bytes(4, "big"))
            self.block += 1
            self.words = [int.from_bytes(h[i : i + 4], "big") for i in range(28, -4, -4)]
        return self.words.pop()  # words leave in order 0..7

    def below(self, n: int) -> int:
        """Uniform in [0, n) by rejection (no modulo bias)."""
        if not 1 <= n <= 1 << 32:
            raise ValueError(f"cannot draw below {n}")
        limit = (1 << 32) - (1 << 32) % n
        while True:
            w = self.word()
            if w < limit:
                return w % n

    def choose(self, n: int, k: int) -> list[int]:
        """k distinct values of range(n) in draw order (partial Fisher-Yates)."""
        a = list(range(n))
        for i in range(min(k, n)):
            r = i + self.below(n - i)
            a[i], a[r] = a[r], a[i]
        return a[: min(k, n)]


def pattern(shard_seed: bytes, t: int, j: int) -> tuple[int, ...]:
    """P_j of bucket t: a sorted set of t/2 of the positions 0..t-1."""
    s = Stream("mask", shard_seed + t.to_bytes(2, "big") + j.to_bytes(2, "big"))
    return tuple(sorted(s.choose(t, t // 2)))


def bucket_of(length: int) -> int:
    """The largest bucket <= length, or 0 when the item is too short to score."""
    return max((t for t in BUCKETS if t <= length), default=0)


# the plan: buckets, patterns, negatives and the row layout of the revealed views ----------------------------------
@dataclass
class Bucket:
    t: int
    members: list[int]  # batch indices, ascending
    refs: list[int]  # reference indices, in draw order
    patterns: list[tuple[int, ...]]
    base: int = 0  # first view row of this bucket
    neg: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))  # (members, members + refs)

    def row_a(self, m: int, j: int) -> int:
        return self.base + 2 * (m * len(self.patterns) + j)

    def row_b(self, m: int, j: int) -> int:
        return self.row_a(m, j) + 1

    def row_ref(self, r: int, j: int) -> int:
        mm = len(self.patterns)
        return self.base + 2 * len(self.members) * mm + r * mm + j

    @property
    def rows(self) -> int:
        return len(self.patterns) * (2 * len(self.members) + len(self.refs))


@dataclass
class Plan:
    """What the shard seed and the batch fix before any model runs; identical for every candidate."""

    buckets: list[Bucket]
    n_items: int
    rows: int
    ids: list[list[int]]  # content ids of the batch items (full length)
    ref_ids: list[list[int]]

    def scored(self) -> list[tuple[Bucket, int]]:
        """(bucket, position in bucket) of every item with at least one negative, in batch order."""
        out = [(b, m) for b in self.buckets for m in range(len(b.members)) if b.neg[m].any()]
        return sorted(out, key=lambda bm: bm[0].members[bm[1]])

    def view_seqs(self) -> list[list[int]]:
        """The token sequences of every view row, in row order."""
        seqs: list[list[int]] = [[] for _ in range(self.rows)]
        for b in self.buckets:
            comp = [tuple(p for p in range(b.t) if p not in set(pj)) for pj in b.patterns]
            for m, i in enumerate(b.members):
                x = self.ids[i][: b.t]
                for j, pj in enumerate(b.patterns):
                    seqs[b.row_a(m, j)] = half(x, pj)
                    seqs[b.row_b(m, j)] = half(x, comp[j])
            for r, k in enumerate(b.refs):
                x = self.ref_ids[k][: b.t]
                for j in range(len(b.patterns)):
                    seqs[b.row_ref(r, j)] = half(x, comp[j])
        return seqs


def half(x: Sequence[int], positions: Sequence[int]) -> list[int]:
    return [CLS] + [x[p] for p in positions] + [SEP]


def make_plan(item_ids: list[list[int]], shard_seed: bytes, params: Params, ref_ids: list[list[int]]) -> Plan:
    """Bucket the batch, demote buckets that cannot reach min_negatives, draw reference top-ups and patterns."""
    mm, need = params.mask_views, params.min_negatives
    members: dict[int, list[int]] = {t: [] for t in BUCKETS}
    for i, ids in enumerate(item_ids):
        t = bucket_of(len(ids))
        if t:
            members[t].append(i)
    chosen: dict[int, list[int]] = {}
    for t in reversed(BUCKETS):  # largest first, so demoted items join a smaller bucket before it is examined
        mem = sorted(members[t])
        if not mem:
            continue
        taken = {tuple(item_ids[i][:t]) for i in mem}
        seen: set[tuple[int, ...]] = set()
        eligible = []
        for k, r in enumerate(ref_ids):
            key = tuple(r[:t])
            if len(r) >= t and key not in taken and key not in seen:
                seen.add(key)
                eligible.append(k)
        if len(mem) - 1 + len(eligible) < need and t > BUCKETS[0]:
            members[t // 2].extend(mem)  # too few negatives here: score these items on their first t/2 tokens
            members[t] = []
            continue
        members[t] = mem
        k_draw = min(len(eligible), max(0, need - (len(mem) - 1)))
        stream = Stream("refdraw", shard_seed + t.to_bytes(2, "big"))
        chosen[t] = [eligible[e] for e in stream.choose(len(eligible), k_draw)]
    buckets, base = [], 0
    for t in BUCKETS:
        if not members[t]:
            continue
        b = Bucket(t, members[t], chosen[t], [pattern(shard_seed, t, j) for j in range(mm)], base)
        seqs = [tuple(item_ids[i][:t]) for i in b.members]
        n = len(b.members)
        neg = np.ones((n, n + len(b.refs)), bool)
        for m in range(n):
            for o in range(n):
                neg[m, o] = seqs[m] != seqs[o]  # never one's own item nor an exact duplicate of it
        b.neg = neg
        base += b.rows
        buckets.append(b)
    return Plan(buckets, len(item_ids), base, item_ids, ref_ids)


def plan_for(items: Sequence[str], shard_seed: bytes, params: Params, reference: Sequence[str]) -> Plan:
    return make_plan(content_ids(items, 128), shard_seed, params, _reference_ids(tuple(reference)))


@lru_cache(maxsize=4)
def _reference_ids(reference: tuple[str, ...]) -> list[list[int]]:
    """The reference corpus tokenised once per process (it is fixed; tokenising it took 50 ms a round)."""
    return content_ids(reference, 128)


# exact losses from revealed vectors ----------------------------------------------------------------------------------
def check_rows(v16: np.ndarray) -> str:
    """'' if every row is finite, components within [-1, 1], and zero or unit within NORM_TOL; else the reason."""
    if not np.isfinite(v16).all():
        return "non-finite component"
    if (np.abs(v16) > 1).any():
        return "component outside [-1, 1]"
    fx = fixed(v16)
    n2 = np.einsum("ij,ij->i", fx, fx)
    bad = (n2 != 0) & (np.abs(n2 - ONE) > NORM_TOL)
    if bad.any():
        return f"row {int(np.argmax(bad))} is neither zero nor unit"
    return ""


def fixed(v16: np.ndarray) -> np.ndarray:
    """float16 -> exact integers (as float64) in units of 2^-24."""
    return v16.astype(np.float64) * FIX


def losses_from_views(plan: Plan, v16: np.ndarray) -> list[int]:
    """Per-item micro-losses from the revealed view rows (rows, dim) float16. Exact: integers throughout."""
    fx = fixed(v16)
    out = [UNSCORED] * plan.n_items
    for b in plan.buckets:
        n, mm = len(b.members), len(b.patterns)
        counts = np.zeros(n, np.int64)
        for j in range(mm):
            a = fx[[b.row_a(m, j) for m in range(n)]]
            cand = fx[[b.row_b(m, j) for m in range(n)] + [b.row_ref(r, j) for r in range(len(b.refs))]]
            s = a @ cand.T  # exact: |partial sums| < 2^49 < 2^53
            pos = s[np.arange(n), np.arange(n)]
            counts += ((s + EPS >= pos[:, None]) & b.neg).sum(1)
        for m, i in enumerate(b.members):
            d = int(b.neg[m].sum()) * mm
            if d:
                out[i] = (2 * MICRO * int(counts[m]) + d) // (2 * d)  # round half up
    return out


# producing and verifying a payload -----------------------------------------------------------------------------------
def to_f16(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(v, dtype="<f2")


@dataclass
class Scored:
    plan: Plan
    views: np.ndarray  # (rows, dim) float16
    losses: list[int]

    @property
    def batch_loss(self) -> int:
        return batch_loss(self.losses)


def score(encoder: Encoder, items: Sequence[str], shard_seed: bytes, params: Params,
          reference: Sequence[str], timer: Timer = untimed) -> Scored:
    """Run the encoder on every view and compute the per-item micro-losses from the float16 vectors.

    The batch's own views and the reference negatives' views are embedded in two calls, so that `timer` can account
    them as two stages (each row is embedded on its own: the split does not change what a row scores).
    """
    with timer("scoring_views"):
        plan = plan_for(items, shard_seed, params, reference)
        seqs = plan.view_seqs()
        refs = sorted(b.row_ref(r, j) for b in plan.buckets
                      for r in range(len(b.refs)) for j in range(len(b.patterns)))
        is_ref = np.zeros(plan.rows, bool)
        is_ref[refs] = True
        own = np.flatnonzero(~is_ref)
        views = np.zeros((plan.rows, encoder.dim), "<f2")
        views[own] = to_f16(encoder.embed_ids([seqs[r] for r in own]))
    with timer("reference_negatives"):
        views[refs] = to_f16(encoder.embed_ids([seqs[r] for r in refs]))
    with timer("scoring_views"):
        return Scored(plan, views, losses_from_views(plan, views))


def make_payload(encoder: Encoder, router: Encoder, items: list[str], shard_seed: bytes, params: Params,
                 reference: list[str], timer: Timer = untimed, routing: np.ndarray | None = None) -> Payload:
    """A producer's Payload: embeddings (float32 LE), views and routing vectors (float16 LE), exact losses.

    `routing`: the router's vectors of `items` if the caller computed them already (to choose a route).
    """
    s = score(encoder, items, shard_seed, params, reference, timer)
    with timer("member_embed"):
        emb = np.ascontiguousarray(encoder.embed(items), dtype="<f4")
    with timer("routing_vectors"):
        routing = to_f16(router.embed(items) if routing is None else routing)
    return Payload(model_id=encoder.model_id, dim=encoder.dim, embeddings=emb.tobytes(), views=s.views.tobytes(),
                   routing=routing.tobytes(), item_losses=tuple(s.losses), batch_loss=s.batch_loss)


def _cos_ok(revealed: np.ndarray, fresh: np.ndarray, cos_micro: int) -> np.ndarray:
    """Row-wise: cosine >= cos_micro/1e6, where two zero rows agree and zero vs non-zero disagree."""
    r, f = revealed.astype(np.float64), fresh.astype(np.float64)
    nr, nf = np.linalg.norm(r, axis=1), np.linalg.norm(f, axis=1)
    zr, zf = nr < 1e-6, nf < 1e-6
    cos = (r * f).sum(1) / np.maximum(nr * nf, 1e-30)
    return np.where(zr | zf, zr & zf, cos * MICRO >= cos_micro)


def sample_seed(shard_seed: bytes, payload: Payload) -> bytes:
    return H("verify", shard_seed + payload.digest())


def verify_payload(encoder: Encoder, router: Encoder, items: list[str], shard_seed: bytes, payload: Payload,
                   params: Params, reference: list[str], sample_seed_: bytes | None = None) -> tuple[bool, str]:
    """The lazy check of a candidate. (True, "ok") or (False, reason); bad payload content never raises.

    `sample_seed_` picks what is re-executed; by default H("verify", shard_seed || payload digest). A round that has
    a value fixed only after every commit (e.g. the accepted commit set) should pass it, so a producer cannot steer
    the sample by grinding its payload bytes.
    """
    n, dim = len(items), encoder.dim
    if payload.model_id != encoder.model_id:
        return False, "model_id is not the committed encoder's"
    if payload.dim != dim or len(payload.item_losses) != n:
        return False, "dim or item count does not match"
    if len(payload.embeddings) != n * dim * 4 or len(payload.routing) != n * router.dim * 2:
        return False, "embeddings or routing have the wrong size"
    plan = plan_for(items, shard_seed, params, reference)
    if len(payload.views) != plan.rows * dim * 2:
        return False, f"views hold {len(payload.views)} bytes, the plan needs {plan.rows} rows x {dim} float16"
    views = np.frombuffer(payload.views, "<f2").reshape(plan.rows, dim)
    emb = np.frombuffer(payload.embeddings, "<f4").reshape(n, dim)
    routing = np.frombuffer(payload.routing, "<f2").reshape(n, router.dim)
    why = check_rows(views)
    if why:
        return False, f"views: {why}"
    if not np.isfinite(emb).all() or not np.isfinite(routing).all():
        return False, "embeddings or routing are not finite"
    losses = losses_from_views(plan, views)
    if tuple(losses) != payload.item_losses:
        bad = next(i for i, (a, b) in enumerate(zip(losses, payload.item_losses)) if a != b)
        return False, f"item {bad}: claimed loss {payload.item_losses[bad]}, views give {losses[bad]}"
    if payload.batch_loss != batch_loss(losses):
        return False, "batch_loss does not match"

    stream = Stream("vsample", sample_seed_ or sample_seed(shard_seed, payload))
    seqs = plan.view_seqs()
    rows: list[int] = []
    scored = plan.scored()
    per_item = 2 * params.mask_views
    for k in stream.choose(len(scored), params.verify_items):
        b, m = scored[k]
        rows += [b.row_a(m, 0) + v for v in stream.choose(per_item, params.verify_views)]
    ref_rows = [b.row_ref(r, j) for b in plan.buckets for r in range(len(b.refs)) for j in range(params.mask_views)]
    rows += [ref_rows[k] for k in stream.choose(len(ref_rows), params.verify_views)]
    if rows:
        fresh = encoder.embed_ids([seqs[r] for r in rows])
        ok = _cos_ok(views[rows], fresh, params.verify_cos_micro)
        if not ok.all():
            return False, f"view row {rows[int(np.argmin(ok))]} does not re-execute"
    picks = stream.choose(n, params.verify_items)
    texts = [items[i] for i in picks]
    ok = _cos_ok(emb[picks], encoder.embed(texts), params.verify_cos_micro)
    if not ok.all():
        return False, f"embedding of item {picks[int(np.argmin(ok))]} does not re-execute"
    ok = _cos_ok(routing[picks], router.embed(texts), params.verify_cos_micro)
    if not ok.all():
        return False, f"routing vector of item {picks[int(np.argmin(ok))]} does not re-execute"
    return True, "ok"


# research: the seed's additive identity (never pays) ------------------------------------------------------------------
def additive_losses(encoder: Encoder, items: Sequence[str], shard_seed: bytes, params: Params) -> list[float]:
    """loss = mean_j |F - A_j - B_j|^2 / (mean_{j!=k} |F - A_j - B_k|^2 + 1e-9), [MASK] views keeping length.

    F is the item (cut to its bucket), A_j keeps the tokens at P_j and masks the rest, B_j the reverse. Items too
    short to score get NaN. A bag-of-tokens model is exactly additive here, and the zero encoder scores 0.
    """
    ids = content_ids(items, 128)
    out = [float("nan")] * len(items)
    mm = params.mask_views
    for i, x in enumerate(ids):
        t = bucket_of(len(x))
        if not t or mm < 2:
            continue
        x = x[:t]
        seqs = [[CLS] + x + [SEP]]
        for j in range(mm):
            pj = set(pattern(shard_seed, t, j))
            seqs.append([CLS] + [x[p] if p in pj else MASK for p in range(t)] + [SEP])
            seqs.append([CLS] + [MASK if p in pj else x[p] for p in range(t)] + [SEP])
        v = encoder.embed_ids(seqs).astype(np.float64)
        f, a, b = v[0], v[1::2], v[2::2]
        num = np.mean([np.sum((f - a[j] - b[j]) ** 2) for j in range(mm)])
        den = np.mean([np.sum((f - a[j] - b[k]) ** 2) for j in range(mm) for k in range(mm) if j != k])
        out[i] = float(num / (den + 1e-9))
    return out


def reference_texts() -> list[str]:
    """The network's reference corpus, in its fixed order: every domain's reference split, domains sorted.

    Nodes prove they hold the same one by comparing `moenode.encoders.corpus.reference_digest()`.
    """
    from moenode.encoders import corpus

    return [item.text for d in corpus.domains() for item in corpus.split(d, "reference")]
