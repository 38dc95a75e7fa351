"""Scoring audit: does the paying score pick the better model among honest ones, keep cheats out, and at what cost?

Two labelled sets: the corpus eval splits (5 domains; the tuning set) and the held-out audit set
(moenode/data/audit, 4 domains; never tuned on). Label quality of a model on a domain = its global same-source MRR
(every item of the domain in one index), which is what a submitter's index sees.

Stage 1, `embed`: every model embeds, once, the full texts of every labelled and reference item, and for each pattern
seed the split-half views of every item at its own bucket and below (score_variants.ViewTable). The vectors are
cached as .npy under --cache, so a variant of the score is numpy, not model runs. L6 keeps its pooled vectors, so the
L6 adapters (spec-*) are derived from them exactly as their graphs compute them.

Stage 2, `run`: simulated rounds. Batches of 16 and 64 items from one domain; every zoo model computes every
variant's per-item losses. Reported per variant and domain:
- agreement: over every honest pair and batch, the share where the lower batch score had the higher global MRR
  (ties count half), for all pairs, for pairs whose MRR difference is significant by a source bootstrap, within
  the L6 space (minilm-l6, spec-*), and against the within-batch MRR;
- best-of-3: how often a random honest shard of 3 picks its best-MRR member;
- cheats: the share of forced shards (one cheat, two random honest models) the cheat wins (ties go to the cheat);
- Spearman(mean loss, MRR) across the zoo, and whether L6 < L3 < bag of tokens < noise < constant holds in loss;
- delivered quality: one index over the winners' vectors of every batch, against each model alone;
- cost: half-length view rows per item (batch rows, reference rows), their tokens over the batch's plain-embed
  tokens, and CPU ms per item at measured per-token speeds.
Stage 3 (`run`, same call): pooling evidence across rounds, sampled scoring and grinding, as separate tables.

The variant `paying` is the paying score of protocol/scoring.md (its own plan, a 32-token window, in-batch
negatives, M = 2; loss `z`); `paying-j2` and the `-jN` variants use other cached patterns of the same seed, as
independent pattern sets. The evidence table of scoring.md 5.11 came from:

    run --seeds s0 --sets audit --draws 3 --losses count z --variants paying paying-j2 [--grind paying:z]
    run --seeds s0 --sets audit corpus --draws 3 --losses count z --no-delivered --variants cap32-m1 cap32-m2 ...
    cost --variants paying cap32-m4 --models minilm-l6 --per-domain 1

    .venv/bin/python bench/score_audit.py embed [--models ...] [--seeds s0 s1 b0]
    .venv/bin/python bench/score_audit.py run [--seeds s0 s1] [--batch 16 64] [--json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from _report import write_result
from encoders import spearman

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from moenode.encoders import corpus  # noqa: E402
from moenode.core.crypto import H  # noqa: E402
from moenode.encoders import score_variants as sv  # noqa: E402
from moenode.encoders import zoo  # noqa: E402
from moenode.encoders.runtime import content_ids, normalise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MOENODE_SCORE_CACHE", "/tmp/moenode-score-audit"))
L6, L3 = zoo.L6, zoo.L3
CHEATS = zoo.ADVERSARIES
DERIVED_FROM_L6 = ("minilm-l6",) + tuple(sorted(zoo.SPECIALIST_DOMAINS))


# the labelled universe ----------------------------------------------------------------------------------------------
@dataclass
class Universe:
    kind: np.ndarray  # "corpus", "audit" or "ref"
    domain: np.ndarray
    source: np.ndarray
    texts: list[str]
    ids: list[list[int]]

    def domain_items(self, kind: str, domain: str) -> np.ndarray:
        return np.flatnonzero((self.kind == kind) & (self.domain == domain))

    @property
    def ref(self) -> np.ndarray:
        return np.flatnonzero(self.kind == "ref")


@lru_cache(maxsize=1)
def universe() -> Universe:
    rows = [("corpus", d, it.source, it.text) for d in corpus.domains() for it in corpus.split(d, "eval")]
    rows += [("audit", d, it.source, it.text) for d in corpus.audit_domains() for it in corpus.audit(d)]
    rows += [("ref", d, it.source, it.text) for d in corpus.domains() for it in corpus.split(d, "reference")]
    texts = [r[3] for r in rows]
    return Universe(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
                    texts, content_ids(texts, 128))


@lru_cache(maxsize=8)
def table(seed_name: str) -> sv.ViewTable:
    u = universe()
    family, seed = sv.seed_of(seed_name)
    return sv.view_table(u.ids, list(u.kind == "ref"), family, seed)


# stage 1: embedding cache -------------------------------------------------------------------------------------------
def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


def _pooled(enc, seqs: list[list[int]], label: str) -> tuple[np.ndarray, float]:
    t0 = time.process_time()

    def done(start: int, stop: int) -> None:
        print(f"  {label}: {stop}/{len(seqs)} rows, {time.process_time() - t0:.0f} s CPU", file=sys.stderr, flush=True)

    out = enc.pooled_in_chunks(seqs, 8192, done)
    return out, time.process_time() - t0


def lite_rows(tab: sv.ViewTable) -> np.ndarray:
    """Rows a costly model computes in --lite mode: 8 patterns at each item's top bucket, and at every bucket of
    the reference items."""
    u = universe()
    keep = np.zeros(tab.row.shape, bool)
    tops = np.array([sv.BUCKETS.index(sv.top_bucket(len(x))) for x in u.ids])
    keep[np.arange(len(tops)), tops, :8] = True
    keep[u.ref, :, :8] = True
    return np.unique(tab.row[keep & (tab.row >= 0)])


def lite_ok(v: Variant) -> bool:
    """Whether a variant needs only lite rows."""
    return v.grouping in ("protocol", "batch", "refonly", "vsfull") and v.m <= 8 and not v.cap


def is_lite(model: str, seed: str) -> bool:
    return (CACHE / base_name(split_name(model)[1]) / f"views-{seed}.lite").exists()


def embed(models: list[str], seeds: list[str], paths: dict[str, str], lite: bool = False) -> None:
    u = universe()
    for name in models:
        enc = zoo.load(paths.get(name, name))
        keep_pooled = name == L6
        d = CACHE / name
        if not (d / "full.npy").exists():
            from moenode.encoders.runtime import full_ids

            pooled, _ = _pooled(enc, full_ids(u.texts), f"{name} full")
            _save(d / "full.npy", pooled if keep_pooled else normalise(pooled))
        for seed in seeds:
            path = d / f"views-{seed}.npy"
            if path.exists():
                continue
            tab = table(seed)
            rows = lite_rows(tab) if lite else np.arange(len(tab.seqs))
            got, cpu = _pooled(enc, [tab.seqs[r] for r in rows], f"{name} {seed}")
            pooled = np.zeros((len(tab.seqs), enc.dim), np.float32)
            pooled[rows] = got
            if lite:
                (d / f"views-{seed}.lite").write_text(f"{len(rows)} of {len(tab.seqs)} rows\n")
            _save(path, pooled if keep_pooled else sv.scoring.to_f16(normalise(pooled)))
            print(f"{name} {seed}: {len(tab.seqs)} rows, {tab.tokens(np.arange(len(tab.seqs)))} tokens, "
                  f"{cpu:.0f} s CPU", file=sys.stderr, flush=True)


# stage 2: simulated rounds ------------------------------------------------------------------------------------------
def available_models(seeds: list[str]) -> list[str]:
    """Zoo models, models cached under their own name (e.g. mpnet-base), and adapters on L6 (zoo or CACHE/adapters),
    that have every seed's views cached; honest models first."""
    names = list(zoo.names())
    names += sorted(p.name for p in CACHE.iterdir() if p.is_dir() and p.name not in names and p.name != "adapters")
    names += sorted(p.stem for p in (CACHE / "adapters").glob("*.npy")) if (CACHE / "adapters").is_dir() else []
    have = [m for m in names if all((CACHE / base_name(m) / f"views-{s}.npy").exists() for s in seeds)
            and (CACHE / base_name(m) / "full.npy").exists()]
    have = [m for m in have if not zoo.is_adversary(m)] + [m for m in have if zoo.is_adversary(m)]
    return have + [f"{k}:{b}" for k, b in DERIVED if b in have]


DERIVED = [("centre", L3), ("whiten", L3), ("centre", L6), ("whiten", L6), ("poolrec", L3), ("poolrec", L6),
           ("poolrec", "adv-bag-of-tokens")]


def base_name(model: str) -> str:
    return L6 if model in DERIVED_FROM_L6 or model.startswith("spec-") or model.startswith("sup-") else model


@lru_cache(maxsize=None)
def adapter(model: str) -> np.ndarray | None:
    if model == L6:
        return None
    path = zoo.adapter_dir() / f"{model}.npy"
    if not path.exists():
        path = CACHE / "adapters" / f"{model}.npy"
    return zoo.load_adapter(path)


def _derive(pooled: np.ndarray, model: str) -> np.ndarray:
    w = adapter(model)
    return normalise(pooled if w is None else pooled @ w)


# Derived models, named "<kind>:<base>":
# - centre:<base>, whiten:<base>  honest models whose only change is the geometry of the base's vectors (subtract the
#   mean of the public reference corpus; or also whiten by its covariance), then renormalise. They test whether a
#   graded loss pays for geometry rather than retrieval.
# - poolrec:<base>  ADVERSARY: the base model plus a recogniser of the public reference corpus that maps every
#   reference half to one junk vector (minus the base's mean direction), so reference negatives never compete.
def split_name(model: str) -> tuple[str, str]:
    return tuple(model.split(":", 1)) if ":" in model else ("", model)  # type: ignore[return-value]


def is_cheat(model: str) -> bool:
    kind, base = split_name(model)
    return kind == "poolrec" or zoo.is_adversary(base)


@lru_cache(maxsize=None)
def geometry(base: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, map) fitted on the reference corpus full vectors of `base`."""
    ref = full(base)[universe().ref].astype(np.float64)
    mu = ref.mean(0)
    if kind == "centre":
        return mu, np.eye(len(mu))
    x = ref - mu
    cov = x.T @ x / len(x) + 1e-3 * np.eye(len(mu))
    w, v = np.linalg.eigh(cov)
    return mu, v @ np.diag(w**-0.5) @ v.T


def _transform(x: np.ndarray, base: str, kind: str) -> np.ndarray:
    mu, w = geometry(base, kind)
    return normalise(((x.astype(np.float64) - mu) @ w).astype(np.float32))


@lru_cache(maxsize=None)
def full(model: str) -> np.ndarray:
    kind, base = split_name(model)
    if kind in ("centre", "whiten"):
        return _transform(full(base), base, kind)
    if kind:
        return full(base)
    arr = np.load(CACHE / base_name(model) / "full.npy")
    return _derive(arr, model) if base_name(model) == L6 else arr.astype(np.float32)


# Views are loaded for one domain at a time (its items and the reference items), so memory stays small.
SCOPE: list[tuple[str, str] | None] = [None]
_views: dict[tuple[str, str], np.ndarray] = {}


def set_scope(kind: str, domain: str) -> None:
    SCOPE[0] = (kind, domain)
    _views.clear()
    scoped.cache_clear()
    junk.cache_clear()


@lru_cache(maxsize=4)
def scoped(seed_name: str) -> tuple[sv.ViewTable, np.ndarray]:
    """The view table of the scope (rows renumbered) and the global rows it keeps."""
    assert SCOPE[0] is not None, "set_scope first"
    u, tab = universe(), table(seed_name)
    keep = np.zeros(len(u.texts), bool)
    keep[u.domain_items(*SCOPE[0])] = True
    keep[u.ref] = True
    sub = tab.row[keep]
    rows = np.sort(sub[sub >= 0])
    remap = -np.ones(len(tab.seqs), np.int64)
    remap[rows] = np.arange(len(rows))
    row = np.where(tab.row >= 0, remap[np.maximum(tab.row, 0)], -1)
    row[~keep] = -1
    return sv.ViewTable(row.astype(np.int32), [tab.seqs[r] for r in rows], tab.family, tab.seed), rows


def views(model: str, seed: str) -> np.ndarray:
    kind, base = split_name(model)
    if kind == "poolrec":
        return views(base, seed)
    key = (model, seed)
    if key not in _views:
        if kind:
            _views[key] = sv.scoring.to_f16(_transform(views(base, seed), base, kind))
        else:
            rows = scoped(seed)[1]
            arr = np.asarray(np.load(CACHE / base_name(model) / f"views-{seed}.npy", mmap_mode="r")[rows])
            _views[key] = sv.scoring.to_f16(_derive(arr, model)) if base_name(model) == L6 else arr
    return _views[key]


@lru_cache(maxsize=64)
def junk(model: str, seed: str) -> np.ndarray | None:
    kind, base = split_name(model)
    if kind != "poolrec":
        return None
    v = views(base, seed)
    mu = v[:: max(1, len(v) // 20000)].astype(np.float64).mean(0)
    return -mu / max(np.linalg.norm(mu), 1e-12)


@dataclass
class Variant:
    name: str
    grouping: str  # protocol | batch | ladder | refonly
    m: int = 8
    losses: tuple[str, ...] = ("count",)
    top_up: int = 0  # reference negatives: enough to reach this many negatives (protocol grouping: -1 = 31)
    n_ref: int = 0  # or a fixed number per bucket
    near: float = 0.0  # drop negatives the router puts at cosine >= near (0: keep all)
    sample: int = 0  # score a seed-drawn sample of this many queries (0: all)
    sample_negatives: bool = False  # only the sampled items serve as batch negatives
    families: tuple[str, ...] = ("mask",)
    cap: int = 0  # cut every item to at most this bucket, so the whole batch meets in one contest
    j0: int = 0  # first cached pattern used: variants at disjoint offsets are independent pattern sets
    window: int = 128  # protocol grouping: the paying plan's score_window
    both: bool = False  # score each pattern in both directions (the same rows)


def groups_for(v: Variant, batch: np.ndarray, seed_name: str, batch_key: bytes, router_sim) -> list[sv.Group]:
    u = universe()
    _, seed = sv.seed_of(seed_name)
    seed = seed + batch_key  # each round draws its own references and sample; patterns stay per seed
    if v.grouping == "protocol":
        return sv.protocol_groups(list(batch), u.ids, list(u.ref), seed, v.m, v.top_up if v.top_up >= 0 else 31,
                                  v.window)
    queries = None
    if v.sample:
        pick = sv.Stream("sample", seed).choose(len(batch), v.sample)
        queries = [int(batch[i]) for i in sorted(pick)]
    near = None
    if v.near:
        near = lambda x, y: router_sim(x, y) >= v.near  # noqa: E731
    return sv.batch_groups(list(map(int, batch)), u.ids, ladder=v.grouping == "ladder",
                           peers=v.grouping != "refonly", ref=list(u.ref) if (v.top_up or v.n_ref) else [],
                           n_ref=v.n_ref, top_up=v.top_up, seed=seed, queries=queries,
                           sample_negatives=v.sample_negatives, near=near, cap=v.cap)


@lru_cache(maxsize=None)
def router_matrix() -> np.ndarray:
    r = full(L3)
    return r @ r.T


def make_batches(items: np.ndarray, size: int, draws: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        perm = rng.permutation(items)
        out += [np.sort(perm[i : i + size]) for i in range(0, len(perm) - size + 1, size)]
    return out


@dataclass
class Rounds:
    """Per-item losses of every model on every batch of one (labelled set, domain, batch size, seed) cell."""

    batches: list[np.ndarray]
    losses: dict[str, np.ndarray]  # loss name -> (batches, batch size, models), NaN where unscored
    rows: np.ndarray  # (batches, 2): batch view rows and reference view rows needed
    tokens: np.ndarray  # (batches, 3): batch view tokens, reference view tokens, plain-embed tokens


def simulate(v: Variant, models: list[str], kind: str, domain: str, size: int, seed_name: str,
             draws: int) -> Rounds:
    u = universe()
    items = u.domain_items(kind, domain)
    key = H("score-audit/batches", f"{kind}/{domain}/{size}/{seed_name}".encode())
    batches = make_batches(items, size, draws, seed=int.from_bytes(key[:8], "big"))
    tab = scoped(seed_name)[0]
    rm = router_matrix()
    out = {name: np.full((len(batches), size, len(models)), np.nan) for name in v.losses}
    rows = np.zeros((len(batches), 2))
    tokens = np.zeros((len(batches), 3))
    for b, batch in enumerate(batches):
        slot = {int(g): i for i, g in enumerate(batch)}
        if v.grouping == "vsfull":
            _, seed = sv.seed_of(seed_name)
            qs = None
            if v.sample:
                pick = sv.Stream("sample", seed + b.to_bytes(4, "big")).choose(len(batch), v.sample)
                qs = [int(batch[i]) for i in sorted(pick)]
            for mi, model in enumerate(models):
                per, used = sv.vsfull_losses(views(model, seed_name), sv.scoring.to_f16(full(model)), tab,
                                             list(map(int, batch)), u.ids, v.m, v.losses, qs)
                for name, d in per.items():
                    for item, value in d.items():
                        out[name][b, slot[item], mi] = value
            rows[b] = len(used), 0
            tokens[b] = tab.tokens(np.array(sorted(used), np.int64)), 0, sum(len(u.ids[g]) + 2 for g in batch)
            continue
        groups = groups_for(v, batch, seed_name, b.to_bytes(4, "big"), lambda x, y: rm[x, y])
        for mi, model in enumerate(models):
            per = sv.item_losses(views(model, seed_name), tab, groups, v.m, v.losses, junk(model, seed_name), v.j0,
                                 v.both)
            for name, d in per.items():
                for item, value in d.items():
                    out[name][b, slot[item], mi] = value
        br, rr = sv.rows_used(tab, groups, v.m, v.j0)
        rows[b] = len(br), len(rr)
        tokens[b] = (tab.tokens(np.array(sorted(br), np.int64)), tab.tokens(np.array(sorted(rr), np.int64)),
                     sum(len(u.ids[g]) + 2 for g in batch))
    return Rounds(batches, out, rows, tokens)


# metrics ------------------------------------------------------------------------------------------------------------
@dataclass
class Labels:
    items: np.ndarray
    rr: dict[str, np.ndarray]  # per-item reciprocal rank, domain order
    mrr: dict[str, float]
    significant: dict[tuple[str, str], bool]  # source-bootstrap 95% interval of the MRR difference excludes 0


@lru_cache(maxsize=None)
def labels(kind: str, domain: str, models: tuple[str, ...]) -> Labels:
    u = universe()
    items = u.domain_items(kind, domain)
    src = u.source[items]
    rr = {m: sv.reciprocal_ranks(full(m)[items], src) for m in models}
    mrr = {m: float(np.nanmean(r)) for m, r in rr.items()}
    sig = {}
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            _, lo, hi = sv.bootstrap_diff(rr[a], rr[b], src)
            sig[a, b] = sig[b, a] = lo > 0 or hi < 0
    return Labels(items, rr, mrr, sig)


def batch_scores(r: Rounds, loss: str) -> np.ndarray:
    """(batches, models): mean over the items every model was scored on."""
    x = r.losses[loss]
    ok = ~np.isnan(x).any(2)
    return np.array([x[b][ok[b]].mean(0) if ok[b].any() else np.full(x.shape[2], np.nan) for b in range(len(x))])


def pair_agreement(scores: np.ndarray, quality: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    """Share of (batch, pair) where the lower score has the higher quality; ties in score count half."""
    vals = []
    for i, j in pairs:
        if quality[i] == quality[j]:
            continue
        hi, lo = (i, j) if quality[i] > quality[j] else (j, i)
        vals.append((scores[:, hi] < scores[:, lo]) + 0.5 * (scores[:, hi] == scores[:, lo]))
    return float(np.mean(np.concatenate(vals))) if vals else float("nan")


def within_batch_agreement(r: Rounds, scores: np.ndarray, models: list[str], honest: list[int]) -> float:
    u = universe()
    vals = []
    for b, batch in enumerate(r.batches):
        q = np.array([np.nanmean(sv.reciprocal_ranks(full(models[i])[batch], u.source[batch]))
                      if np.isfinite(sv.reciprocal_ranks(full(models[i])[batch], u.source[batch])).any() else np.nan
                      for i in honest])
        for x in range(len(honest)):
            for y in range(x + 1, len(honest)):
                if np.isnan(q[x]) or q[x] == q[y]:
                    continue
                hi, lo = (honest[x], honest[y]) if q[x] > q[y] else (honest[y], honest[x])
                vals.append((scores[b, hi] < scores[b, lo]) + 0.5 * (scores[b, hi] == scores[b, lo]))
    return float(np.mean(vals)) if vals else float("nan")


def best_of_three(scores: np.ndarray, quality: np.ndarray, pool: list[int]) -> float:
    from itertools import combinations

    hits = []
    for shard in combinations(pool, 3):
        q = quality[list(shard)]
        if (q == q.max()).sum() > 1:
            continue
        best = shard[int(np.argmax(q))]
        s = scores[:, list(shard)]
        hits.append(np.array(shard)[np.argmin(s, 1)] == best)
    return float(np.mean(np.concatenate(hits))) if hits else float("nan")


def cheat_wins(scores: np.ndarray, cheat: int, pool: list[int]) -> float:
    from itertools import combinations

    wins = [scores[:, cheat] <= np.minimum(scores[:, a], scores[:, b]) for a, b in combinations(pool, 2)]
    return float(np.mean(np.concatenate(wins)))


def delivered(r: Rounds, scores: np.ndarray, models: list[str], pool: list[int], kind: str, domain: str,
              reps: int = 10) -> dict:
    """One index over the winners' full vectors of every batch of a draw (random honest shards of 3), MRR against
    each model alone on the same items."""
    u = universe()
    rng = np.random.default_rng(0)
    per_draw = len(universe().domain_items(kind, domain)) // len(r.batches[0])
    res, alone = [], {m: [] for m in (models[i] for i in pool)}
    for d0 in range(0, len(r.batches), per_draw):
        bs = range(d0, min(d0 + per_draw, len(r.batches)))
        items = np.concatenate([r.batches[b] for b in bs])
        for m in alone:
            alone[m].append(np.nanmean(sv.reciprocal_ranks(full(m)[items], u.source[items])))
        for _ in range(reps):
            vec = np.zeros((len(items), 1024), np.float32)
            dim = 0
            k = 0
            for b in bs:
                shard = rng.choice(pool, 3, replace=False)
                w = models[int(shard[np.argmin(scores[b, shard])])]
                v = full(w)[r.batches[b]]
                dim = max(dim, v.shape[1])
                vec[k : k + len(v), : v.shape[1]] = v
                k += len(v)
            res.append(np.nanmean(sv.reciprocal_ranks(vec[:, :dim], u.source[items])))
    alone_m = {m: float(np.mean(v)) for m, v in alone.items()}
    best = max(alone_m.values())
    return {"mrr": float(np.mean(res)), "best_alone": best, "vs_best": float(np.mean(res)) / best,
            "alone": alone_m}


RANKING = (L6, L3, "adv-bag-of-tokens", "adv-noise", "adv-constant")


def cell_metrics(r: Rounds, loss: str, models: list[str], kind: str, domain: str, with_delivered: bool) -> dict:
    honest = [i for i, m in enumerate(models) if not is_cheat(m) and not split_name(m)[0]]
    l6space = [i for i in honest if base_name(models[i]) == L6]
    lab = labels(kind, domain, tuple(models))
    q = np.array([lab.mrr[m] for m in models])
    sc = batch_scores(r, loss)
    pairs = [(a, b) for x, a in enumerate(honest) for b in honest[x + 1 :]]
    sig = [(a, b) for a, b in pairs if lab.significant[models[a], models[b]]]
    mean = np.nanmean(sc, 0)
    zoo_i = [i for i, m in enumerate(models) if not split_name(m)[0]]  # the zoo (and mpnet), not derived models
    out = {
        "agree_all": pair_agreement(sc, q, pairs),
        "agree_sig": pair_agreement(sc, q, sig),
        "agree_l6": pair_agreement(sc, q, [(a, b) for a, b in pairs if a in l6space and b in l6space]),
        "agree_l6_sig": pair_agreement(sc, q, [(a, b) for a, b in sig if a in l6space and b in l6space]),
        "n_sig_pairs": len(sig), "n_pairs": len(pairs),
        # validity: over significant pairs, does the mean score over every batch order them as the labels do?
        "valid_sig": pair_agreement(mean[None, :], q, sig),
        "invalid_pairs": [(models[a], models[b]) for a, b in sig
                          if pair_agreement(mean[None, :], q, [(a, b)]) < 1],
        "best_of_3": best_of_three(sc, q, honest),
        "cheats": {models[c]: cheat_wins(sc, c, honest) for c in range(len(models)) if is_cheat(models[c])},
        "gamers": {models[c]: {"mrr": lab.mrr[models[c]], "base_mrr": lab.mrr[split_name(models[c])[1]],
                               "wins_vs_base": float(np.mean(sc[:, c] < sc[:, models.index(split_name(models[c])[1])]))}
                   for c in range(len(models)) if split_name(models[c])[0] in ("centre", "whiten")},
        "spearman": spearman(-mean[zoo_i], q[zoo_i]),
        "mean_loss": {m: float(mean[i]) for i, m in enumerate(models)},
        "ranking_holds": bool(all(mean[models.index(a)] < mean[models.index(b)]
                                  for a, b in zip(RANKING, RANKING[1:]) if a in models and b in models)),
        "batches": len(r.batches),
    }
    if with_delivered:
        out["within_batch"] = within_batch_agreement(r, sc, models, honest)
        out["delivered_all"] = delivered(r, sc, models, honest, kind, domain)
        out["delivered_l6"] = delivered(r, sc, models, l6space, kind, domain)
    return out


def cost_of(r: Rounds, size: int) -> dict:
    return {"batch_rows_per_item": float(r.rows[:, 0].mean() / size),
            "ref_rows_per_item": float(r.rows[:, 1].mean() / size),
            "batch_view_tokens_per_plain": float(r.tokens[:, 0].sum() / r.tokens[:, 2].sum()),
            "ref_view_tokens_per_plain": float(r.tokens[:, 1].sum() / r.tokens[:, 2].sum())}


# pooling evidence across rounds ---------------------------------------------------------------------------------------
def paired_z(x: np.ndarray, a: int, b: int) -> float:
    """z of the mean per-item loss difference a - b on one batch (items both were scored on)."""
    d = x[:, a] - x[:, b]
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return 0.0
    sd = d.std(ddof=1)
    return float(d.mean() / (sd / np.sqrt(len(d)))) if sd > 0 else float(np.sign(d.mean()) * 1e9)


def pooled_stream(r: Rounds, loss: str, q: np.ndarray, pool: list[int], k: int, *, gate: float = 0.0,
                  forced: int | None = None, switch_from: int | None = None, entrant: int | None = None,
                  winner_only: bool = False, seed: int = 0, counted: set | None = None) -> dict:
    """Rounds in order, each a shard of 3 drawn from `pool` (or `forced` + 2). A candidate's pooled score is the mean
    of its relative scores (own batch score minus the shard's mean) over its last k earlier appearances and this
    round; q is each model's label quality. With `gate` > 0 a candidate whose current batch is worse than the current best by a paired z above `gate`
    cannot win. `switch_from`: the forced candidate carries that honest model's history (an honest-then-cheat
    identity). `entrant` joins halfway. `winner_only`: only winners' evidence is remembered (as the winner index
    holds today). `counted`: the pairs agreement counts (default all). Returns pair agreement of the decisions, best-of-3 hits, the forced candidate's win rate, and the
    entrant's win rates in its first 10 appearances and afterwards."""
    rng = np.random.default_rng(seed)
    sc = batch_scores(r, loss)
    x = r.losses[loss]
    hist: dict[int, list[float]] = {m: [] for m in range(len(q))}
    agree, best, fwins, ent = [], [], [], []
    start = len(sc) // 2
    for t in range(len(sc)):
        avail = [m for m in pool if not (entrant == m and t < start)]
        if forced is None:
            shard = list(rng.choice(avail, 3, replace=False))
        else:
            shard = [forced] + list(rng.choice([m for m in avail if m != switch_from], 2, replace=False))
        cur = sc[t, shard]
        rel = cur - cur.mean()
        pooled = []
        for i, m in enumerate(shard):
            h = hist[switch_from if (m == forced and switch_from is not None) else m]
            past = h[-k:] if k else []
            pooled.append((sum(past) + rel[i]) / (len(past) + 1))
        pooled = np.array(pooled)
        if gate:
            b = int(np.argmin(cur))
            ok = np.array([i == b or paired_z(x[t], shard[i], shard[b]) <= gate for i in range(3)])
            pooled = np.where(ok, pooled, np.inf)
        w = int(np.argmin(pooled))
        for i, m in enumerate(shard):
            if not winner_only or i == w:
                hist[m].append(float(rel[i]))
        if forced is not None:
            fwins.append(w == 0)
        hq = [m for m in shard if m != forced]
        for i in range(len(hq)):
            for j in range(i + 1, len(hq)):
                a, b = hq[i], hq[j]
                if q[a] == q[b] or (counted is not None and (a, b) not in counted):
                    continue
                hi, lo = (a, b) if q[a] > q[b] else (b, a)
                agree.append(pooled[shard.index(hi)] < pooled[shard.index(lo)])
        if forced is None:
            best.append(shard[w] == shard[int(np.argmax(q[shard]))])
        if entrant is not None and entrant in shard:
            ent.append((t >= start, shard[w] == entrant))
    first = [won for late, won in ent if late][:10]
    return {"agree": float(np.mean(agree)) if agree else float("nan"),
            "best_of_3": float(np.mean(best)) if best else float("nan"),
            "forced_wins": float(np.mean(fwins)) if fwins else float("nan"),
            "entrant_first10": float(np.mean(first)) if first else float("nan"),
            "entrant_later": float(np.mean([won for late, won in ent if late][10:]) if len(ent) > 10 else float("nan"))}


def pooled_metrics(r: Rounds, loss: str, models: list[str], kind: str, domain: str) -> dict:
    """Decisions on the current batch plus the last k appearances' relative scores (same region = same domain)."""
    honest = [i for i, m in enumerate(models) if not is_cheat(m) and not split_name(m)[0]]
    l6space = [i for i in honest if base_name(models[i]) == L6]
    lab = labels(kind, domain, tuple(models))
    q = np.array([lab.mrr[m] for m in models])
    best = max(honest, key=lambda i: q[i])
    sig = {(a, b) for a in honest for b in honest if a != b and lab.significant[models[a], models[b]]}
    out: dict = {}
    for k in (0, 2, 4, 8, 16):
        row: dict = {}
        for gate in (0.0, 2.0):
            runs = [pooled_stream(r, loss, q, honest, k, gate=gate, seed=s, entrant=best, counted=sig)
                    for s in range(4)]
            row[f"gate{gate:g}"] = {key: float(np.nanmean([x[key] for x in runs])) for key in runs[0]}
            row[f"gate{gate:g}"]["agree_l6"] = float(np.nanmean(
                [pooled_stream(r, loss, q, l6space, k, gate=gate, seed=s, counted=sig)["agree"] for s in range(4)]))
            row[f"gate{gate:g}"]["cheats"] = {
                models[c]: float(np.mean([pooled_stream(r, loss, q, honest, k, gate=gate, forced=c, seed=s)
                                          ["forced_wins"] for s in range(2)]))
                for c in range(len(models)) if is_cheat(models[c])}
            row[f"gate{gate:g}"]["switch_from_l6"] = {
                models[c]: float(np.mean([pooled_stream(r, loss, q, honest, k, gate=gate, forced=c,
                                                        switch_from=models.index(L6), seed=s)["forced_wins"]
                                          for s in range(2)]))
                for c in range(len(models)) if zoo.is_adversary(models[c])}
        row["winner_only"] = float(np.nanmean(
            [pooled_stream(r, loss, q, honest, k, winner_only=True, seed=s, counted=sig)["agree"] for s in range(4)]))
        out[str(k)] = row
    return out


def grind_metrics(r: Rounds, loss: str, models: list[str], k: int, tries=(1, 16, 256, 4096)) -> dict:
    """A batch scored on a sample of k items: if a producer could steer the sample (try G samples, keep the best
    for itself), how often does it win a shard against two honest models? Worst case: it knows their item losses."""
    honest = [i for i, m in enumerate(models) if not is_cheat(m) and not split_name(m)[0]]
    grinders = [i for i, m in enumerate(models) if zoo.is_adversary(m)] + [models.index(L3)]
    x = r.losses[loss]
    rng = np.random.default_rng(0)
    out = {}
    for g in grinders:
        pool = [h for h in honest if h != g]
        wins = {t: [] for t in tries}
        for b in range(len(x)):
            ok = np.flatnonzero(~np.isnan(x[b]).any(1))
            if len(ok) < k:
                continue
            samp = np.argsort(rng.random((max(tries), len(ok))), 1)[:, :k]
            means = x[b][ok][samp].mean(1)  # (tries, models)
            for a_i in range(len(pool)):
                for b_i in range(a_i + 1, len(pool)):
                    adv = means[:, g] - np.minimum(means[:, pool[a_i]], means[:, pool[b_i]])
                    for t in tries:
                        wins[t].append(adv[:t].min() <= 0)
        out[models[g]] = {str(t): float(np.mean(w)) for t, w in wins.items()}
    return out


VARIANTS = {v.name: v for v in [
    Variant("protocol", "protocol", 8, tuple(sv.LOSSES), top_up=-1),
    Variant("protocol-m1", "protocol", 1, tuple(sv.LOSSES), top_up=-1),
    Variant("protocol-m2", "protocol", 2, tuple(sv.LOSSES), top_up=-1),
    Variant("protocol-m4", "protocol", 4, tuple(sv.LOSSES), top_up=-1),
    Variant("protocol-m16", "protocol", 16, tuple(sv.LOSSES), top_up=-1),
    # the paying plan of protocol/scoring.md: a 32-token window, in-batch negatives, demotion of lonely buckets
    Variant("paying", "protocol", 2, ("z", "count"), top_up=0, window=32),
    *(Variant(f"paying-j{j}", "protocol", 2, ("z",), top_up=0, window=32, j0=j) for j in (2, 4, 6)),
    *(Variant(f"paying-both{s}", "protocol", 2, ("z",), top_up=0, window=32, j0=j, both=True)
      for s, j in (("", 0), ("-j2", 2), ("-j4", 4), ("-j6", 6))),
    Variant("batch", "batch", 8, tuple(sv.LOSSES)),
    Variant("ladder", "ladder", 8, tuple(sv.LOSSES)),
    Variant("ladder-ref31", "ladder", 8, tuple(sv.LOSSES), top_up=31),
    Variant("ref31-near80", "batch", 8, tuple(sv.LOSSES), top_up=31, near=0.8),
    Variant("ref31-near70", "batch", 8, tuple(sv.LOSSES), top_up=31, near=0.7),
    Variant("ladder-near70", "ladder", 8, tuple(sv.LOSSES), near=0.7),
    Variant("refonly31", "refonly", 8, tuple(sv.LOSSES), n_ref=31),
    Variant("blocks", "protocol", 8, tuple(sv.LOSSES), families=("blocks",)),
    Variant("blocks-ladder", "ladder", 8, tuple(sv.LOSSES), families=("blocks",)),
    Variant("vsfull-m1", "vsfull", 1, tuple(sv.LOSSES)),
    Variant("vsfull-m4", "vsfull", 4, tuple(sv.LOSSES)),
    Variant("vsfull-s4-m1", "vsfull", 1, tuple(sv.LOSSES), sample=4),
    Variant("vsfull-s8-m1", "vsfull", 1, tuple(sv.LOSSES), sample=8),
    Variant("vsfull-s8-m2", "vsfull", 2, tuple(sv.LOSSES), sample=8),
    Variant("samp4-m2-ref31", "batch", 2, tuple(sv.LOSSES), sample=4, sample_negatives=True, top_up=31),
    Variant("samp8-m1-ref31", "batch", 1, tuple(sv.LOSSES), sample=8, sample_negatives=True, top_up=31),
    Variant("samp4-m2-batch", "batch", 2, tuple(sv.LOSSES), sample=4),
    Variant("samp8-m1-ladder", "ladder", 1, tuple(sv.LOSSES), sample=8, sample_negatives=True),
    Variant("cap16-m2", "batch", 2, tuple(sv.LOSSES), cap=16),
    Variant("cap16-m8", "batch", 8, tuple(sv.LOSSES), cap=16),
    Variant("cap32-m2", "batch", 2, tuple(sv.LOSSES), cap=32),
    Variant("cap32-m8", "batch", 8, tuple(sv.LOSSES), cap=32),
    Variant("cap32-m1-s4", "batch", 1, tuple(sv.LOSSES), cap=32, sample=4),
    Variant("cap16-m2-s4", "batch", 2, tuple(sv.LOSSES), cap=16, sample=4),
    Variant("cap32-m2-s8", "batch", 2, tuple(sv.LOSSES), cap=32, sample=8),
    # fewer views (m), a common window (cap) and a sample of queries (s), alone and together
    *(Variant(f"batch-m{m}", "batch", m, tuple(sv.LOSSES)) for m in (1, 2, 4)),
    *(Variant(f"batch-s{k}-m{m}", "batch", m, tuple(sv.LOSSES), sample=k) for k, m in ((8, 2), (8, 4), (4, 4))),
    *(Variant(f"cap{c}-m{m}", "batch", m, tuple(sv.LOSSES), cap=c) for c, m in ((32, 4), (64, 2), (32, 1))),
    *(Variant(f"cap{c}-m{m}-s{k}", "batch", m, tuple(sv.LOSSES), cap=c, sample=k)
      for c, m, k in ((32, 4, 8), (32, 4, 4), (64, 2, 8))),
    *(Variant(f"cap32-m2-j{j}", "batch", 2, tuple(sv.LOSSES), cap=32, j0=j) for j in (2, 4, 6)),
    *(Variant(f"cap32-m4-j{j}", "batch", 4, tuple(sv.LOSSES), cap=32, j0=j) for j in (4,)),
]}
SETS = {"corpus": corpus.domains, "audit": corpus.audit_domains}


def run(variants: list[str], seeds: list[str], sizes: list[int], draws16: int, sets: list[str],
        with_delivered: bool, pooled: list[str] = (), grind: list[str] = ()) -> dict:
    """`pooled` and `grind` name "variant:loss" cells that also get the pooling and grinding analyses."""
    vs = [VARIANTS[n] for n in variants]
    vseeds = {v.name: [s for s in seeds if sv.seed_of(s)[0] in v.families] for v in vs}
    models = {v.name: [m for m in available_models(vseeds[v.name])
                       if lite_ok(v) or not any(is_lite(m, sd) for sd in vseeds[v.name])] for v in vs if vseeds[v.name]}
    out: dict = {}
    for kind in sets:
        for domain in SETS[kind]():
            set_scope(kind, domain)
            t0 = time.process_time()
            parts: dict[tuple[str, int], list[Rounds]] = {}
            for seed in seeds:
                for v in vs:
                    if seed not in vseeds[v.name]:
                        continue
                    for size in sizes:
                        draws = draws16 if size == 16 else draws16 * 2
                        parts.setdefault((v.name, size), []).append(
                            simulate(v, models[v.name], kind, domain, size, seed, draws))
            for (vname, size), ps in parts.items():
                r = Rounds([b for p in ps for b in p.batches],
                           {n: np.concatenate([p.losses[n] for p in ps]) for n in ps[0].losses},
                           np.concatenate([p.rows for p in ps]), np.concatenate([p.tokens for p in ps]))
                cell = {"cost": cost_of(r, size), "models": models[vname]}
                for loss in r.losses:
                    cell[loss] = cell_metrics(r, loss, models[vname], kind, domain,
                                              with_delivered and loss in ("count", "z"))
                    if f"{vname}:{loss}" in pooled:
                        cell[loss]["pooled"] = pooled_metrics(r, loss, models[vname], kind, domain)
                    if f"{vname}:{loss}" in grind:
                        cell[loss]["grind"] = {str(k): grind_metrics(r, loss, models[vname], k) for k in (4, 8)}
                out.setdefault(vname, {}).setdefault(str(size), {}).setdefault(kind, {})[domain] = cell
            print(f"  {kind}/{domain}: {time.process_time() - t0:.0f} s CPU", file=sys.stderr, flush=True)
    return out


def summary(res: dict) -> list[dict]:
    rows = []
    for vname, by_size in res.items():
        for size, by_set in by_size.items():
            any_cell = next(iter(next(iter(by_set.values())).values()))
            for loss in (k for k in any_cell if k not in ("cost", "models")):
                row = {"variant": vname, "size": int(size), "loss": loss}
                for kind, cells in by_set.items():
                    m = [c[loss] for c in cells.values()]
                    row[f"{kind}_sig_min"] = float(np.nanmin([x["agree_sig"] for x in m]))
                    row[f"{kind}_sig_mean"] = float(np.nanmean([x["agree_sig"] for x in m]))
                    row[f"{kind}_all_mean"] = float(np.mean([x["agree_all"] for x in m]))
                    row[f"{kind}_l6_mean"] = float(np.nanmean([x["agree_l6"] for x in m]))
                    row[f"{kind}_best3"] = float(np.mean([x["best_of_3"] for x in m]))
                    row[f"{kind}_cheat_max"] = max(max(v for c, v in x["cheats"].items() if c in CHEATS) for x in m)
                    row[f"{kind}_poolrec_max"] = max(max([v for c, v in x["cheats"].items() if c not in CHEATS],
                                                         default=0.0) for x in m)
                    row[f"{kind}_valid"] = float(np.nanmean([x["valid_sig"] for x in m]))
                    row[f"{kind}_n_sig"] = int(sum(x["n_sig_pairs"] for x in m))
                    row[f"{kind}_spearman_min"] = min(x["spearman"] for x in m)
                    row[f"{kind}_ranking"] = all(x["ranking_holds"] for x in m)
                    row[f"{kind}_cost"] = float(np.mean([c["cost"]["batch_view_tokens_per_plain"]
                                                         for c in cells.values()]))
                    row[f"{kind}_refcost"] = float(np.mean([c["cost"]["ref_view_tokens_per_plain"]
                                                            for c in cells.values()]))
                rows.append(row)
    return rows


def print_summary(rows: list[dict], sets: list[str]) -> None:
    head = f"{'variant':16s} {'B':>3s} {'loss':7s}"
    for k in sets:
        head += f" | {k[:6]:6s} sig-min sig-mean valid all  L6   best3 cheat  prec  rho  rank  cost+ref"
    print(head)
    for r in rows:
        line = f"{r['variant']:16s} {r['size']:3d} {r['loss']:7s}"
        for k in sets:
            line += (f" | {'':6s} {r[f'{k}_sig_min']:.2f}    {r[f'{k}_sig_mean']:.2f}     {r[f'{k}_valid']:.2f}  "
                     f"{r[f'{k}_all_mean']:.2f} {r[f'{k}_l6_mean']:.2f} {r[f'{k}_best3']:.2f}  "
                     f"{r[f'{k}_cheat_max']:.3f} {r[f'{k}_poolrec_max']:.2f} "
                     f"{r[f'{k}_spearman_min']:.2f} {'yes' if r[f'{k}_ranking'] else 'NO ':4s} "
                     f"{r[f'{k}_cost']:.2f}+{r[f'{k}_refcost']:.2f}")
        print(line)


# measured cost --------------------------------------------------------------------------------------------------------
def measure_cost(variants: list[str], models: dict[str, str], sizes: list[int], per_domain: int) -> dict:
    """CPU ms per item: the views a variant needs for one batch (and its reference views, which a producer can
    compute once per epoch when patterns are fixed per epoch), against a plain embed of the same items by the same
    model. Real model runs, one ORT thread, process time."""
    u = universe()
    out: dict = {}
    for name, path in models.items():
        enc = zoo.load(path)
        enc.embed(u.texts[:8])
        for size in sizes:
            batches = []
            for kind in SETS:
                for domain in SETS[kind]():
                    items = u.domain_items(kind, domain)
                    batches += make_batches(items, size, 1, seed=len(batches))[:per_domain]
            plain = 0.0
            cost = {v: [0.0, 0.0] for v in variants}
            for b, batch in enumerate(batches):
                t = time.process_time()
                enc.embed([u.texts[g] for g in batch])
                plain += time.process_time() - t
                for vname in variants:
                    v = VARIANTS[vname]
                    seed = "b0" if v.families == ("blocks",) else "s0"
                    tab = table(seed)
                    if v.grouping == "vsfull":
                        kq = [sv.BUCKETS.index(sv.top_bucket(len(u.ids[g]))) for g in batch]
                        qs = list(batch)
                        if v.sample:
                            pick = sv.Stream("sample", sv.seed_of(seed)[1] + b.to_bytes(4, "big")).choose(
                                len(batch), v.sample)
                            qs = [batch[i] for i in sorted(pick)]
                            kq = [sv.BUCKETS.index(sv.top_bucket(len(u.ids[g]))) for g in qs]
                        br, rr = set(tab.row[qs, kq, : v.m, 0].ravel().tolist()), set()
                    else:
                        groups = groups_for(v, batch, seed, b.to_bytes(4, "big"), lambda x, y: router_matrix()[x, y])
                        br, rr = sv.rows_used(tab, groups, v.m)
                    for k, rows in enumerate((br, rr)):
                        if rows:
                            t = time.process_time()
                            enc.embed_ids([tab.seqs[r] for r in sorted(rows)])
                            cost[vname][k] += time.process_time() - t
            n = sum(len(b) for b in batches)
            res = {"plain_ms_per_item": 1000 * plain / n}
            for vname, (tb, tr) in cost.items():
                res[vname] = {"views_ms_per_item": 1000 * tb / n, "ref_ms_per_item": 1000 * tr / n,
                              "views_per_plain": tb / plain, "refs_per_plain": tr / plain}
            out.setdefault(name, {})[str(size)] = res
            print(f"  cost {name} B={size}: plain {res['plain_ms_per_item']:.1f} ms/item; " + ", ".join(
                f"{v} {res[v]['views_per_plain']:.2f}+{res[v]['refs_per_plain']:.2f}" for v in variants),
                file=sys.stderr, flush=True)
    return out


# specialists trained on labels, not on the score ---------------------------------------------------------------------
def sup_training_texts(domain: str) -> list[tuple[str, str]]:
    """(source, text) from this machine, same kind as a corpus domain but from sources the corpus and the audit set
    do not use: stdlib modules outside the corpus (code), man1/8 pages outside the corpus (man pages)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_corpus as bc  # noqa: PLC0415

    known = {it.text for it in corpus.load()} | {it.text for d in corpus.audit_domains() for it in corpus.audit(d)}
    used = {it.source for it in corpus.load()}
    if domain == "code_py":
        cands = bc.code_candidates(m for m in bc.stdlib_modules() if m[0] not in used)
    elif domain == "manpages":
        cands = bc.manpage_candidates(bc.debian_main_packages())
    else:
        raise ValueError(f"no label-trained specialist for {domain}")
    fresh = ((src, t) for src, t in cands if src not in used and t not in known)
    return bc.select(f"sup/{domain}", fresh, 4, 900)


def train_sup(domain: str, name: str) -> dict:
    """An L6 adapter fitted by same-source InfoNCE on full texts (labels), with train.fit; never sees the score."""
    from collections import defaultdict

    from moenode.encoders import train as tr
    from moenode.encoders.runtime import full_ids

    pairs = sup_training_texts(domain)
    by_src: dict[str, list[int]] = defaultdict(list)
    for i, (src, _) in enumerate(pairs):
        by_src[src].append(i)
    enc = zoo.load(L6)
    pooled = enc.pooled_ids(full_ids([t for _, t in pairs]))
    srcs = sorted(by_src, key=lambda x: H("sup", x.encode()))
    held_src = set(srcs[: len(srcs) // 5])

    def views(sources: list[str]) -> tr.Views:
        groups = []
        for a_k, b_k in ((0, 1), (1, 0), (0, 2), (1, 2)):
            ss = [x for x in sources if len(by_src[x]) > max(a_k, b_k)]
            for g in range(0, len(ss), 32):
                chunk = ss[g : g + 32]
                if len(chunk) >= 4:
                    groups.append((np.array([by_src[x][a_k] for x in chunk]), np.array([by_src[x][b_k] for x in chunk])))
        return tr.Views(pooled, groups)

    w, best_step, hist = tr.fit(views([x for x in srcs if x not in held_src]), views(sorted(held_src)), steps=400,
                                lr=1e-4, patience=100)
    (CACHE / "adapters").mkdir(parents=True, exist_ok=True)
    np.save(CACHE / "adapters" / f"{name}.npy", w.astype(np.float32))
    return {"items": len(pairs), "sources": len(srcs), "best_step": best_step, "held_infonce": hist[-1][1]}


def print_pooled(res: dict) -> list[dict]:
    """One line per (variant, loss, batch size, k, gate): pooled decisions over both labelled sets."""
    rows = []
    for vname, by_size in res.items():
        for size, by_set in by_size.items():
            losses = {loss for cells in by_set.values() for c in cells.values() for loss, x in c.items()
                      if isinstance(x, dict) and "pooled" in x}
            for loss in sorted(losses):
                for k in ("0", "2", "4", "8", "16"):
                    for gate in ("gate0", "gate2"):
                        row = {"variant": vname, "size": int(size), "loss": loss, "k": int(k), "gate": gate}
                        for kind, cells in by_set.items():
                            p = [c[loss]["pooled"][k] for c in cells.values()]
                            g = [x[gate] for x in p]
                            row[f"{kind}_agree_min"] = min(x["agree"] for x in g)
                            row[f"{kind}_agree_mean"] = float(np.mean([x["agree"] for x in g]))
                            row[f"{kind}_agree_l6"] = float(np.nanmean([x["agree_l6"] for x in g]))
                            row[f"{kind}_best3"] = float(np.mean([x["best_of_3"] for x in g]))
                            row[f"{kind}_cheat_max"] = max(max(v for c, v in x["cheats"].items() if c in CHEATS)
                                                           for x in g)
                            row[f"{kind}_switch_max"] = max(max(x["switch_from_l6"].values()) for x in g)
                            row[f"{kind}_winner_only"] = float(np.mean([x["winner_only"] for x in p]))
                            row[f"{kind}_entrant"] = (float(np.nanmean([x["entrant_first10"] for x in g])),
                                                      float(np.nanmean([x["entrant_later"] for x in g])))
                        rows.append(row)
    if rows:
        print("\npooled decisions (significant pairs): agreement min/mean, L6-space, best-of-3, cheat max, honest-then-cheat max, "
              "winner-only history agreement, best model entering: wins in first 10 / later")
        for r in rows:
            line = f"{r['variant']:14s} {r['size']:3d} {r['loss']:7s} k={r['k']:<2d} {r['gate']:5s}"
            for kind in SETS:
                if f"{kind}_agree_min" in r:
                    e = r[f"{kind}_entrant"]
                    line += (f" | {kind[:6]} {r[f'{kind}_agree_min']:.2f}/{r[f'{kind}_agree_mean']:.2f} "
                             f"{r[f'{kind}_agree_l6']:.2f} {r[f'{kind}_best3']:.2f} {r[f'{kind}_cheat_max']:.3f} "
                             f"{r[f'{kind}_switch_max']:.2f} {r[f'{kind}_winner_only']:.2f} {e[0]:.2f}/{e[1]:.2f}")
            print(line)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed", help="fill the embedding cache")
    e.add_argument("--models", nargs="*", default=[L6, L3] + list(CHEATS))
    e.add_argument("--seeds", nargs="*", default=["s0", "s1", "b0"])
    e.add_argument("--lite", action="store_true", help="only each item's top bucket with 8 patterns (costly models)")
    e.add_argument("--model-path", nargs="*", default=[], metavar="NAME=PATH",
                   help="an ONNX file to cache under NAME (e.g. mpnet-base=.../mpnet-base-<key>.onnx)")
    r = sub.add_parser("run", help="simulate rounds on the cache and report")
    r.add_argument("--seeds", nargs="*", default=["s0", "s1", "b0"])
    r.add_argument("--batch", nargs="*", type=int, default=[16, 64])
    r.add_argument("--variants", nargs="*", default=list(VARIANTS))
    r.add_argument("--sets", nargs="*", default=list(SETS))
    r.add_argument("--losses", nargs="*", default=list(sv.LOSSES), help="losses to report (default: all)")
    r.add_argument("--draws", type=int, default=2, help="partitions of each domain per seed at batch 16")
    r.add_argument("--no-delivered", action="store_true", help="skip the delivered-quality simulation")
    r.add_argument("--pooled", nargs="*", default=[], metavar="VARIANT:LOSS", help="also simulate pooled decisions")
    r.add_argument("--grind", nargs="*", default=[], metavar="VARIANT:LOSS", help="also simulate sample grinding")
    r.add_argument("--json", action="store_true")
    r.add_argument("--out", default=str(ROOT / "bench" / "results" / "score_audit.json"))
    c = sub.add_parser("cost", help="measure CPU per item of each variant's views against a plain embed")
    c.add_argument("--variants", nargs="*", default=["protocol", "vsfull-m1"])
    c.add_argument("--models", nargs="*", default=[L6, L3], metavar="NAME[=PATH]")
    c.add_argument("--batch", nargs="*", type=int, default=[16, 64])
    c.add_argument("--per-domain", type=int, default=2)
    c.add_argument("--out", default=str(ROOT / "bench" / "results" / "score_cost.json"))
    c.add_argument("--json", action="store_true")
    t = sub.add_parser("train-sup", help="fit label-trained L6 adapters (sup-code, sup-man) into the cache")
    t.add_argument("--domains", nargs="*", default=["code_py", "manpages"])
    a = ap.parse_args()
    if a.cmd == "train-sup":
        for d in a.domains:
            name = {"code_py": "sup-code", "manpages": "sup-man"}[d]
            print(name, train_sup(d, name))
        return
    if a.cmd == "cost":
        models = dict(x.split("=", 1) if "=" in x else (x, x) for x in a.models)
        write_result({"variants": a.variants, "cost": measure_cost(a.variants, models, a.batch, a.per_domain)},
                     a.out, a.json)
        return
    if a.cmd == "embed":
        embed(a.models, a.seeds, dict(x.split("=", 1) for x in a.model_path), a.lite)
        return
    t0 = time.perf_counter()
    for name in a.variants:
        VARIANTS[name].losses = tuple(x for x in VARIANTS[name].losses if x in a.losses)
    res = run(a.variants, a.seeds, a.batch, a.draws, a.sets, not a.no_delivered, a.pooled, a.grind)
    rows = summary(res)
    print_summary(rows, a.sets)
    pooled_rows = print_pooled(res)
    write_result({"seeds": a.seeds, "draws": a.draws, "variants": res, "summary": rows, "pooled": pooled_rows,
                  "seconds": round(time.perf_counter() - t0, 1)}, a.out, a.json)


if __name__ == "__main__":
    main()
