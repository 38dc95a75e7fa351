"""Does the market deliver better embeddings than a single model? Labelled text end to end through a live testnet.

Starts an N-node testnet (real daemons; by default the market: L6, the large expert mpnet-base, the specialists),
submits the held-out audit set (`moenode.encoders.corpus.audit()`, never used for fitting or tuning) in batches of
one domain each, domains in turn, each with a commit deadline so the large expert is not struck, and then judges
what came back by its labels (items of one source are relevant to each other). In the same run, each model of the
market embeds the same texts alone. It reports, per domain and on the mixed-domain corpus (every batch of every
domain in one index):

  delivered_mrr / alone_mrr  global MRR of the first same-label neighbour, ONE index across all the batches the
                             submitter received (`moenode.testing.quality.one_index_mrr`; batches delivered in another
                             space, i.e. another dimension, are never neighbours)
  ratio_to_best_in_space     delivered over the best single model alone of the space the batches named (the
                             models of another space cannot serve them)           goal >= 1.0 mixed, >= 0.98 per domain
  ratio_to_best              delivered over the best single model alone, any space (the large expert included)
  agreement                  per round, among the honest candidates (the shard's members, recomputed from a node's
                             ledger, plus the expert when the winner proxied): the share of (winner, other) pairs
                             whose within-batch label quality agrees with the choice          goal >= 0.75
  proxied_rounds / wins      rounds in which an expert outside the shard served a member / won

Usage:

  python bench/quality.py                                      # 5 nodes, 3 batches of 16 per audit domain
  python bench/quality.py --batches 5 --json bench/results/quality.json
  python bench/quality.py --spaces main,mpnet                  # the same batches in each space: the market
                                                               # against the large expert's own space
  python bench/quality.py --models minilm-l6,spec-code,spec-legal,spec-man,minilm-l3 --deadline 0
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_result  # noqa: E402

DEFAULT_JSON = "bench/results/quality.json"


def main(argv: list[str] | None = None) -> int:
    from moenode.encoders import corpus
    from moenode.testing.demo import DemoConfig, delivered_quality, submit_all, workload
    from moenode.testing.quality import shard_members
    from moenode.testing.testnet import DEFAULT_DEADLINE_MS, Testnet

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--models", default="", help="comma-separated, one per node (default: the testnet's market)")
    ap.add_argument("--batches", type=int, default=3, help="batches per audit domain")
    ap.add_argument("--batch", type=int, default=16, help="items per batch")
    ap.add_argument("--domains", default="", help="comma-separated audit domains (default: all)")
    ap.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_MS / 1000,
                    help="commit deadline in seconds (0: the network's timers)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spaces", default="main",
                    help="comma-separated spaces to submit every batch in, one run each (e.g. main,mpnet)")
    ap.add_argument("--epoch-ms", type=int, default=60_000)
    ap.add_argument("--dir", type=Path, default=None, help="testnet directory (default: a temporary one)")
    ap.add_argument("--json", nargs="?", const=DEFAULT_JSON, default=DEFAULT_JSON, metavar="PATH",
                    help=f"where to write the result (default {DEFAULT_JSON})")
    ap.add_argument("--print-json", action="store_true", help="also print the JSON as the last line")
    args = ap.parse_args(argv)

    domains = [d for d in args.domains.split(",") if d] or corpus.audit_domains()
    models = [m for m in args.models.split(",") if m] or None
    batches = workload(args.batches * len(domains), args.batch, args.seed, domains, audit=True)
    label_of = {it.text: it.source for d in domains for it in corpus.audit(d)}
    spaces = [x for x in args.spaces.split(",") if x]
    root = args.dir or Path(tempfile.mkdtemp(prefix="moenode-quality-"))
    cpu0 = time.process_time()
    tn = Testnet.create(root, args.nodes, models=models, epoch_ms=args.epoch_ms)
    runs: dict[str, tuple[list, dict]] = {}
    try:
        tn.start()
        print(f"testnet up: {', '.join(f'{nd.name}={nd.model}' for nd in tn.nodes)}", flush=True)
        cfg = DemoConfig(nodes=args.nodes, deadline_ms=int(args.deadline * 1000))
        model_of = {nd.account: nd.model for nd in tn.nodes}
        for space in spaces:
            print(f"space {space}:", flush=True)
            subs = submit_all(tn, batches, concurrency=1, timeout=cfg.submit_timeout_s, deadline_ms=cfg.deadline_ms,
                              space=space, on_done=lambda s: print(
                                  f"  {s.index:3d} {s.domain:9s} {'ok' if s.ok else 'FAILED':6s} "
                                  f"{s.latency_ms / 1000:5.1f}s served={s.served}", flush=True))
            runs[space] = subs, round_candidates(subs, tn.nodes[0].home, model_of, shard_members)
    finally:
        tn.stop()
    market = sorted({nd.model for nd in tn.nodes})
    by_space = {space: space_result(subs, delivered_quality(subs, market, label_of=label_of, candidates=cands,
                                                                model_of=model_of), cands, model_of)
                for space, (subs, cands) in runs.items()}
    result = {
        "bench": "quality", "nodes": args.nodes, "models": [nd.model for nd in tn.nodes], "domains": domains,
        "batches_per_domain": args.batches, "batch": args.batch, "deadline_ms": int(args.deadline * 1000),
        **by_space[spaces[0]], "spaces": by_space, "bench_cpu_s": time.process_time() - cpu0,
    }
    for space, r in by_space.items():
        print(f"\nspace {space}:")
        print_ratios(r)
    write_result(result, args.json, args.print_json)
    return 0


def space_result(subs, q: dict, candidates: dict[int, list[str]], model_of: dict[str, str]) -> dict:
    """One space's rounds: what was certified, who won, and the delivered quality (`delivered_quality`)."""
    return {
        "rounds": len(subs), "certified": sum(s.ok for s in subs),
        "proxied_rounds": q["mixed"]["proxied_rounds"] if q["mixed"] else 0,
        "proxied_wins": q["mixed"]["proxied_wins"] if q["mixed"] else 0,
        "wins_by_producer": dict(Counter(model_of.get(s.result.get("producer", ""), "?") for s in subs if s.ok)),
        "quality": q,
        "per_round": [{"index": s.index, "domain": s.domain, "ok": s.ok, "served": s.served,
                       "space": s.result.get("space"), "winner": model_of.get(s.result.get("winner", ""), "?"),
                       "producer": model_of.get(s.result.get("producer", ""), "?"), "dim": s.result.get("dim"),
                       "loss_micro": s.result.get("loss_micro"), "candidates": candidates.get(s.index),
                       "latency_ms": round(s.latency_ms), "error": s.error} for s in subs],
    }


def round_candidates(subs, home: Path, model_of: dict[str, str], members_of) -> dict[int, list[str]]:
    """Round index -> the models of its honest candidates: the shard's members, plus the expert when one won."""
    from moenode.core.messages import decode_certificate

    ok = [s for s in subs if s.ok]
    certificates = [decode_certificate(bytes.fromhex(s.result["certificate"])) for s in ok]
    out = {}
    for s, members in zip(ok, members_of(home, certificates)):
        models = [model_of.get(m.hex(), "?") for m in members]
        producer = model_of.get(s.result.get("producer", ""), "?")
        if s.result.get("producer") != s.result.get("winner"):
            models.append(producer)
        out[s.index] = models
    return out


def print_ratios(r: dict) -> None:
    def f(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    q = r["quality"]
    print(f"\n{r['certified']}/{r['rounds']} rounds certified; proxied {r['proxied_rounds']} "
          f"({f(r['proxied_rounds'] / r['rounds'] if r['rounds'] else None, '.0%')}), proxied wins "
          f"{r['proxied_wins']}; wins {r['wins_by_producer']}")
    if not q.get("mixed"):
        return
    models = sorted(q["mixed"]["alone_mrr"])
    print(f"{'corpus':12s} {'delivered':>9s} " + " ".join(f"{m:>11s}" for m in models)
          + f" {'vs space':>8s} {'vs any':>7s} {'agreement':>9s} {'proxied':>7s}")
    for name, row in [("mixed", q["mixed"]), *sorted(q["domains"].items())]:
        print(f"{name:12s} {f(row['delivered_mrr']):>9s} " + " ".join(f"{f(row['alone_mrr'][m]):>11s}" for m in models)
              + f" {f(row.get('ratio_to_best_in_space')):>7s}x {f(row['ratio_to_best']):>6s}x"
              + f" {f(row.get('agreement')):>9s} {row['proxied_rounds']:>7d}")


if __name__ == "__main__":
    sys.exit(main())
