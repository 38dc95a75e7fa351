"""Vector spaces, model side: alignment to the anchor, specialists that stay in L6's space, the large expert's head
into it, and the admission and in-round space checks, on both labelled sets.

Labelled sets: the corpus eval split of each of 5 domains (the tuning set) and the held-out audit set
(`corpus.audit()`, 4 domains, never tuned on). Label quality = global same-source MRR over a whole domain
(`train.mrr`, as bench/encoders.py). Same-text cosine = the cosine between two models' unit vectors of one text.

Stage `embed` fills a cache (MOENODE_SPACE_CACHE, default /tmp/moenode-space-models) with the pooled vectors of
L6, L3 and mpnet-base on every corpus and audit text, and of the split-half training views of every domain's adapter
split; every other model here (adapters, heads, cheats) is a map of those vectors, exactly as its graph computes it.
Stage `run` reproduces every table and writes bench/results/space_models.json. Stage `ship` fits the shipped
specialists (`moenode/data/adapters/spec-*.npy`) with the recipe of `moenode expert train` (`train.specialise` with
its defaults, the general alignment term over every domain's adapter split) on each home domain's adapter split,
checks their admission, and writes them.

    .venv/bin/python bench/space_models.py embed
    .venv/bin/python bench/space_models.py run [--json]
    .venv/bin/python bench/space_models.py ship
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from _report import write_result

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from moenode.encoders import corpus  # noqa: E402
from moenode.encoders import spaces, train, zoo  # noqa: E402
from moenode.encoders.runtime import full_ids, normalise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MOENODE_SPACE_CACHE", "/tmp/moenode-space-models"))
L6, L3, MPNET = zoo.L6, zoo.L3, zoo.MPNET
BASES = (L6, L3, MPNET)


# the texts ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Universe:
    """Every labelled text: the whole corpus (parts eval, reference, adapter) and the audit set (part "audit")."""

    kind: np.ndarray  # "corpus" or "audit"
    domain: np.ndarray
    part: np.ndarray
    source: np.ndarray
    texts: tuple[str, ...]

    def rows(self, kind: str, domain: str | None = None, part: str | None = None) -> np.ndarray:
        keep = self.kind == kind
        if domain is not None:
            keep &= self.domain == domain
        if part is not None:
            keep &= self.part == part
        return np.flatnonzero(keep)


@lru_cache(maxsize=1)
def universe() -> Universe:
    rows = [("corpus", it.domain, corpus.part_of(it.id), it.source, it.text) for it in corpus.load()]
    rows += [("audit", d, "audit", it.source, it.text) for d in corpus.audit_domains() for it in corpus.audit(d)]
    k, d, p, s, t = zip(*rows)
    return Universe(np.array(k), np.array(d), np.array(p), np.array(s), tuple(t))


# the embedding cache -----------------------------------------------------------------------------------------------
def _digest(seqs: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(seqs).encode()).hexdigest()[:16]


def pooled(model: str, tag: str, seqs: list[list[int]], compute: bool = False) -> np.ndarray:
    """Mean-pooled (unnormalised) vectors of token sequences, cached by model and content."""
    path = CACHE / model / f"{tag}-{_digest(seqs)}.npy"
    if path.exists():
        return np.load(path)
    if not compute:
        raise SystemExit(f"no cached {model} {tag} vectors: run `bench/space_models.py embed` first")
    enc = zoo.load(model)
    t0 = time.process_time()

    def done(start: int, stop: int) -> None:
        print(f"  {model} {tag}: {stop}/{len(seqs)}, {time.process_time() - t0:.0f} s CPU", file=sys.stderr, flush=True)

    out = enc.pooled_in_chunks(seqs, 1024, done)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)
    return out


def full(model: str, compute: bool = False) -> np.ndarray:
    """Pooled vectors of every universe text (row order of `universe()`)."""
    return pooled(model, "full", full_ids(universe().texts), compute)


SEEDS = (1, 2)  # training seeds besides the one `moenode expert train` uses (0), for the spread across seeds


@lru_cache(maxsize=None)
def view_split(domain: str, seed: int = 0) -> dict[str, tuple[list[list[int]], list[tuple[np.ndarray, np.ndarray]]]]:
    """The training views of a domain's adapter split, as `moenode expert train` draws them: train and held parts
    (seed 0; another seed draws other patterns from the same texts)."""
    texts = [it.text for it in corpus.split(domain, "adapter")]
    train_ids, held_ids = train.split_ids(texts)
    tail = f"/seed{seed}" if seed else ""
    return {w: train.view_plan(ids, f"{domain}/{w}{tail}") for w, ids in (("train", train_ids), ("held", held_ids))}


def views(model: str, domain: str, which: str, compute: bool = False, seed: int = 0) -> train.Views:
    seqs, groups = view_split(domain, seed)[which]
    tag = f"views-{domain}-{which}" + (f"-seed{seed}" if seed else "")
    return train.Views(pooled(model, tag, seqs, compute), groups)


def embed(models: list[str]) -> None:
    for m in models:
        full(m, compute=True)
    for m in models:
        if m == L3:
            continue
        for d in corpus.domains():
            for which in ("train", "held"):
                views(m, d, which, compute=True)
    for d in SPECIALISTS.values():
        for seed in SEEDS:
            for which in ("train", "held"):
                views(L6, d, which, compute=True, seed=seed)


# shared measures -----------------------------------------------------------------------------------------------------
def unit(v: np.ndarray) -> np.ndarray:
    return normalise(np.asarray(v, np.float32))


def same_text(a: np.ndarray, b: np.ndarray) -> dict:
    """p5, median and min of the same-text cosines of two models' vectors (rows = the same texts)."""
    c = (unit(a) * unit(b)).sum(1)
    return {"p5": float(np.percentile(c, 5)), "median": float(np.median(c)), "min": float(c.min())}


@lru_cache(maxsize=1)
def labelled() -> list[tuple[str, str, np.ndarray]]:
    """(set, domain, universe rows) of every labelled domain: corpus eval splits, then the audit domains."""
    u = universe()
    out = [("corpus", d, u.rows("corpus", d, "eval")) for d in corpus.domains()]
    return out + [("audit", d, u.rows("audit", d)) for d in corpus.audit_domains()]


def mrrs(vectors: np.ndarray) -> dict[str, float]:
    """Global same-source MRR of every labelled domain ("corpus/code_py", "audit/py_tests", ...)."""
    u = universe()
    return {f"{k}/{d}": train.mrr(vectors[r], u.source[r]) for k, d, r in labelled()}


def alignment_rows(kind: str) -> np.ndarray:
    """The texts same-text cosines are reported on: the corpus eval split, the audit set, or the reference split."""
    u = universe()
    return u.rows("corpus", None, "eval") if kind == "corpus" else u.rows("audit") if kind == "audit" \
        else u.rows("corpus", None, "reference")


# 2. specialists that stay in L6's space -------------------------------------------------------------------------------
SPECIALISTS = dict(sorted(zoo.SPECIALIST_DOMAINS.items()))  # name -> home domain of the corpus
AUDIT_HOME = {"code_py": "py_tests", "manpages": "man57", "legal": None}  # the audit has no legal text
RECIPE = f"whiten{train.BETA:g}+score+align{train.ALIGN:g}+general{train.GENERAL:g}"  # what expert train fits
# name -> (objective, partial whitening beta, in-domain alignment weight, spectral radius, general alignment weight)
VARIANTS: dict[str, tuple[str, float, float, float | None, float]] = {v: (*t, 0.0) for v, t in {
    "score": ("score", 0.0, 0.0, None),  # split-half InfoNCE alone: a specialist's "own vectors"
    "score+align1": ("score", 0.0, 1.0, None),
    "score+align3": ("score", 0.0, 3.0, None),
    "score+align10": ("score", 0.0, 10.0, None),
    "score+ball0.2": ("score", 0.0, 0.0, 0.2),
    "score+ball0.3": ("score", 0.0, 0.0, 0.3),
    "sources": ("sources", 0.0, 0.0, None),  # same-source InfoNCE on the adapter split's labels
    "sources+align1": ("sources", 0.0, 1.0, None),
    "whiten0.25": ("whiten", 0.25, 0.0, None),  # label-free, closed form
    "whiten0.5": ("whiten", 0.5, 0.0, None),
    "whiten1": ("whiten", 1.0, 0.0, None),
    "whiten0.25+score": ("score", 0.25, 0.0, None),
    "whiten0.25+score+align3": ("score", 0.25, 3.0, None),
    "whiten0.5+score": ("score", 0.5, 0.0, None),
    "whiten0.5+score+align3": ("score", 0.5, 3.0, None),
    "whiten0.5+score+align10": ("score", 0.5, 10.0, None),
    "whiten0.5+score+align30": ("score", 0.5, 30.0, None),
}.items()} | {  # the alignment term also over general text of every domain (the adapter splits)
    "whiten0.25+score+align3+general30": ("score", 0.25, 3.0, None, 30.0),
    "whiten0.5+score+align3+general30": ("score", 0.5, 3.0, None, 30.0),
    RECIPE: ("score", train.BETA, train.ALIGN, None, train.GENERAL),
}


def adapter_rows(domain: str) -> tuple[np.ndarray, np.ndarray]:
    """Universe rows of a domain's adapter split: (training items, held-out items), as `train.split_ids` cuts them."""
    ad = universe().rows("corpus", domain, "adapter")
    k = train.held_out(len(ad))
    return ad[~k], ad[k]


def source_views(rows: np.ndarray, group: int = 32) -> train.Views:
    """Contests of same-source pairs among `rows` (full texts): each a-row must pick its b-row, a text of the same
    source, among the b-rows of its group; no row appears twice in a group."""
    u, base = universe(), full(L6)
    by: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        by.setdefault(str(u.source[r]), []).append(k)
    rest = [(a, b) for ks in by.values() for a in ks for b in ks if a != b]
    groups = []
    while rest:
        used: set[int] = set()
        g, left = [], []
        for a, b in rest:
            if a in used or b in used or len(g) >= group:
                left.append((a, b))
            else:
                used |= {a, b}
                g.append((a, b))
        if len(g) < 4:
            break
        groups.append((np.array([a for a, _ in g]), np.array([b for _, b in g])))
        rest = left
    return train.Views(base[rows], groups)


def fit_specialist(domain: str, variant: str, seed: int = 0) -> np.ndarray:
    """The adapter of one variant on a domain's adapter split, under a training seed (cached: fitting is
    deterministic on the cache)."""
    path = CACHE / "adapters" / (f"{domain}-{variant}.npy" if not seed else f"{domain}-{variant}-seed{seed}.npy")
    if path.exists():
        return np.load(path)
    objective, beta, align, radius, general = VARIANTS[variant]
    base = full(L6)
    tr_rows, he_rows = adapter_rows(domain)
    tr, he = views(L6, domain, "train", seed=seed), views(L6, domain, "held", seed=seed)
    if objective == "whiten":
        w = train.whitening(np.concatenate([base[tr_rows], tr.pooled]), beta)
    elif objective == "score":
        public = base[universe().rows("corpus", None, "adapter")] if general else None  # = train.general_texts()
        w = train.specialise(tr, he, base[tr_rows], base[he_rows], align=align, beta=beta, radius=radius,
                             general=general, public=public)[0]
    else:
        rows = universe().rows("corpus", domain, "adapter")
        srcs = sorted(set(universe().source[rows]))
        held_src = set(srcs[:: train.HOLDOUT_EVERY])
        held = np.array([r for r in rows if universe().source[r] in held_src])
        trv, hev = source_views(rows[~np.isin(rows, held)]), source_views(held)
        w = train.fit(trv, hev if hev.groups else trv, patience=100, align=align)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, w)
    return w


def specialists() -> dict:
    """Every variant on every specialist domain: admission, same-text cosine, label quality, held-out split-half loss."""
    base = full(L6)
    eye = np.eye(zoo.DIM, dtype=np.float32)
    l6_mrr = mrrs(unit(base))
    out: dict = {"l6_mrr": l6_mrr}
    for name, domain in SPECIALISTS.items():
        he = views(L6, domain, "held")
        rows = {"l6": {"heldout_loss": train.counting_loss(he, eye)}}
        ws = {v: fit_specialist(domain, v) for v in VARIANTS}
        ws["shipped"] = zoo.load_adapter(zoo.adapter_dir() / f"{name}.npy")
        for v, w in ws.items():
            r = {k: same_text(base[alignment_rows(k)] @ w, base[alignment_rows(k)]) for k in ("reference", "corpus", "audit")}
            ok = spaces.admission(unit(base[alignment_rows("reference")]), unit(base[alignment_rows("reference")] @ w))
            r |= {"admitted": ok.admitted, "mrr": mrrs(unit(base @ w)), "heldout_loss": train.counting_loss(he, w)}
            home = [f"corpus/{domain}"] + ([f"audit/{AUDIT_HOME[domain]}"] if AUDIT_HOME[domain] else [])
            r["home_gain"] = {h: r["mrr"][h] - l6_mrr[h] for h in home}
            rows[v] = r
        out[name] = rows
    return out


def print_specialists(res: dict) -> None:
    for name, rows in res.items():
        if name == "l6_mrr":
            continue
        domain = SPECIALISTS[name]
        print(f"\n{name} (home {domain}; audit home {AUDIT_HOME[domain]}): same-text cosine to L6 on the reference split "
              f"(p5/median), admitted, home MRR gain over L6 (corpus, audit), mean gain elsewhere, held-out loss "
              f"(L6 {rows['l6']['heldout_loss']:.4f})")
        for v, r in rows.items():
            if v == "l6":
                continue
            gains = list(r["home_gain"].values())
            home = set(r["home_gain"])
            other = np.mean([r["mrr"][k] - res["l6_mrr"][k] for k in r["mrr"] if k not in home])
            print(f"  {v:26s} {r['reference']['p5']:.3f}/{r['reference']['median']:.3f} "
                  f"{'in ' if r['admitted'] else 'OUT'}  " + " ".join(f"{g:+.3f}" for g in gains) +
                  f"  other {other:+.3f}  loss {r['heldout_loss']:.4f}")


# 3. the spread across training seeds ------------------------------------------------------------------------------
def seed_spread() -> dict:
    """`RECIPE` under every training seed: per specialist its home MRR gain over L6 and its kept share of the
    unconstrained fit ("score") of the same seed; per seed the worst same-text pair of the space (L6 and the three
    specialists) over every labelled text."""
    base = full(L6)
    rows = np.concatenate([r for _, _, r in labelled()])
    l6_mrr = mrrs(unit(base))
    out: dict = {}
    for seed in (0, *SEEDS):
        vec = {"minilm-l6": unit(base)}
        row: dict = {}
        for name, domain in SPECIALISTS.items():
            home = [f"corpus/{domain}"] + ([f"audit/{AUDIT_HOME[domain]}"] if AUDIT_HOME[domain] else [])
            vec[name] = unit(base @ fit_specialist(domain, RECIPE, seed))
            own = mrrs(unit(base @ fit_specialist(domain, "score", seed)))
            got = mrrs(vec[name])
            row[name] = {h: {"gain": got[h] - l6_mrr[h], "kept": got[h] / own[h]} for h in home}
        names = sorted(vec)
        pairs = {f"{a}|{b}": same_text(vec[a][rows], vec[b][rows]) for i, a in enumerate(names) for b in names[i + 1:]}
        row["worst_pair"] = {"p5": min(p["p5"] for p in pairs.values()),
                             "median": min(p["median"] for p in pairs.values())}
        out[f"seed{seed}"] = row
    return out


def print_seed_spread(res: dict) -> None:
    print(f"\n{RECIPE} across training seeds: home MRR gain over L6 (kept share of the unconstrained fit), "
          f"worst same-text pair of the space (p5/median)")
    for seed, row in res.items():
        cells = [f"{name} " + " ".join(f"{v['gain']:+.4f} ({v['kept']:.3f})" for v in row[name].values())
                 for name in SPECIALISTS]
        print(f"  {seed}: " + "  ".join(cells) + f"  worst pair {row['worst_pair']['p5']:.4f}/"
              f"{row['worst_pair']['median']:.4f}")


def ship() -> None:
    """Fit each shipped specialist with `RECIPE` and write it, after checking admission on the reference split."""
    base = unit(full(L6)[alignment_rows("reference")])
    for name, domain in SPECIALISTS.items():
        w = fit_specialist(domain, RECIPE)
        ok = spaces.admission(base, unit(full(L6)[alignment_rows("reference")] @ w))
        if not ok.admitted:
            raise SystemExit(f"{name}: {ok.describe(L6)}; not written")
        np.save(zoo.adapter_dir() / f"{name}.npy", w.astype(np.float32))
        print(f"{name} ({RECIPE} on {domain}): {ok.describe(L6)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed", help="fill the embedding cache")
    e.add_argument("--models", nargs="*", default=list(BASES))
    sub.add_parser("ship", help="fit the shipped specialists with expert train's recipe and write them")
    r = sub.add_parser("run", help="every table, from the cache")
    r.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    r.add_argument("--out", default=str(ROOT / "bench" / "results" / "space_models.json"))
    a = ap.parse_args()
    if a.cmd == "embed":
        embed(a.models)
        return
    if a.cmd == "ship":
        ship()
        return
    write_result(run(), a.out, a.json)


def run() -> dict:
    t0 = time.perf_counter()
    result = {"specialists": specialists(), "seeds": seed_spread()}
    print_specialists(result["specialists"])
    print_seed_spread(result["seeds"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


if __name__ == "__main__":
    main()
