"""Fitting a domain adapter: how an operator turns a general encoder into a specialist.

Theory of operation. A specialist is `normalise(mean_pool(h) @ W)` with `W = I + delta` (dim x dim), composed into
the base graph. The base model runs once: every split-half view of every training item is embedded, under several
training seeds, and only the pooled (unnormalised) vectors are kept. Training is then pure numpy: Adam on delta to
minimise a split-half InfoNCE (temperature TAU) where each item's first half must pick its own second half among the
second halves of the other in-domain items of the same bucket and pattern, exactly the contest the scorer runs. The
gradient through the matmul and the L2 normalisation is written out by hand, so no autograd library is needed.
A held-out fifth of the items stops training when their loss stops improving; the best delta is kept.

Reported: the split-half loss (the scorer's counting loss, in-domain negatives) on the held-out items with W = I and
with the fitted W, and, when the texts carry labels (`source`), a same-source nearest-neighbour MRR before and after,
because a lower split-half loss is not automatically better retrieval.

Staying in the space. A space holds the base model and every specialist fitted on it, so the same text must land
at nearly the same vector under any two of them (`moenode.core.spaces`), not only under a specialist and its base:
two specialists that each drift from the base in their own direction drift about twice as far from each other. The
fit therefore pulls W toward the identity with two alignment terms (mean 1 - cosine to the base model's vector): one
over the in-domain training texts and their views (weight `ALIGN`), and a heavier one over general public text of
every domain (weight `GENERAL`, the corpus's adapter split), so that texts a specialist has no reason to move stay
where the base model puts them. The home domain's share of that text is pulled too; measured, leaving it out gained
little label quality and moved the specialists further apart. The partial whitening the fit starts from is kept
mild (`BETA`) for the same reason: it moves every text, in-domain or not. Measured on held-out text (the corpus eval
split and the audit set, `bench/space_models.py`, three training seeds): every pair of the shipped specialists and
the base keeps same-text cosine p5 >= 0.98 and median >= 0.987, and spec-code and spec-man still beat the base model
on their home domains (spec-legal's small gain does not survive every seed). With reference texts given, the result
is checked against the space's admission rule; a fit that fails it is redone with both pulls scaled up
(`PULL_RETRY`), and the last verdict is reported.

The shipped adapters (`moenode/data/adapters/spec-*.npy`) are this recipe on each home domain's adapter split:
`bench/space_models.py embed` then `bench/space_models.py ship` rewrites them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from moenode.core.crypto import H
from moenode.core.genesis import Params
from moenode.encoders import scoring, spaces
from moenode.encoders.runtime import CLS, SEP, Encoder, content_ids, full_ids, normalise

TAU = 0.05
ROUNDS = 2  # training seeds: fresh patterns each round, so the adapter cannot learn one pattern
HOLDOUT_EVERY = 5  # every 5th item is held out
ALIGN = 3.0  # weight of the alignment term over the in-domain training texts and their views
GENERAL = 30.0  # weight of the alignment term over general public text of every domain
PULL_RETRY = (3.0, 10.0)  # both weights scaled by these in turn while the fit fails admission to the base's space
BETA = 0.35  # partial whitening the fit starts from (0: the identity)


@dataclass
class Views:
    """Pooled base vectors of every view, and the contests (a-rows, b-rows) they form."""

    pooled: np.ndarray  # (rows, dim) float32, unnormalised
    groups: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # per (round, bucket, pattern)


@dataclass
class TrainResult:
    w: np.ndarray
    steps: int
    best_step: int
    loss_before: float  # split-half counting loss on held-out items, W = I
    loss_after: float
    mrr_before: float | None = None
    mrr_after: float | None = None
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out objective)
    admission: spaces.Admission | None = None  # same-text cosine to the base model on the reference texts
    align: float = ALIGN  # the alignment weights of the fit kept: in-domain texts, general text
    general: float = GENERAL


def view_plan(ids: list[list[int]], domain: str, mask_views: int = 8) -> tuple[list[list[int]], list[tuple[np.ndarray, np.ndarray]]]:
    """The token sequences of every training view, and the contests (a-rows, b-rows) they form; no model runs."""
    seqs: list[list[int]] = []
    groups: list[tuple[list[int], list[int]]] = []
    params = Params(mask_views=mask_views, min_negatives=1, score_window=128)  # every item at its own length
    for k in range(ROUNDS):
        plan = scoring.make_plan(ids, H("train", f"{domain}/{k}".encode()), params, [])
        base = len(seqs)
        seqs += plan.view_seqs()
        for b in plan.buckets:
            if len(b.members) < 2:
                continue
            for j in range(len(b.patterns)):
                groups.append(([base + b.row_a(m, j) for m in range(len(b.members))],
                               [base + b.row_b(m, j) for m in range(len(b.members))]))
    return seqs, [(np.array(a), np.array(b)) for a, b in groups]


def collect_views(encoder: Encoder, ids: list[list[int]], domain: str, progress: Callable[[int], None] | None = None,
                  mask_views: int = 8) -> Views:
    seqs, groups = view_plan(ids, domain, mask_views)

    def done(start: int, stop: int) -> None:
        if progress:
            progress(stop - start)

    return Views(encoder.pooled_in_chunks(seqs, 256, done), groups)


def _infonce(views: Views, w: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
    z = views.pooled @ w
    norm = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    e = z / norm
    de = np.zeros_like(e) if grad else None
    total, count = 0.0, 0
    for a, b in views.groups:
        ea, eb = e[a], e[b]
        logits = (ea @ eb.T) / TAU
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        n = len(a)
        total += float(-np.log(np.maximum(p[np.arange(n), np.arange(n)], 1e-30)).sum())
        count += n
        if de is not None:
            ds = p
            ds[np.arange(n), np.arange(n)] -= 1.0
            ds /= TAU
            np.add.at(de, a, ds @ eb)
            np.add.at(de, b, ds.T @ ea)
    if de is None or count == 0:
        return total / max(count, 1), None
    de /= count
    dz = (de - e * (e * de).sum(1, keepdims=True)) / norm  # through the L2 normalisation
    return total / count, views.pooled.T @ dz


def counting_loss(views: Views, w: np.ndarray) -> float:
    """The scorer's loss (share of negatives at least as close as the positive), float, for reporting."""
    e = scoring.to_f16(views.pooled @ w)
    e = e.astype(np.float32) / np.maximum(np.linalg.norm(e.astype(np.float32), axis=1, keepdims=True), 1e-12)
    losses = []
    for a, b in views.groups:
        s = e[a] @ e[b].T
        pos = np.diag(s)
        n = len(a)
        c = (s + 1e-6 >= pos[:, None]).sum(1) - 1  # minus the positive itself
        losses.append(c / (n - 1))
    return float(np.mean(np.concatenate(losses))) if losses else float("nan")


def mrr(vectors: np.ndarray, labels: Sequence[str]) -> float | None:
    """Mean reciprocal rank of the first same-label neighbour, over items whose label occurs more than once."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    s = v @ v.T
    np.fill_diagonal(s, -np.inf)
    return mrr_of_similarities(s, labels)


def mrr_of_similarities(s: np.ndarray, labels: Sequence[str]) -> float | None:
    """`mrr` from a similarity matrix whose diagonal is -inf; a -inf entry is a pair that can never be retrieved
    (an item whose same-label items are all out of reach scores 0)."""
    lab = np.array(labels)
    rr = []
    for i in range(len(lab)):
        same = lab == lab[i]
        same[i] = False
        if not same.any():
            continue
        other = ~same
        other[i] = False
        best = s[i][same].max()
        if best == -np.inf:
            rr.append(0.0)
            continue
        rank = 1 + int((s[i][other] >= best).sum())  # ties count against the model (a constant encoder gets 1/n)
        rr.append(1.0 / rank)
    return float(np.mean(rr)) if rr else None


Objective = Callable[[np.ndarray, bool], tuple[float, np.ndarray | None]]


def infonce(views: Views) -> Objective:
    """The split-half InfoNCE of `views` under W (and its gradient in W)."""
    return lambda w, grad: _infonce(views, w, grad)


def cosine_gap(source: np.ndarray, target: np.ndarray) -> Objective:
    """mean_i (1 - cos(source_i @ W, target_i)): how far W moves each row from where `target` has it.

    For an adapter, source = target = the base model's pooled vectors, so the term keeps the specialist in the base
    model's space on those texts; for a head from another model, target is the anchor's vectors of the same texts.
    """
    t = target / np.maximum(np.linalg.norm(target, axis=1, keepdims=True), 1e-12)
    n = len(source)

    def objective(w: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
        z = source @ w
        nz = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        c = (z * t).sum(1, keepdims=True) / nz
        loss = float(np.mean(1.0 - c))
        if not grad:
            return loss, None
        dz = -(t / nz - c * z / (nz * nz)) / n
        return loss, source.T @ dz

    return objective


def weighted(terms: Sequence[tuple[float, Objective]]) -> Objective:
    """sum_k weight_k * objective_k (terms of weight 0 are skipped)."""
    live = [(c, f) for c, f in terms if c]

    def objective(w: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
        total, g = 0.0, None
        for c, f in live:
            loss, gk = f(w, grad)
            total += c * loss
            if grad:
                assert gk is not None
                g = c * gk if g is None else g + c * gk
        return total, g

    return objective


def spectral_ball(radius: float) -> Callable[[np.ndarray], np.ndarray]:
    """Projection of W onto {W : ||W - I||_2 <= radius}: then |x W - x| <= radius |x| for every x, so every input,
    seen or not, keeps cosine >= sqrt(1 - radius^2) to the base model's vector."""

    def project(w: np.ndarray) -> np.ndarray:
        eye = np.eye(w.shape[0], dtype=w.dtype)
        u, s, vt = np.linalg.svd(w - eye)
        if s[0] <= radius:
            return w
        return (eye + (u * np.minimum(s, radius)) @ vt).astype(w.dtype)

    return project


def minimise(train_obj: Objective, held_obj: Objective, w0: np.ndarray, steps: int = 300, lr: float = 1e-4,
             patience: int = 60, on_step: Callable[[int, float], None] | None = None,
             project: Callable[[np.ndarray], np.ndarray] | None = None,
             ) -> tuple[np.ndarray, int, list[tuple[int, float]]]:
    """Adam on W from w0, keeping the W with the lowest held-out objective (checked every 5 steps; stops after
    `patience` steps without improvement). `project` maps W back into a feasible set after every step.
    Returns (best W, best step, held-out history)."""
    w = w0.astype(np.float32).copy()
    m1: np.ndarray = np.zeros_like(w)  # Adam's moments
    m2: np.ndarray = np.zeros_like(w)
    b1, b2 = 0.9, 0.999
    best, best_step, best_w = held_obj(w, False)[0], 0, w.copy()
    history = [(0, best)]
    for step in range(1, steps + 1):
        _, g = train_obj(w, True)
        assert g is not None
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        w -= (lr * (m1 / (1 - b1**step)) / (np.sqrt(m2 / (1 - b2**step)) + 1e-8)).astype(np.float32)
        if project is not None:
            w = project(w)
        if step % 5 == 0 or step == steps:
            h = held_obj(w, False)[0]
            history.append((step, h))
            if h < best:
                best, best_step, best_w = h, step, w.copy()
            elif step - best_step >= patience:
                break
        if on_step:
            on_step(step, history[-1][1])
    return best_w.astype(np.float32), best_step, history


def whitening(pooled: np.ndarray, beta: float) -> np.ndarray:
    """Partial whitening of the rows' covariance (rows unit-normalised first): W = V diag(s) V^T with
    s_k = (lambda_k + mean lambda)^(-beta/2), scaled so max s = 1. beta = 0 is the identity; larger beta spreads the
    directions the texts share least, a label-free way to bring out what tells texts of one domain apart."""
    x = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    lam, v = np.linalg.eigh(np.cov(x.T.astype(np.float64)))
    lam = np.maximum(lam, 0.0)
    s = (lam + lam.mean()) ** (-beta / 2)
    return ((v * (s / s.max())) @ v.T).astype(np.float32)


def fit(train: Views, held: Views, steps: int = 300, lr: float = 1e-4, patience: int = 60,
        on_step: Callable[[int, float], None] | None = None, align: float = 0.0,
        anchor: tuple[np.ndarray, np.ndarray] | None = None, radius: float | None = None,
        w0: np.ndarray | None = None, general: float = 0.0,
        general_texts: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, int, list[tuple[int, float]]]:
    """Adam on W (from w0, default I) for the split-half InfoNCE of `train`, early-stopped on `held`; returns (best
    W, best step, held-out history). `align` > 0 adds align * cosine_gap over the base vectors of the training texts
    (the view rows, plus `anchor[0]`; `anchor[1]` for the held-out objective); `general` > 0 adds general *
    cosine_gap over the base vectors of general text (`general_texts`: training, held-out); `radius` keeps
    ||W - I||_2 <= radius."""
    d = train.pooled.shape[1]

    def objective(views: Views, extra: np.ndarray | None, public: np.ndarray | None) -> Objective:
        rows = views.pooled if extra is None else np.concatenate([views.pooled, extra])
        terms = [(1.0, infonce(views)), (align, cosine_gap(rows, rows))]
        if public is not None:
            terms.append((general, cosine_gap(public, public)))
        return weighted(terms)

    gen = general_texts if general and general_texts is not None else (None, None)
    return minimise(objective(train, anchor[0] if anchor else None, gen[0]),
                    objective(held, anchor[1] if anchor else None, gen[1]),
                    np.eye(d, dtype=np.float32) if w0 is None else w0, steps, lr, patience, on_step,
                    spectral_ball(radius) if radius is not None else None)


def held_out(n: int) -> np.ndarray:
    """Which of n items are held out: every HOLDOUT_EVERY-th."""
    return np.arange(n) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1


def general_texts() -> list[str]:
    """General public text for the alignment term: every corpus domain's adapter split (the reference split, which
    admission is checked on, and the eval split stay out of the fit)."""
    from moenode.encoders import corpus

    return [item.text for d in corpus.domains() for item in corpus.split(d, "adapter")]


def split_ids(texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
    """(training, held-out) content ids of the scorable texts: every HOLDOUT_EVERY-th is held out."""
    ids = [x for x in content_ids(texts, 128) if len(x) >= scoring.BUCKETS[0]]
    held = [x for x, h in zip(ids, held_out(len(ids))) if h]
    train = [x for x, h in zip(ids, held_out(len(ids))) if not h]
    if len(train) < 8 or len(held) < 2:
        raise ValueError(f"need at least 10 items of >= 8 tokens to fit an adapter, got {len(ids)}")
    return train, held


def specialise(train: Views, held: Views, train_full: np.ndarray, held_full: np.ndarray, *, steps: int = 300,
               align: float = ALIGN, beta: float = BETA, radius: float | None = None,
               general: float = GENERAL, public: np.ndarray | None = None,
               on_step: Callable[[int, float], None] | None = None) -> tuple[np.ndarray, int, list[tuple[int, float]]]:
    """The specialist recipe: start from the partial whitening (`beta`) of the training texts and their views, then
    fit the split-half InfoNCE with the alignment terms (`align`, over the views and the full texts; `general`, over
    `public`) and early stopping on the held-out items. `*_full`: the base model's pooled vectors of the training /
    held-out texts; `public`: its pooled vectors of general text (every HOLDOUT_EVERY-th held out; None: no term)."""
    w0 = whitening(np.concatenate([train_full, train.pooled]), beta) if beta else None
    split = None
    if public is not None:
        h = held_out(len(public))
        split = (public[~h], public[h])
    return fit(train, held, steps, align=align, anchor=(train_full, held_full), radius=radius, w0=w0,
               on_step=on_step, general=general, general_texts=split)


def ridge(source: np.ndarray, target: np.ndarray, lam: float) -> np.ndarray:
    """W minimising |unit(source) W - unit(target)|^2 + lam |W|^2: the linear map that best puts one model's vectors
    on another's (rows: the same texts)."""
    x, y = normalise(source).astype(np.float64), normalise(target).astype(np.float64)
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y).astype(np.float32)


def fit_head(train: Views, held: Views, train_pairs: tuple[np.ndarray, np.ndarray],
             held_pairs: tuple[np.ndarray, np.ndarray], w0: np.ndarray, *, align: float, steps: int = 300,
             lr: float = 1e-4, patience: int = 60) -> tuple[np.ndarray, int, list[tuple[int, float]]]:
    """A head from one model into another's space: the split-half InfoNCE of the source model's views under W (its
    quality), plus `align` * cosine_gap(source W, target) over (source, target) vectors of the same texts."""

    def objective(views: Views, pairs: tuple[np.ndarray, np.ndarray]) -> Objective:
        return weighted([(1.0, infonce(views)), (align, cosine_gap(*pairs))])

    return minimise(objective(train, train_pairs), objective(held, held_pairs), w0, steps, lr, patience)


def train_adapter(encoder: Encoder, texts: Sequence[str], domain: str, labelled: tuple[list[str], list[str]] | None,
                  steps: int = 300, progress: Callable[[str, int, int], None] | None = None, *,
                  align: float = ALIGN, general: float = GENERAL, beta: float = BETA, reference: Sequence[str] = (),
                  public: Sequence[str] = ()) -> TrainResult:
    """Fit W on `texts` (in-domain); `labelled` = (texts, sources) for the retrieval audit, or None; `reference`:
    the public texts the admission rule is checked on (none: no check); `public`: general text of every domain that
    the `general` alignment term keeps in place (none: no such term; `general_texts()` is the corpus's)."""
    train_ids, held_ids = split_ids(texts)
    ids = train_ids + held_ids
    total_views = 2 * 8 * ROUNDS * len(ids) + len(ids) + len(reference) + len(public)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress("embed", done[0], total_views)

    train = collect_views(encoder, train_ids, domain + "/train", tick)
    held = collect_views(encoder, held_ids, domain + "/held", tick)
    full = encoder.pooled_ids([[CLS] + x + [SEP] for x in ids])
    tick(len(ids))
    eye = np.eye(encoder.dim, dtype=np.float32)
    ref = encoder.pooled_ids(full_ids(reference)) if reference else None
    tick(len(reference))
    pub = encoder.pooled_ids(full_ids(public)) if public else None
    tick(len(public))
    admission = None
    for scale in (1.0, *PULL_RETRY):  # stay in the space: stronger pulls if needed
        w, best_step, history = specialise(train, held, full[: len(train_ids)], full[len(train_ids):], steps=steps,
                                           align=align * scale, general=general * scale, public=pub, beta=beta,
                                           on_step=(lambda s, _: progress("train", s, steps)) if progress else None)
        if ref is None:
            break
        admission = spaces.admission(normalise(ref), normalise(ref @ w))
        if admission.admitted:
            break
    res = TrainResult(w, history[-1][0], best_step, counting_loss(held, eye), counting_loss(held, w), history=history,
                      admission=admission, align=align * scale, general=general * scale if pub is not None else 0.0)
    if labelled is not None:
        ltexts, labels = labelled
        pooled = encoder.pooled_ids(full_ids(ltexts))
        res.mrr_before, res.mrr_after = mrr(pooled, labels), mrr(pooled @ w, labels)
    return res
