"""Vector spaces, model side: alignment to the anchor, specialists that stay in L6's space, the large expert's head
into it, and the admission and in-round space checks, on both labelled sets.

Labelled sets: the corpus eval split of each of 5 domains (the tuning set) and the held-out audit set
(`corpus.audit()`, 4 domains, never tuned on). Label quality = global same-source MRR over a whole domain
(`train.mrr`, as bench/encoders.py). Same-text cosine = the cosine between two models' unit vectors of one text.

Stage `embed` fills a cache (MOENODE_SPACE_CACHE, default /tmp/moenode-space-models) with the pooled vectors of
L6, L3 and mpnet-base on every corpus and audit text, and of the split-half training views of every domain's adapter
split; every other model here (adapters, heads, cheats) is a map of those vectors, exactly as its graph computes it.
Stage `run` reproduces every table and writes bench/results/space_models.json.

    .venv/bin/python bench/space_models.py embed
    .venv/bin/python bench/space_models.py run [--json]
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

from moenode import corpus  # noqa: E402
from moenode.encoders import train, zoo  # noqa: E402
from moenode.encoders.runtime import full_ids  # noqa: E402

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
    out = np.zeros((len(seqs), enc.dim), np.float32)
    t0, chunk = time.process_time(), 1024
    for s in range(0, len(seqs), chunk):
        out[s: s + chunk] = enc.pooled_ids(seqs[s: s + chunk])
        print(f"  {model} {tag}: {min(s + chunk, len(seqs))}/{len(seqs)}, {time.process_time() - t0:.0f} s CPU",
              file=sys.stderr, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)
    return out


def full(model: str, compute: bool = False) -> np.ndarray:
    """Pooled vectors of every universe text (row order of `universe()`)."""
    return pooled(model, "full", full_ids(universe().texts), compute)


@lru_cache(maxsize=None)
def view_split(domain: str) -> dict[str, tuple[list[list[int]], list[tuple[np.ndarray, np.ndarray]]]]:
    """The training views of a domain's adapter split, as `moenode expert train` draws them: train and held parts."""
    texts = [it.text for it in corpus.split(domain, "adapter")]
    train_ids, held_ids = train.split_ids(texts)
    return {"train": train.view_plan(train_ids, domain + "/train"), "held": train.view_plan(held_ids, domain + "/held")}


def views(model: str, domain: str, which: str, compute: bool = False) -> train.Views:
    seqs, groups = view_split(domain)[which]
    return train.Views(pooled(model, f"views-{domain}-{which}", seqs, compute), groups)


def embed(models: list[str]) -> None:
    for m in models:
        full(m, compute=True)
    for m in models:
        if m == L3:
            continue
        for d in corpus.domains():
            for which in ("train", "held"):
                views(m, d, which, compute=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed", help="fill the embedding cache")
    e.add_argument("--models", nargs="*", default=list(BASES))
    r = sub.add_parser("run", help="every table, from the cache")
    r.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    r.add_argument("--out", default=str(ROOT / "bench" / "results" / "space_models.json"))
    a = ap.parse_args()
    if a.cmd == "embed":
        embed(a.models)
        return
    write_result(run(), a.out, a.json)


if __name__ == "__main__":
    main()
