"""Simulator benchmarks: message-level events/s on the real core, the market level at scale, and routing quality.

1. Message level (every node the real `moenode.core.round`), every envelope's bytes through `open_signed` (once per
   envelope, the result shared by the recipients of a broadcast), against the baseline of the same run without
   re-decoding, and against the one-round in-process driver (`moenode.testing.inproc`) on the same shard size. Also a
   10,000-node network for a few rounds. An event is one thing the scheduler does to the core (a delivery, a timer
   that fires, work or a verdict coming back, a submission, a settlement); superseded timers do not count.
2. Market level: N submissions on 10,000 nodes (default 1,000,000), wall and CPU time, against the baseline of the
   protocol's reference `sample_shard` per submission (the cost the exact fast sampler removes).
3. Routing: the `routing` scenario's routing_ratio and APGR per policy.

The message level runs twice, each in a fresh interpreter: on the pure Python core (the reference) and on the core
compiled with mypyc (`scripts/build_mypyc.py` builds it into build/mypyc, an overlay put ahead of the sources on the
import path); the ratio is of events per CPU second, and both runs must reach the same events and certificates.
Without the build it says how to make one and runs the pure side only.

Prints ratios, writes all figures as JSON (`--out`; `--json` prints them as the last line too). Wall times on a
shared machine vary; CPU time is reported too, and `--instructions` counts machine instructions per event with
valgrind, which other load does not change.

    python bench/sim.py --quick                          # a smoke run of everything
    python bench/sim.py --message-only --instructions    # pure against compiled, by CPU time and by instructions
    python bench/sim.py --out /tmp/sim.json --json       # the full run, its JSON also as the last line
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from _report import write_result  # noqa: E402

from moenode.sim import SCENARIOS  # noqa: E402
from moenode.testing.simkit import FAST_PARAMS as FAST  # noqa: E402  (the timers the simulator tests use)

ROOT = Path(__file__).resolve().parents[1]
COMPILED = ROOT / "build" / "mypyc"


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def message_level(nodes: int, submissions: int, decode: bool) -> dict:
    from moenode.sim.config import parse
    from moenode.sim.message import MessageSim

    sc = parse(f"""
[sim]
nodes = {nodes}
submissions = {submissions}
epoch_submissions = {max(submissions, 1)}
chunk = {max(submissions, 1)}
[net]
decode = {str(decode).lower()}
interval_ms = 100
{FAST}""")
    m = MessageSim(sc)
    r, wall, cpu = _timed(m.run)
    return {"nodes": nodes, "shard": m.n, "rounds": submissions, "decode": decode, "events": r["events"],
            "deliveries": r["deliveries"], "wall_s": wall, "cpu_s": cpu, "events_per_s": r["events"] / wall,
            "events_per_cpu_s": r["events"] / cpu, "certified": m.book.settled}


KINDS = ("decoded", "not_decoded")
VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]


def message_runs(rounds: int, kinds: Sequence[str] = KINDS) -> dict:
    """The 200-node message level, decoded and not; and which core modules this interpreter runs compiled."""
    import moenode.core

    res: dict = {kind: message_level(200, rounds, kind == "decoded") for kind in kinds}
    res["compiled_modules"] = sorted(m for m, mod in sys.modules.items() if m.startswith("moenode.core.")
                                     and not str(getattr(mod, "__file__", "")).endswith(".py"))
    res["core"] = moenode.core.__path__[0]
    return res


def in_child(rounds: int, overlay: Path | None, kinds: Sequence[str] = KINDS, wrap: Sequence[str] = ()
             ) -> tuple[dict, str]:
    """`message_runs` in a fresh interpreter on this checkout's sources, with the compiled overlay ahead of them if
    given (-P: the current directory does not come first), under `wrap` if given; its result and its stderr."""
    path = [str(overlay)] if overlay else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path + [str(ROOT), str(ROOT / "bench")])}
    out = subprocess.run([*wrap, sys.executable, "-P", str(Path(__file__).resolve()), "--child", str(rounds),
                          ",".join(kinds)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
    return json.loads(out.stdout.splitlines()[-1]), out.stderr


def instructions_per_event(overlay: Path | None, kind: str) -> float:
    """Machine instructions per event, counted by valgrind (independent of other load): the difference between runs
    of 2 and 10 rounds, so the imports and the setup cancel out."""
    counts = []
    for rounds in (2, 10):
        res, err = in_child(rounds, overlay, (kind,), VALGRIND)
        refs = re.search(r"I\s+refs:\s+([\d,]+)", err)
        if refs is None:
            raise RuntimeError(f"no instruction count in valgrind's output: {err[-200:]}")
        counts.append((int(refs.group(1).replace(",", "")), res[kind]["events"]))
    (i2, e2), (i10, e10) = counts
    return (i10 - i2) / (e10 - e2)


def compiled_problem(overlay: Path) -> str:
    """Why the compiled side cannot run ("" when it can)."""
    if not (overlay / "manifest.json").exists():
        return f"no compiled core in {overlay}: build it with `python scripts/build_mypyc.py` (or `make mypyc`)"
    try:
        in_child(1, overlay, ("not_decoded",))
    except RuntimeError as e:
        return f"the compiled core in {overlay} did not load: {e}"
    return ""


def pure_and_compiled(rounds: int, repeat: int, overlay: Path) -> dict:
    """The message level on the pure core and on the compiled one, in turns (so both see the same load on a shared
    machine), each side's best of `repeat` by CPU time (other work only ever slows a run down). The compiled side is
    None, with the reason, when there is no usable build."""
    problem = compiled_problem(overlay)
    sides = {"pure": None} if problem else {"pure": None, "compiled": overlay}
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(repeat):
        for side, path in sides.items():
            runs[side].append(in_child(rounds, path)[0])
    res: dict = {"compiled": None, "compiled_problem": problem}
    for side, got in runs.items():
        res[side] = {kind: min((r[kind] for r in got), key=lambda r: r["cpu_s"]) for kind in KINDS}
        for kind in KINDS:  # the spread, for the record
            res[side][kind]["all_events_per_cpu_s"] = [r[kind]["events_per_cpu_s"] for r in got]
        res[side]["compiled_modules"] = got[0]["compiled_modules"]
    if problem:
        return res
    for kind in KINDS:
        p, q = res["pure"][kind], res["compiled"][kind]
        if (p["events"], p["certified"]) != (q["events"], q["certified"]):
            raise SystemExit(f"the compiled core diverged from the pure one ({kind}): events {p['events']} vs "
                             f"{q['events']}, certified {p['certified']} vs {q['certified']}")
        res[f"ratio_{kind}"] = q["events_per_cpu_s"] / p["events_per_cpu_s"]
    return res


def inproc_baseline(n_network: int, rounds: int) -> dict:
    """The one-round in-process driver on the same shard size: events = deliveries + work + verdicts + timers."""
    from moenode.testing.roundkit import Scenario, make_signers

    from moenode.core.crypto import CheapSigner, cheap_verify

    signers = [CheapSigner(s.public_key) for s in make_signers(n_network, b"bench")]
    sc = Scenario(signers)  # type: ignore[arg-type]
    shard = sc.shard(verify=cheap_verify, decode=True)
    sub = CheapSigner(b"S" * 32)
    msgs = 0

    def go():
        nonlocal msgs
        for i in range(rounds):
            res = shard.run(sub, ["a sentence to embed", "another one"], i.to_bytes(32, "big"), now=0)  # type: ignore
            msgs += res.messages
    _, wall, cpu = _timed(go)
    return {"rounds": rounds, "deliveries": msgs, "wall_s": wall, "cpu_s": cpu, "deliveries_per_s": msgs / wall}


def market_level(nodes: int, submissions: int) -> dict:
    from moenode.sim.config import parse
    from moenode.sim.market import MarketSim

    sc = parse(f"""
[sim]
nodes = {nodes}
submissions = {submissions}
per_batch = 1
epoch_submissions = {min(100_000, submissions)}
chunk = 2000
index_cap = 20000
cbtm_clusters = 32
""")
    m = MarketSim(sc)
    r, wall, cpu = _timed(m.run)
    return {"nodes": nodes, "submissions": submissions, "wall_s": wall, "cpu_s": cpu,
            "submissions_per_s": submissions / wall, "supply_conserved": m.book.supply() == m.book.initial}


def sampler_ratio(nodes: int, draws: int) -> dict:
    from moenode.core.crypto import H
    from moenode.core.selection import sample_shard, shard_size, voting_power
    from moenode.sim.draw import ShardSampler

    power = voting_power({H("pk", i.to_bytes(4, "big")): 100 for i in range(nodes)})
    n, _ = shard_size(nodes)
    seeds = [H("seed", i.to_bytes(4, "big")) for i in range(draws)]
    _, ref, _ = _timed(lambda: [sample_shard(power, s, n) for s in seeds])
    fast = ShardSampler(power)
    out, quick, _ = _timed(lambda: [fast.sample(s, n) for s in seeds])
    assert out[:5] == [sample_shard(power, s, n) for s in seeds[:5]]
    return {"nodes": nodes, "shard": n, "reference_ms": 1e3 * ref / draws, "fast_ms": 1e3 * quick / draws,
            "speedup": ref / quick}


def routing(submissions: int) -> dict:
    from dataclasses import replace

    from moenode.sim.config import parse
    from moenode.sim.scenario import run_scenario

    sc = parse((SCENARIOS / "routing.toml").read_text())
    sc = replace(sc, sim=replace(sc.sim, submissions=submissions))
    r = run_scenario(sc)
    return {"submissions": submissions, "routing_ratio": r["routing_ratio"], "routing_ratio_cbtm":
            r["routing_ratio_cbtm"], "apgr": r["apgr"],
            "mean_loss": {p: v["mean_loss"] for p, v in r["policies"].items()}}


def print_message_level(res: dict) -> None:
    both = res["message_both"]
    m, m0 = res["message"], res["message_no_decode"]
    print(f"message level, 200 nodes, decoded:     {m['events_per_s']:>10,.0f} events/s "
          f"({m['events_per_cpu_s']:,.0f} per CPU s)")
    print(f"message level, 200 nodes, not decoded: {m0['events_per_s']:>10,.0f} events/s "
          f"({m0['events_per_cpu_s']:,.0f} per CPU s)  decoding costs {m['cpu_s'] / m0['cpu_s']:.2f}x in CPU time")
    c = both["compiled"]
    if c is None:
        print(both["compiled_problem"])
        return
    for kind, label in (("decoded", "decoded:    "), ("not_decoded", "not decoded:")):
        print(f"compiled core (mypyc), {label} {c[kind]['events_per_cpu_s']:>10,.0f} events per CPU s  "
              f"ratio compiled/pure {both[f'ratio_{kind}']:.2f}")
    print(f"  compiled: {', '.join(c['compiled_modules'])}")


def instructions(overlay: Path | None) -> dict:
    """Instructions per event on the pure core and, with an overlay, the compiled one; printed with the ratio."""
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed")
        return {}
    sides = {"pure": None} if overlay is None else {"pure": None, "compiled": overlay}
    res: dict = {side: {kind: instructions_per_event(path, kind) for kind in KINDS} for side, path in sides.items()}
    for kind in KINDS:
        line = f"instructions per event, {kind.replace('_', ' ')}: pure {res['pure'][kind]:,.0f}"
        if overlay is not None:
            res[f"ratio_{kind}"] = res["pure"][kind] / res["compiled"][kind]
            line += f", compiled {res['compiled'][kind]:,.0f}, ratio pure/compiled {res[f'ratio_{kind}']:.2f}"
        print(line)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n")[-1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sim.json", help="where the JSON goes")
    ap.add_argument("--submissions", type=int, default=1_000_000, help="market-level submissions on 10k nodes")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--message-only", action="store_true", help="only the 200-node message level, pure and compiled")
    ap.add_argument("--compiled", type=Path, default=COMPILED, help=f"the mypyc overlay (default {COMPILED})")
    ap.add_argument("--repeat", type=int,
                    help="message-level runs per side, in turns, the best kept (default 3, quick 1)")
    ap.add_argument("--instructions", action="store_true",
                    help="also count machine instructions per event with valgrind, both cores (a few minutes)")
    ap.add_argument("--child", nargs=2, metavar=("ROUNDS", "KINDS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(message_runs(int(a.child[0]), a.child[1].split(","))))
        return
    import faiss

    faiss.omp_set_num_threads(1)
    quick = a.quick
    res: dict = {"bench": "sim"}
    rounds = 6 if quick else 40
    both = res["message_both"] = pure_and_compiled(rounds, a.repeat or (1 if quick else 3), a.compiled)
    res["message"], res["message_no_decode"] = both["pure"]["decoded"], both["pure"]["not_decoded"]
    print_message_level(res)
    if a.instructions:
        res["instructions"] = instructions(a.compiled if both["compiled"] else None)
    if not a.message_only:
        more(res, quick, a.submissions)
    write_result(res, a.out, a.json)


def more(res: dict, quick: bool, submissions: int) -> None:
    """The in-process baseline, the 10,000-node message level, the shard draw, the market level and routing."""
    rounds = 6 if quick else 40
    m = res["message"]
    res["inproc_baseline"] = inproc_baseline(200, max(2, rounds // 4))
    res["message_10k"] = message_level(10_000, 3 if quick else 10, decode=False)
    base = res["inproc_baseline"]
    print(f"inproc one-round driver (baseline):    {base['deliveries_per_s']:>10,.0f} deliveries/s  "
          f"ratio sim/inproc {(m['deliveries'] / m['wall_s']) / base['deliveries_per_s']:.2f}")
    t = res["message_10k"]
    print(f"message level, 10,000 nodes: {t['rounds']} rounds, {t['events']:,} events in {t['wall_s']:.1f} s "
          f"({t['events_per_s']:,.0f}/s), {t['certified']} certified")
    res["sampler"] = sampler_ratio(10_000, 20 if quick else 100)
    s = res["sampler"]
    print(f"shard draw at 10k nodes: reference {s['reference_ms']:.2f} ms, fast {s['fast_ms']:.3f} ms, "
          f"speedup {s['speedup']:.0f}x")
    subs = 20_000 if quick else submissions
    res["market"] = market_level(10_000, subs)
    mk = res["market"]
    est_ref = mk["wall_s"] + subs * (s["reference_ms"] - s["fast_ms"]) / 1e3
    mk["baseline_wall_s_estimated"] = est_ref
    print(f"market level: {subs:,} submissions on 10,000 nodes in {mk['wall_s']:.1f} s wall, {mk['cpu_s']:.1f} s CPU "
          f"({mk['submissions_per_s']:,.0f}/s); with the reference sampler ~{est_ref:,.0f} s "
          f"(ratio {est_ref / mk['wall_s']:.1f})")
    res["routing"] = routing(20_000 if quick else 100_000)
    r = res["routing"]
    print(f"routing: routing_ratio {r['routing_ratio']:.3f} (cbtm {r['routing_ratio_cbtm']:.3f}), apgr {r['apgr']:.3f}, "
          + ", ".join(f"{p} {v:.4f}" for p, v in r["mean_loss"].items()))


if __name__ == "__main__":
    main()
