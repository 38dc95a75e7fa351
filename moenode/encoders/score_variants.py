"""Research variants of the paying score, computed on cached view vectors. Nothing here pays.

Theory of operation. The paying score (`moenode.core.scoring`, protocol/scoring.md) embeds 2M half-length views of
every item and grades, per pattern, how far the item's own other half stands above the negatives' halves (a z-score;
the former paying loss counted the negatives at least as close).
To compare many alternatives without re-running models, every model embeds once, per pattern seed, the views of
every labelled item at its own bucket (M_TOP patterns) and at each smaller bucket (M_LOW patterns; reference items
get M_TOP everywhere). A variant is then numpy over those cached rows:

- a **grouping** says which items are queries and which are candidates, at which bucket length, with which
  negatives: the protocol's plan (`scoring.make_plan` with any window and reference top-up), batch-only negatives,
  negatives cut down to the query's bucket ("ladder"), a seed-drawn sample of queries, negatives that exclude
  items the router model puts near the query (same-source siblings, near-duplicates);
- a **loss** turns a query's positive similarity and its negatives' similarities into a number: the former 0/1
  count, a margin ramp, the z-score (the paying one, in floats), InfoNCE, or the gap to the hardest negative;
- per-item losses average into a batch score; lower wins.

`ViewTable` fixes the cached row of every (item, bucket, pattern, half); `Group` is one contest. Pattern families:
`mask` is the protocol's interleaved random halves; `blocks` cuts the T positions into 8 contiguous blocks and gives
each half 4 of them, so the two halves are two sets of passages rather than two samples of one vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from moenode.core.crypto import H
from moenode.core.genesis import Params
from moenode.encoders import scoring
from moenode.encoders.scoring import Stream, bucket_of, half

BUCKETS = (8, 16, 32, 64)  # labelled items have <= 126 content tokens, so 128 never occurs
M_TOP, M_LOW = 16, 8


# patterns and the table of cached views ---------------------------------------------------------------------------
def family_pattern(family: str, seed: bytes, t: int, j: int) -> tuple[int, ...]:
    if family == "mask":
        return scoring.pattern(seed, t, j)
    if family == "blocks":
        b = t // 8
        chosen = sorted(Stream("blocks", seed + t.to_bytes(2, "big") + j.to_bytes(2, "big")).choose(8, 4))
        return tuple(p for c in chosen for p in range(c * b, (c + 1) * b))
    raise ValueError(f"unknown pattern family {family!r}")


def seed_of(name: str) -> tuple[str, bytes]:
    """A named pattern seed: 's*' draws protocol masks, 'b*' contiguous blocks."""
    family = {"s": "mask", "b": "blocks"}[name[0]]
    return family, H("score-audit", name.encode())


def top_bucket(n_tokens: int) -> int:
    return min(bucket_of(n_tokens), BUCKETS[-1])


@dataclass
class ViewTable:
    """row[g, k, j, h]: the cached row of item g's half h (0 = P_j, 1 = complement) at bucket BUCKETS[k]; -1: none."""

    row: np.ndarray
    seqs: list[list[int]]
    family: str
    seed: bytes

    def tokens(self, rows: np.ndarray) -> int:
        return int(sum(len(self.seqs[r]) for r in np.asarray(rows).ravel()))


def view_table(ids: Sequence[Sequence[int]], full_m: Sequence[bool], family: str, seed: bytes) -> ViewTable:
    """Views of every item at its top bucket (M_TOP) and below (M_LOW, or M_TOP where full_m[g])."""
    pats = {(t, j): family_pattern(family, seed, t, j) for t in BUCKETS for j in range(M_TOP)}
    comp = {k: tuple(p for p in range(k[0]) if p not in set(v)) for k, v in pats.items()}
    row = -np.ones((len(ids), len(BUCKETS), M_TOP, 2), np.int32)
    seqs: list[list[int]] = []
    for g, x in enumerate(ids):
        top = top_bucket(len(x))
        for k, t in enumerate(BUCKETS):
            if t > top:
                break
            for j in range(M_TOP if (t == top or full_m[g]) else M_LOW):
                row[g, k, j, 0] = len(seqs)
                seqs.append(half(x[:t], pats[t, j]))
                row[g, k, j, 1] = len(seqs)
                seqs.append(half(x[:t], comp[t, j]))
    return ViewTable(row, seqs, family, seed)


# contests -----------------------------------------------------------------------------------------------------------
@dataclass
class Group:
    """One contest at bucket t: queries q (item indices), candidates c (item indices, batch then reference),
    pos[i] = the column of query i's own item in c, neg[i, col] = c[col] is a negative of query i; the first n_batch
    candidates are batch items, the rest reference items."""

    t: int
    q: np.ndarray
    c: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    n_batch: int


def protocol_groups(batch: Sequence[int], ids: Sequence[Sequence[int]], ref: Sequence[int], seed: bytes,
                    m: int, min_negatives: int = 31, window: int = 128) -> list[Group]:
    """The paying score's plan (scoring.make_plan) over global item indices; `ref` = indices of the reference items
    in protocol order."""
    params = Params(mask_views=m, min_negatives=min_negatives, score_window=window)
    plan = scoring.make_plan([list(ids[g]) for g in batch], seed, params, [list(ids[g]) for g in ref])
    out = []
    for b in plan.buckets:
        q = np.array([batch[i] for i in b.members])
        c = np.concatenate([q, np.array([ref[r] for r in b.refs], dtype=np.int64)]).astype(np.int64)
        out.append(Group(b.t, q, c, np.arange(len(q)), b.neg.copy(), len(q)))
    return out


def _distinct(ids: Sequence[Sequence[int]], a: int, b: int, t: int) -> bool:
    return list(ids[a][:t]) != list(ids[b][:t])


def batch_groups(batch: Sequence[int], ids: Sequence[Sequence[int]], *, ladder: bool = False, peers: bool = True,
                 ref: Sequence[int] = (), n_ref: int = 0, top_up: int = 0, seed: bytes = b"",
                 queries: Sequence[int] | None = None, sample_negatives: bool = False,
                 near: Callable[[int, int], bool] | None = None, cap: int = 0) -> list[Group]:
    """Batch negatives, optionally cut down to the query's bucket (`ladder`) or none (`peers=False`), plus `n_ref`
    seeded reference items per bucket (or enough to reach `top_up` negatives). `queries` restricts who is scored (a sample); with
    `sample_negatives` only the sampled items serve as batch negatives too. `near(x, y)` drops y as a negative of x.
    `cap` cuts every item to at most that bucket (a common short window), so items of all lengths meet."""
    qset = list(batch if queries is None else queries)
    pool = list(qset if sample_negatives else batch)

    def level(g: int) -> int:
        t = top_bucket(len(ids[g]))
        return min(t, cap) if cap else t

    tops = {g: level(g) for g in set(pool) | set(qset)}
    out = []
    for t in BUCKETS:
        q = [g for g in qset if tops[g] == t]
        if not q:
            continue
        others = [g for g in pool if (tops[g] >= t if ladder else tops[g] == t) and g not in q]
        cand = q + others
        eligible = [r for r in ref if len(ids[r]) >= t and all(_distinct(ids, r, g, t) for g in cand)]
        k = n_ref if not top_up else max(0, top_up - (len(cand) - 1))
        k = min(k, len(eligible))
        refs = [eligible[e] for e in Stream("refdraw", seed + t.to_bytes(2, "big")).choose(len(eligible), k)]
        c = np.array(cand + refs, np.int64)
        neg = np.ones((len(q), len(c)), bool)
        if not peers:
            neg[:, : len(cand)] = False
        for i, x in enumerate(q):
            for col, y in enumerate(c):
                if y == x or not _distinct(ids, x, int(y), t) or (near is not None and near(x, int(y))):
                    neg[i, col] = False
        out.append(Group(t, np.array(q, np.int64), c, np.arange(len(q)), neg, len(cand)))
    return out


def group_rows(tab: ViewTable, g: Group, m: int, j0: int = 0, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the a-halves of the queries and b-halves of the candidates: (m, |q|), (m, |c|), with the cached
    patterns j0 .. j0+m-1 (disjoint offsets give independent pattern sets from one cache). `flip`: the other
    direction (b-halves of the queries against a-halves of the candidates), the same rows."""
    k = BUCKETS.index(g.t)
    a = tab.row[g.q, k, j0 : j0 + m, int(flip)].T
    b = tab.row[g.c, k, j0 : j0 + m, 1 - int(flip)].T
    if (a < 0).any() or (b < 0).any():
        raise ValueError(f"bucket {g.t}: a view needed for M={m} is not cached")
    return a, b


# losses -------------------------------------------------------------------------------------------------------------
# A loss maps (pos (..., q), sims (..., q, c), neg (q, c)) to (..., q): leading axes are patterns.
Loss = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
TIE = 1e-6  # the former count loss's tie margin


def _mean_over_neg(x: np.ndarray, neg: np.ndarray) -> np.ndarray:
    return (x * neg).sum(-1) / np.maximum(neg.sum(-1), 1)


def loss_count(pos, s, neg):
    """The protocol's: share of negatives at least as close as the positive (ties against the query)."""
    return _mean_over_neg(s + TIE >= pos[..., None], neg)


def loss_ramp(delta: float) -> Loss:
    """Share of negatives within `delta` of the positive, linearly weighted: 0 when the positive leads by >= delta,
    1 when the negative ties or leads. delta -> 0 gives the count. Piecewise linear, so exact in integers."""
    def f(pos, s, neg):
        return _mean_over_neg(np.clip((s + TIE - pos[..., None]) / delta + 1.0, 0.0, 1.0), neg)
    return f


def loss_z(pos, s, neg, zmax: float = 10.0):
    """-(pos - mean neg) / std neg, clipped to [-zmax, zmax]; a constant encoder (std 0) gets +zmax."""
    mu = _mean_over_neg(s, neg)
    sd = np.sqrt(_mean_over_neg((s - mu[..., None]) ** 2, neg))
    z = np.where(sd > 1e-9, (pos - mu) / np.maximum(sd, 1e-12), -zmax)
    return np.clip(-z, -zmax, zmax)


def loss_infonce(tau: float) -> Loss:
    def f(pos, s, neg):
        lg = np.where(neg, s / tau, -np.inf)
        p = pos / tau
        mx = np.maximum(lg.max(-1), p)
        return np.log(np.exp(p - mx) + np.exp(lg - mx[..., None]).sum(-1)) + mx - p
    return f


def loss_gap(pos, s, neg):
    """Hardest negative minus the positive (lower is better), in [-2, 2]."""
    return np.where(neg, s, -np.inf).max(-1) - pos


LOSSES: dict[str, Loss] = {
    "count": loss_count, "ramp05": loss_ramp(0.05), "ramp10": loss_ramp(0.10), "ramp20": loss_ramp(0.20),
    "ramp40": loss_ramp(0.40), "z": loss_z, "nce05": loss_infonce(0.05), "nce10": loss_infonce(0.10),
    "gap": loss_gap,
}


def item_losses(views: np.ndarray, tab: ViewTable, groups: Sequence[Group], m: int,
                losses: Sequence[str], ref_junk: np.ndarray | None = None, j0: int = 0,
                both: bool = False) -> dict[str, dict[int, float]]:
    """{loss name: {query item: loss}} for one model's cached views (rows, dim), unit float16 rows.

    `ref_junk` models the pool-recognition cheat: every reference candidate's half is replaced by this vector.
    `both`: each pattern scores in both directions (a against the candidates' b, b against their a), twice the
    evidence from the same rows."""
    out: dict[str, dict[int, float]] = {name: {} for name in losses}
    for g in groups:
        pos_s = []
        for flip in (False, True) if both else (False,):
            a, b = group_rows(tab, g, m, j0, flip)
            va = views[a].astype(np.float64)  # (m, q, d)
            vb = views[b].astype(np.float64)  # (m, c, d)
            if ref_junk is not None:
                vb[:, g.n_batch :] = ref_junk
            s = np.einsum("jqd,jcd->jqc", va, vb)
            pos_s.append((s[:, np.arange(len(g.q)), g.pos], s))
        pos = np.concatenate([p for p, _ in pos_s])
        s = np.concatenate([x for _, x in pos_s])
        scored = np.asarray(g.neg.any(1))
        for name in losses:
            per = LOSSES[name](pos, s, g.neg).mean(0)
            for i, x in enumerate(g.q):
                if scored[i]:
                    out[name][int(x)] = float(per[i])
    return out


def vsfull_losses(views: np.ndarray, full16: np.ndarray, tab: ViewTable, batch: Sequence[int],
                  ids: Sequence[Sequence[int]], m: int, losses: Sequence[str],
                  queries: Sequence[int] | None = None) -> tuple[dict[str, dict[int, float]], set[int]]:
    """Half against whole: query a_j(x) at x's top bucket; candidates are the delivered full vectors (float16) of
    every batch item, whatever its length; the positive is x's own. Returns the losses and the view rows used."""
    batch = list(batch)
    qs = list(batch if queries is None else queries)
    col = {g: i for i, g in enumerate(batch)}
    kq = np.array([BUCKETS.index(top_bucket(len(ids[g]))) for g in qs])
    rows = tab.row[np.array(qs), kq, :m, 0]  # (q, m)
    a = views[rows.T].astype(np.float64)  # (m, q, d)
    f = full16[np.array(batch)].astype(np.float64)
    s = np.einsum("jqd,cd->jqc", a, f)
    pos_col = np.array([col[g] for g in qs])
    pos = s[:, np.arange(len(qs)), pos_col]
    neg = np.array([[y != x and list(ids[y]) != list(ids[x]) for y in batch] for x in qs])
    out: dict[str, dict[int, float]] = {name: {} for name in losses}
    scored = np.asarray(neg.any(1))
    for name in losses:
        per = LOSSES[name](pos, s, neg).mean(0)
        for i, x in enumerate(qs):
            if scored[i]:
                out[name][int(x)] = float(per[i])
    return out, set(rows.ravel().tolist())


def rows_used(tab: ViewTable, groups: Sequence[Group], m: int, j0: int = 0) -> tuple[set[int], set[int]]:
    """(batch-item rows, reference rows) a variant needs: what a producer must embed for one batch."""
    batch_rows: set[int] = set()
    ref_rows: set[int] = set()
    for g in groups:
        a, b = group_rows(tab, g, m, j0)
        batch_rows.update(a.ravel().tolist())
        batch_rows.update(b[:, : g.n_batch].ravel().tolist())
        ref_rows.update(b[:, g.n_batch :].ravel().tolist())
    return batch_rows, ref_rows


# label quality ------------------------------------------------------------------------------------------------------
def reciprocal_ranks(vectors: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Per item: 1 / rank of the first same-label neighbour (ties against the model); NaN if the label is unique."""
    lab = np.asarray(labels)
    v = vectors.astype(np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    s = v @ v.T
    np.fill_diagonal(s, -np.inf)
    same = lab[:, None] == lab[None, :]
    np.fill_diagonal(same, False)
    best = np.where(same, s, -np.inf).max(1)
    other = ~same
    np.fill_diagonal(other, False)
    rank = 1 + ((s >= best[:, None]) & other).sum(1)
    return np.where(same.any(1), 1.0 / rank, np.nan)


def bootstrap_diff(rr_a: np.ndarray, rr_b: np.ndarray, labels: Sequence[str], n: int = 1000,
                   seed: int = 0) -> tuple[float, float, float]:
    """MRR(a) - MRR(b) and its 95% interval, resampling sources (clusters) with replacement."""
    lab = np.asarray(labels)
    ok = ~np.isnan(rr_a) & ~np.isnan(rr_b)
    srcs = np.unique(lab[ok])
    d = (rr_a - rr_b)
    per = np.array([d[ok & (lab == s)].sum() for s in srcs])
    cnt = np.array([(ok & (lab == s)).sum() for s in srcs])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(srcs), (n, len(srcs)))
    boots = per[pick].sum(1) / np.maximum(cnt[pick].sum(1), 1)
    return float(per.sum() / cnt.sum()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))
