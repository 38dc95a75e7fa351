"""Audit and benchmark of the zoo under the split-half loss, beside the additive variant that never pays.

For every domain of the shipped corpus, the first N eval items are scored with one seed by every zoo model and
adversary, with the paying score under the genesis defaults. For each model the table gives:
- the mean loss;
- the per-item win rate of L6 against it (L6 strictly lower; ties are reported apart);
- a label-based audit: same-source nearest-neighbour retrieval MRR on the full texts.
Per domain, the Spearman correlation between the loss ranking and the audit ranking says whether the objective
score agrees with labels. The baseline is minilm-l6 in the same run: the win rates are against it, and every
throughput figure is also a ratio to its plain embedding. Throughput is per core (one ORT thread). The additive
identity is scored on a subset of the items, to show why it never pays: a bag of tokens and the zero encoder beat
L6 under it.

    .venv/bin/python bench/encoders.py [--items 64] [--additive-items 16] [--models NAME ...] [--json]
"""

import argparse
import os
import sys
import time
from pathlib import Path

from _report import write_result

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from moenode.core.crypto import H  # noqa: E402
from moenode.core.genesis import Params  # noqa: E402
from moenode.encoders import corpus  # noqa: E402
from moenode.encoders import scoring, train, zoo  # noqa: E402
from moenode.encoders.runtime import full_ids  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = H("bench", b"encoders")
P = Params()


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2
        i = j + 1
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def audit(models: list[str], domains: list[str], n: int, n_add: int) -> dict:
    ref = scoring.reference_texts()
    out: dict = {}
    for d in domains:
        items = corpus.split(d, "eval")[:n]
        texts, labels = [i.text for i in items], [i.source for i in items]
        rows, losses = {}, {}
        for m in models:
            enc = zoo.load(m)
            t = time.perf_counter()
            s = scoring.score(enc, texts, SEED, P, ref)
            losses[m] = np.array(s.losses, np.int64)
            mrr = train.mrr(enc.pooled_ids(full_ids(texts)), labels)
            rows[m] = {"mean_loss": float(losses[m].mean() / scoring.MICRO), "mrr": mrr,
                       "seconds": round(time.perf_counter() - t, 2)}
            print(f"  {d:11s} {m:18s} loss {rows[m]['mean_loss']:.4f}  mrr {mrr:.3f}", file=sys.stderr, flush=True)
        l6 = losses["minilm-l6"]
        for m in models:
            rows[m]["l6_wins"] = float((l6 < losses[m]).mean())
            rows[m]["ties"] = float((l6 == losses[m]).mean())
            rows[m]["l6_loses"] = float((l6 > losses[m]).mean())
        add = {}
        for m in ("minilm-l6", "minilm-l3", "adv-bag-of-tokens", "adv-random-init", "adv-zero", "adv-noise"):
            if m in models:
                a = np.array(scoring.additive_losses(zoo.load(m), texts[:n_add], SEED, P))
                add[m] = float(np.nanmean(a))
        mean = np.array([rows[m]["mean_loss"] for m in models])
        mrr_v = np.array([rows[m]["mrr"] for m in models])
        add_models = list(add)
        out[d] = {
            "items": len(texts), "models": rows, "additive": add,
            "spearman_loss_vs_audit": spearman(-mean, mrr_v),
            "spearman_additive_vs_audit": spearman(-np.array([add[m] for m in add_models]),
                                                   np.array([rows[m]["mrr"] for m in add_models])),
        }
    return out


def throughput(models: list[str], n: int) -> dict:
    """Items per second on one core: plain embedding and split-half scoring, on a mixed-domain batch."""
    texts = [it.text for d in corpus.domains() for it in corpus.split(d, "eval")[n : n + 13]][:64]
    ref = scoring.reference_texts()
    res = {}
    for m in models:
        enc = zoo.load(m)
        enc.embed(texts[:4])  # warm
        t = time.perf_counter()
        enc.embed(texts)
        te = time.perf_counter() - t
        t = time.perf_counter()
        s = scoring.score(enc, texts, SEED, P, ref)
        ts = time.perf_counter() - t
        res[m] = {"embed_items_per_s": len(texts) / te, "score_items_per_s": len(texts) / ts,
                  "score_ms_per_item": 1000 * ts / len(texts), "view_rows": s.plan.rows,
                  "views_per_s": s.plan.rows / ts}
    base = res["minilm-l6"]
    for r in res.values():
        r["embed_vs_l6"] = r["embed_items_per_s"] / base["embed_items_per_s"]
        r["score_vs_l6"] = r["score_items_per_s"] / base["score_items_per_s"]
        r["score_cost_vs_own_embed"] = r["embed_items_per_s"] / r["score_items_per_s"]
    return {"items": len(texts), "models": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=64, help="eval items per domain")
    ap.add_argument("--additive-items", type=int, default=16)
    ap.add_argument("--domains", nargs="*", default=None)
    ap.add_argument("--models", nargs="*", default=None, help="zoo names (default: the whole zoo; L6 always runs)")
    ap.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "encoders.json"))
    a = ap.parse_args()
    models = ["minilm-l6"] + [m for m in (a.models or zoo.names()) if m != "minilm-l6"]
    domains = a.domains or corpus.domains()
    t0 = time.perf_counter()
    result = {"seed": SEED.hex(), "mask_views": P.mask_views, "min_negatives": P.min_negatives,
              "audit": audit(models, domains, a.items, a.additive_items),
              "throughput": throughput([m for m in ("minilm-l6", "minilm-l3", "spec-code", "mpnet-base")
                                        if m in models], a.items)}
    result["seconds"] = round(time.perf_counter() - t0, 1)

    print(f"\nsplit-half loss per domain (mean loss / L6 win rate / audit MRR), {a.items} items per domain")
    print(f"{'model':18s}" + "".join(f"{d:>26s}" for d in domains))
    for m in models:
        cells = []
        for d in domains:
            r = result["audit"][d]["models"][m]
            cells.append(f"{r['mean_loss']:.3f} / {r['l6_wins']:.2f} / {r['mrr']:.3f}")
        print(f"{m:18s}" + "".join(f"{c:>26s}" for c in cells))
    print("spearman(loss, audit):  " + "  ".join(f"{d} {result['audit'][d]['spearman_loss_vs_audit']:.2f}"
                                                  for d in domains))
    print("additive variant (lower 'wins'): " + "  ".join(
        f"{d}: " + ", ".join(f"{m} {v:.3f}" for m, v in result["audit"][d]["additive"].items()) for d in domains[:1]))
    for m, r in result["throughput"]["models"].items():
        print(f"throughput {m:10s} embed {r['embed_items_per_s']:7.1f} items/s ({r['embed_vs_l6']:.2f}x L6)  "
              f"score {r['score_items_per_s']:6.2f} items/s ({r['score_vs_l6']:.2f}x L6, "
              f"{r['score_cost_vs_own_embed']:.1f}x its own embed)")
    write_result(result, a.out, a.json)


if __name__ == "__main__":
    main()
