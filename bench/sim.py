"""Simulator benchmarks: message-level events/s on the real core, the market level at scale, and routing quality.

1. Message level (every node the real `moenode.core.round`), every envelope's bytes through `open_signed` (once per
   envelope, the result shared by the recipients of a broadcast), against the baseline of the same run without
   re-decoding, and against the one-round in-process driver (`moenode.testing.inproc`) on the same shard size. Also a
   10,000-node network for a few rounds. An event is one thing the scheduler does to the core (a delivery, a timer
   that fires, work or a verdict coming back, a submission, a settlement); superseded timers do not count.
2. Market level: N submissions on 10,000 nodes (default 1,000,000), wall and CPU time, against the baseline of the
   protocol's reference `sample_shard` per submission (the cost the exact fast sampler removes).
3. Routing: the `routing` scenario's routing_ratio and APGR per policy.

Prints ratios; `--json FILE` writes all figures. Wall times on a shared machine vary; CPU time is reported too.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from moenode.sim import SCENARIOS  # noqa: E402
from moenode.testing.simkit import FAST_PARAMS as FAST  # noqa: E402  (the timers the simulator tests use)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--submissions", type=int, default=1_000_000, help="market-level submissions on 10k nodes")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    a = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    quick = a.quick
    res: dict = {}
    rounds = 6 if quick else 40
    res["message"] = message_level(200, rounds, decode=True)
    res["message_no_decode"] = message_level(200, rounds, decode=False)
    res["inproc_baseline"] = inproc_baseline(200, max(2, rounds // 4))
    res["message_10k"] = message_level(10_000, 3 if quick else 10, decode=False)
    m, m0, base = res["message"], res["message_no_decode"], res["inproc_baseline"]
    print(f"message level, 200 nodes, decoded:     {m['events_per_s']:>10,.0f} events/s "
          f"({m['events_per_cpu_s']:,.0f} per CPU s)")
    print(f"message level, 200 nodes, not decoded: {m0['events_per_s']:>10,.0f} events/s  "
          f"ratio decoded/not {m['events_per_s'] / m0['events_per_s']:.2f}")
    print(f"inproc one-round driver (baseline):    {base['deliveries_per_s']:>10,.0f} deliveries/s  "
          f"ratio sim/inproc {(m['deliveries'] / m['wall_s']) / base['deliveries_per_s']:.2f}")
    t = res["message_10k"]
    print(f"message level, 10,000 nodes: {t['rounds']} rounds, {t['events']:,} events in {t['wall_s']:.1f} s "
          f"({t['events_per_s']:,.0f}/s), {t['certified']} certified")
    res["sampler"] = sampler_ratio(10_000, 20 if quick else 100)
    s = res["sampler"]
    print(f"shard draw at 10k nodes: reference {s['reference_ms']:.2f} ms, fast {s['fast_ms']:.3f} ms, "
          f"speedup {s['speedup']:.0f}x")
    subs = 20_000 if quick else a.submissions
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
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
