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

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from moenode import corpus  # noqa: E402
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
    out = np.zeros((len(seqs), enc.dim), np.float32)
    t0, chunk = time.process_time(), 8192
    for s in range(0, len(seqs), chunk):
        out[s : s + chunk] = enc.pooled_ids(seqs[s : s + chunk])
        print(f"  {label}: {min(s + chunk, len(seqs))}/{len(seqs)} rows, {time.process_time() - t0:.0f} s CPU",
              file=sys.stderr, flush=True)
    return out, time.process_time() - t0


def embed(models: list[str], seeds: list[str]) -> None:
    u = universe()
    for name in models:
        enc = zoo.load(name)
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
            pooled, cpu = _pooled(enc, tab.seqs, f"{name} {seed}")
            _save(path, pooled if keep_pooled else sv.scoring.to_f16(normalise(pooled)))
            print(f"{name} {seed}: {len(tab.seqs)} rows, {tab.tokens(np.arange(len(tab.seqs)))} tokens, "
                  f"{cpu:.0f} s CPU", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed", help="fill the embedding cache")
    e.add_argument("--models", nargs="*", default=[L6, L3] + list(CHEATS))
    e.add_argument("--seeds", nargs="*", default=["s0", "s1", "b0"])
    r = sub.add_parser("run", help="simulate rounds on the cache and report")
    r.add_argument("--seeds", nargs="*", default=["s0", "s1"])
    r.add_argument("--batch", nargs="*", type=int, default=[16, 64])
    r.add_argument("--json", action="store_true")
    r.add_argument("--out", default=str(ROOT / "bench" / "results" / "score_audit.json"))
    a = ap.parse_args()
    if a.cmd == "embed":
        embed(a.models, a.seeds)
    else:
        raise SystemExit("run: not yet")


if __name__ == "__main__":
    main()
