"""Round latency and throughput of a local testnet, against one node doing the same work alone.

Starts an N-node testnet on loopback (real daemons, real libp2p, real models), submits batches of real corpus text
from one domain each, and measures in the same run the baseline: one node embedding and scoring the same batches
alone (`embed_ms_single`, the work a shard member does for its payload). It reports:

  latency_ratio_p50 / p99   round latency (submit -> certificate) over embed_ms_single       goal <= 2.0 / <= 4.0
  throughput ratio          certified rounds per second over the compute ceiling            goal >= 0.7
                            ceiling = cores / (shard size x embed_ms_single): the rate at which the machine could
                            finish rounds if it did nothing but the members' embedding and scoring

Latency is measured with one submission in flight; throughput with `--concurrency` in flight (default: the number
of cores), on the same testnet. Usage:

  python bench/round.py                        # 5 nodes, 20 submissions per phase
  python bench/round.py --json out.json --submissions 10 --batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

DEFAULT_JSON = "bench/results/round.json"


def main(argv: list[str] | None = None) -> int:
    from moenode.testing.demo import usable_cores

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--submissions", type=int, default=20, help="per phase")
    ap.add_argument("--batch", type=int, default=16, help="items per submission")
    ap.add_argument("--concurrency", type=int, default=0, help="in flight in the throughput phase (0: cores)")
    ap.add_argument("--epoch-ms", type=int, default=60_000)
    ap.add_argument("--dir", type=Path, default=None, help="testnet directory (default: a temporary one)")
    ap.add_argument("--json", nargs="?", const=DEFAULT_JSON, default=None, metavar="PATH",
                    help=f"write the results as JSON (default path {DEFAULT_JSON})")
    args = ap.parse_args(argv)

    root = args.dir or Path(tempfile.mkdtemp(prefix="moenode-bench-"))
    conc = args.concurrency or usable_cores()
    t0 = time.monotonic()
    phases = run_phases(root, args, conc)
    lat, thr = phases["latency"], phases["throughput"]
    result = {
        "bench": "round",
        "nodes": args.nodes,
        "batch": args.batch,
        "submissions_per_phase": args.submissions,
        "cores": usable_cores(),
        "latency_ratio_p50": lat["latency_ratio_p50"],
        "latency_ratio_p99": lat["latency_ratio_p99"],
        "throughput_per_s": thr["throughput_per_s"],
        "compute_ceiling_per_s": thr["compute_ceiling_per_s"],
        "throughput_ratio": thr["throughput_ratio"],
        "certified": lat["certified"] + thr["certified"],
        "failed": lat["failed"] + thr["failed"],
        "proxied": lat["proxied"] + thr["proxied"],
        "goals": {"latency_ratio_p50": 2.0, "latency_ratio_p99": 4.0, "throughput_ratio": 0.7},
        "phases": phases,
        "wall_s": time.monotonic() - t0,
        "dir": str(root),
    }
    print_result(result)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"results written to {out}")
    return 0 if result["failed"] == 0 else 1


def run_phases(root: Path, args: argparse.Namespace, conc: int) -> dict[str, dict]:
    """On one testnet: the latency phase (one submission in flight), then the throughput phase (`conc`)."""
    from moenode.testing.demo import DemoConfig, run_workload
    from moenode.testing.testnet import Testnet

    phases = {}
    with Testnet.create(root, args.nodes, epoch_ms=args.epoch_ms) as tn:
        tn.start()
        for name, c, seed in (("latency", 1, 0), ("throughput", conc, 1)):
            cfg = DemoConfig(nodes=args.nodes, submissions=args.submissions, batch=args.batch, concurrency=c,
                             seed=seed)
            phases[name] = run_workload(tn, cfg)
            s = phases[name]
            print(f"[{name}] concurrency {c}: certified {s['certified']}/{s['submissions']}, "
                  f"latency p50 {s['latency_ms']['p50']:.0f} ms p99 {s['latency_ms']['p99']:.0f} ms, "
                  f"single p50 {s['embed_ms_single']['p50']:.0f} ms, throughput {s['throughput_per_s']:.3f}/s "
                  f"(ceiling {s['compute_ceiling_per_s']:.3f}/s), proxied {s['proxied']}", flush=True)
    return phases


def print_result(result: dict) -> None:
    print()
    print(f"latency_ratio_p50   {result['latency_ratio_p50']:.2f}   (goal <= 2.0)")
    print(f"latency_ratio_p99   {result['latency_ratio_p99']:.2f}   (goal <= 4.0)")
    print(f"throughput ratio    {result['throughput_ratio']:.2f}   ({result['throughput_per_s']:.3f}/s of "
          f"{result['compute_ceiling_per_s']:.3f}/s; goal >= 0.7)")
    print(f"certified {result['certified']}, failed {result['failed']}, proxied {result['proxied']}")


if __name__ == "__main__":
    sys.exit(main())
