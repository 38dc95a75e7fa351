"""Every attack of the security audit against a live testnet, and what each one costs the nodes.

A fresh local testnet (`--nodes` daemons on this machine, real libp2p, real ledgers) is attacked once per attack,
in the order of `--list`. Most attackers are outsiders: keys that speak Noise and hold no stake. Some attacks
replay a scenario with an insider (the operator, a crash, authorities going down). The kit is
moenode/testing/attacks.py, whose docstring says how each figure is taken. Per attack it prints a row:

  alive         nodes alive at its end (a node an attack stops on purpose is started again by the attack)
  RSS MB        the largest peak resident memory of a node during the attack (kernel high-water mark)
  CPU s         the most CPU seconds one node spent during the attack
  during/after  /status latency, p50 and max over the nodes, while the attack ran and after it (ms); the probe
                runs in a process of its own; "during" leaves out nodes the attack pauses on purpose (SIGSTOP)
  ledgers       whether every node's ledger digest is the same once the attack is over; supply: conserved
  x idle        the worst /status p50 during the attack over the same figure at rest, in the same run

then what the attacker saw. The first row is the baseline: the nodes at rest for a few seconds. A row that breaks
the issue's "done" (a node dead, /status slower than 1 s after the attack, ledgers that differ, supply changed)
is marked. JSON goes to --out (`--json` prints it as the last line).

Examples:
  python bench/attacks.py --list
  python bench/attacks.py --quick                     # every attack, fewer repetitions (about 5 minutes)
  python bench/attacks.py                             # about 8 minutes on 2 shared cores
  python bench/attacks.py --only pubsub-frames,dense-envelopes --keep ./attack-testnet
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path

from _report import write_result

from moenode.testing.attacks import (ATTACKS, BY_NAME, IDLE, Arena, StatusProbe, done_when, measure, outside_address,
                                     prepare)
from moenode.testing.testnet import Testnet

ROOT = Path(__file__).resolve().parents[1]


def worst(result: dict, key: str, phase: str | None = None) -> float | None:
    """The largest figure over the nodes (for /status during an attack, over the nodes it did not pause)."""
    rows = [row for row in result["nodes"].values() if phase != "during" or not row["paused"]]
    values = [(row[f"status_{phase}"] if phase else row).get(key) for row in rows]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def row(result: dict, idle_p50: float | None) -> str:
    alive = sum(r["alive"] for r in result["nodes"].values())
    during = f"{worst(result, 'p50_ms', 'during')}/{worst(result, 'max_ms', 'during')}"
    after = f"{worst(result, 'p50_ms', 'after')}/{worst(result, 'max_ms', 'after')}"
    p50 = worst(result, "p50_ms", "during")
    ratio = f"{p50 / idle_p50:.1f}" if p50 and idle_p50 else "-"
    problems = done_when(result) if result["kind"] != "baseline" else []
    return (f"{result['attack']:17s} {result['kind']:8s} {alive}/{len(result['nodes'])}  "
            f"{worst(result, 'peak_rss_mb') or 0:7.0f} {worst(result, 'cpu_s') or 0:6.1f}  {during:>15s} "
            f"{after:>13s}  {'equal' if result['ledgers_equal'] else 'DIFFER':6s} "
            f"{'kept' if result['supply_conserved'] else 'CHANGED':7s} {ratio:>6s}  {result['attack_s']:5.0f}"
            + ("" if not problems else "   << " + "; ".join(problems)))


HEADER = (f"{'attack':17s} {'kind':8s} alive {'RSS MB':>7s} {'CPU s':>6s}  {'during p50/max':>15s} "
          f"{'after p50/max':>13s}  ledgers supply  x idle  secs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="list the attacks and exit")
    ap.add_argument("--only", default="", help="comma-separated attack names (default: all)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and shorter holds")
    ap.add_argument("--nodes", type=int, default=4, help="daemons in the testnet (2 of 4 go down in one attack)")
    ap.add_argument("--epoch-ms", type=int, default=20_000, help="epoch length of the testnet")
    ap.add_argument("--hold", type=float, default=None, help="seconds slow-loris streams and partial messages are "
                    "held (default 10, quick 5; 65 shows the nodes' own deadlines at work)")
    ap.add_argument("--entries", type=int, default=None, help="entries of the long log (default 24,000; quick 20,000)")
    ap.add_argument("--keep", default="", help="create the testnet in this directory and keep it (homes, logs)")
    ap.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "attacks.json"))
    args = ap.parse_args()
    if args.list:
        for a in ATTACKS:
            print(f"{a.name:17s} {a.kind:8s} {a.what}")
        return
    names = [n.strip() for n in args.only.split(",") if n.strip()] or [a.name for a in ATTACKS]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown attacks {unknown}; --list shows them")
    chosen = [a for a in ATTACKS if a.name in names]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # the attackers' own hosts complain of every refusal

    with tempfile.TemporaryDirectory(prefix="moenode-attacks-") as tmp:
        root = Path(args.keep or tmp)
        tn = Testnet.create(root, args.nodes, epoch_ms=args.epoch_ms)
        outside = outside_address() if any(a.needs == "outside_ip" for a in chosen) else None
        primed = any(a.needs == "primed" for a in chosen)
        prepare(tn, outside_ip=outside, prime=primed)
        arena = Arena(tn, quick=args.quick, hold_s=args.hold or (5.0 if args.quick else 10.0), outside_ip=outside,
                      primed=primed, long_log=args.entries or (20_000 if args.quick else 24_000))
        t0 = time.monotonic()
        with tn:
            tn.start(timeout=300)
            print(f"{args.nodes} nodes up in {time.monotonic() - t0:.0f} s ({root}); outside address: {outside}",
                  flush=True)
            results = []
            with StatusProbe([nd.home for nd in tn.nodes]) as probe:
                print(HEADER, flush=True)
                for attack in [IDLE, *chosen]:
                    r = measure(arena, attack, probe)
                    results.append(r)
                    idle = worst(results[0], "p50_ms", "during")
                    print(row(r, idle), flush=True)
                    if r["attacker"] or r["error"]:
                        print(f"  {r['error'] or r['attacker']}", flush=True)
    failing = [r["attack"] for r in results[1:] if done_when(r)]
    summary = {"nodes": args.nodes, "quick": args.quick, "hold_s": arena.hold_s, "long_log": arena.long_log,
               "outside_ip": outside, "total_s": round(time.monotonic() - t0), "failing": failing,
               "baseline": results[0], "attacks": results[1:]}
    print(f"{len(results) - 1} attacks in {summary['total_s']} s; "
          + (f"not done: {', '.join(failing)}" if failing else "every node alive, /status within 1 s after each "
             "attack, ledgers equal and supply conserved after each"))
    write_result(summary, args.out, args.json)


if __name__ == "__main__":
    main()
