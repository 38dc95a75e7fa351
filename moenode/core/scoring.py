"""The exact part of the paying score (protocol/scoring.md is normative): who is scored on which views, and the
loss recomputed in integers from revealed float16 rows. Sans-IO: no model runs here (moenode.encoders.scoring runs
them), no clock and no randomness but the seed streams.

Theory of operation. An item's content tokens are cut to a common window (`score_window`, 32 by default) and then
to a bucket length T (8, 16 or 32 within that window). For each of M patterns P_j (drawn from the shard seed, shared
by every item of bucket T) the item yields two views: the tokens at P_j and the tokens elsewhere, each wrapped in
[CLS] ... [SEP], dropped tokens gone and order kept. A good encoder maps the two halves of one item closer to each
other than to the halves of the other items of the batch. The item's loss per pattern is a z-score: how far its own
other half stands above the negatives' halves, in units of their spread (`z_loss`). The common window puts a whole
batch in one contest, so every item meets about n - 1 negatives, and the graded z separates honest models that a
0/1 count could not. Reference items from the shipped corpus top a bucket up only when `min_negatives` asks for it
(0 by default: a public pool can be recognised, see the spec).

Everything that decides payment is integer arithmetic: a float16 value is an integer multiple of 2^-24, so
`v * 2^24` is exact, a dot product of two unit float16 vectors is an integer below 2^49, float64 sums of such
integers are exact in any order, and the z-score is an integer square root of an exact rational.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from math import isqrt

import numpy as np

from moenode.core.crypto import H
from moenode.core.genesis import Params

BUCKETS = (8, 16, 32, 64, 128)
CLS, SEP = 101, 102  # the network tokenizer's [CLS] and [SEP] (spec 5.2)
MICRO = 1_000_000
UNSCORED = MICRO  # loss of an item no candidate can be scored on: the same for all, so it never changes a ranking
FIX = 1 << 24  # float16 values are integer multiples of 2^-24
ONE = FIX * FIX  # a unit dot product in fixed point (2^48)
NORM_TOL = ONE >> 8  # a revealed row is zero or has |norm^2 - 1| <= 2^-8
Z_UNIT = 50_000  # loss micro-units per unit of z
Z_CLIP = MICRO // 2  # |z| is clipped at 10, so a pattern's loss 500_000 - z * 50_000 stays in [0, 10^6]
MIN_NEGATIVES = 2  # a spread needs two negatives; an item with fewer is unscored


# seed streams ----------------------------------------------------------------------------------------------------
class Stream:
    """Uniform integers from H(tag, key || counter): 32-byte blocks read as big-endian 32-bit words."""

    def __init__(self, tag: str, key: bytes):
        self.tag, self.key, self.block = tag, key, 0
        self.words: list[int] = []

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


def half(x: Sequence[int], positions: Sequence[int]) -> list[int]:
    return [CLS] + [x[p] for p in positions] + [SEP]


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
        """(bucket, position in bucket) of every item with at least MIN_NEGATIVES negatives, in batch order."""
        out = [(b, m) for b in self.buckets for m in range(len(b.members)) if b.neg[m].sum() >= MIN_NEGATIVES]
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


def make_plan(item_ids: list[list[int]], shard_seed: bytes, params: Params, ref_ids: list[list[int]]) -> Plan:
    """Bucket the batch within the common window, demote buckets whose members would have fewer than
    max(min_negatives, MIN_NEGATIVES) negatives, draw reference top-ups and patterns."""
    mm, need = params.mask_views, params.min_negatives
    members: dict[int, list[int]] = {t: [] for t in BUCKETS}
    for i, ids in enumerate(item_ids):
        t = bucket_of(min(len(ids), params.score_window))
        if t:
            members[t].append(i)
    chosen: dict[int, list[int]] = {}
    for t in reversed(BUCKETS):  # largest first, so demoted items join a smaller bucket before it is examined
        mem = sorted(members[t])
        if not mem:
            continue
        eligible: list[int] = []
        if need > len(mem) - 1:
            taken = {tuple(item_ids[i][:t]) for i in mem}
            seen: set[tuple[int, ...]] = set()
            for k, r in enumerate(ref_ids):
                key = tuple(r[:t])
                if len(r) >= t and key not in taken and key not in seen:
                    seen.add(key)
                    eligible.append(k)
        if len(mem) - 1 + len(eligible) < max(need, MIN_NEGATIVES) and t > BUCKETS[0]:
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


def z_loss(pos: int, negs: Sequence[int]) -> int:
    """One pattern's loss in micro-units from exact integer similarities: 500_000 - 50_000 z, where
    z = (pos - mean) / std over the negatives (population std) = num / sqrt(V) with num = n pos - sum,
    V = n sum(s^2) - sum^2. |z| is truncated to 1/50_000 (isqrt of an exact quotient) and clipped at 10. Negatives
    without spread (V = 0: a constant encoder) give the worst loss, 10^6."""
    n, a = len(negs), sum(negs)
    v = n * sum(s * s for s in negs) - a * a
    if v <= 0:
        return MICRO
    num = n * pos - a
    z = min(isqrt(Z_UNIT * Z_UNIT * num * num // v), Z_CLIP)
    return Z_CLIP - z if num >= 0 else Z_CLIP + z


def losses_from_views(plan: Plan, v16: np.ndarray) -> list[int]:
    """Per-item micro-losses from the revealed view rows (rows, dim) float16. Exact: integers throughout."""
    fx = fixed(v16)
    out = [UNSCORED] * plan.n_items
    for b in plan.buckets:
        n, mm = len(b.members), len(b.patterns)
        scored = [m for m in range(n) if b.neg[m].sum() >= MIN_NEGATIVES]
        if not scored:
            continue
        total = dict.fromkeys(scored, 0)
        for j in range(mm):
            a = fx[[b.row_a(m, j) for m in range(n)]]
            cand = fx[[b.row_b(m, j) for m in range(n)] + [b.row_ref(r, j) for r in range(len(b.refs))]]
            s = (a @ cand.T).astype(np.int64)  # exact: |partial sums| < 2^49 < 2^53
            for m in scored:
                row = s[m].tolist()
                total[m] += z_loss(row[m], [row[c] for c in np.flatnonzero(b.neg[m]).tolist()])
        for m in scored:
            out[b.members[m]] = (2 * total[m] + mm) // (2 * mm)  # round half up
    return out


def verify_sample(plan: Plan, params: Params, sample_seed: bytes) -> tuple[list[int], list[int]]:
    """What a verifier re-executes (spec 5.9): view rows, then the items whose embedding and routing vectors are
    spot-checked, all drawn from Stream("vsample", sample_seed)."""
    stream = Stream("vsample", sample_seed)
    rows: list[int] = []
    scored = plan.scored()
    per_item = 2 * params.mask_views
    for k in stream.choose(len(scored), params.verify_items):
        b, m = scored[k]
        rows += [b.row_a(m, 0) + v for v in stream.choose(per_item, params.verify_views)]
    ref_rows = [b.row_ref(r, j) for b in plan.buckets for r in range(len(b.refs)) for j in range(params.mask_views)]
    rows += [ref_rows[k] for k in stream.choose(len(ref_rows), params.verify_views)]
    return rows, stream.choose(plan.n_items, params.verify_items)
