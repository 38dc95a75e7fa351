"""Run a scenario (and its variants) at its fidelity level and assemble results.json.

`run_scenario(sc, seed, progress)` returns the results dictionary: the base run's full summary (policies,
routing_ratio, apgr, classes, latency, rewards, supply) plus the series the plots need, and one compact summary per
variant. Variants run on the same seed, so they see the same item stream and the same realised losses.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from moenode.sim.config import Scenario, override
from moenode.sim.metrics import POLICIES

Progress = Callable[[str, int, int], None]


def _engine(sc: Scenario):
    if sc.sim.fidelity == "message":
        from moenode.sim.message import MessageSim
        return MessageSim(sc)
    if sc.sim.fidelity == "market":
        from moenode.sim.market import MarketSim
        return MarketSim(sc)
    raise ValueError(f"scenario: fidelity must be 'market' or 'message', not {sc.sim.fidelity!r}")


def run_once(sc: Scenario, progress: Callable[[int, int], None] | None = None) -> tuple[dict, Any]:
    eng = _engine(sc)
    supply_before = eng.book.supply()
    t0 = time.perf_counter()
    stats = eng.run(progress)
    wall = time.perf_counter() - t0
    rec = eng.rec
    out = rec.summary(sc.sim.warmup, eng.world.kind)
    out.update({
        "nodes": sc.sim.nodes, "submissions": sc.sim.submissions, "fidelity": sc.sim.fidelity,
        "wall_s": wall, "events": int(stats["events"]), "events_per_s": stats["events"] / max(wall, 1e-9),
        "submissions_per_s": sc.sim.submissions / max(wall, 1e-9),
        "supply_before": int(supply_before), "supply_after": int(eng.book.supply()),
        "supply_conserved": bool(eng.book.supply() == supply_before),
        "settled": eng.book.settled, "refunded": eng.book.refunded, "slashed_total": eng.book.slashed_total,
    })
    if "deliveries" in stats:
        out["deliveries"] = int(stats["deliveries"])
        out["rejections"] = dict(getattr(eng, "rejections", {}))
    return out, eng


def series(eng: Any) -> dict:
    rec = eng.rec
    loss = {p: rec.series(p) for p in POLICIES}
    served = {}
    for p in POLICIES:
        x = np.concatenate(rec.served[p]).astype(float) if rec.served[p] else np.zeros(0)
        edges = np.linspace(0, len(x), min(60, max(len(x), 1)) + 1).astype(int)
        served[p] = [[int(b), float(x[a:b].mean()) if b > a else 0.0] for a, b in zip(edges[:-1], edges[1:])]
    wins = rec.wins
    top = np.argsort(-wins.sum(axis=1), kind="stable")[:40]
    top = top[wins[top].sum(axis=1) > 0]
    lat = np.concatenate(rec.latency) if rec.latency else np.zeros(0)
    return {
        "loss": {p: {"x": loss[p][0], "y": loss[p][1]} for p in POLICIES},
        "proxy": served,
        "heat": {"experts": [f"{eng.pop.node_class(int(i))}/{eng.world.kind[int(i)]}#{int(i)}" for i in top],
                 "wins": wins[top].tolist()},
        "earned": rec.earned.tolist(),
        "classes": rec.classes,
        "latency": np.sort(lat)[:: max(1, len(lat) // 2000)].tolist(),
    }


def run_scenario(sc: Scenario, seed: int | None = None, progress: Progress | None = None) -> dict:
    if seed is not None:
        sc = replace(sc, sim=replace(sc.sim, seed=seed))
    labels = ["base"] + [str(v.get("label", f"variant {i + 1}")) for i, v in enumerate(sc.variants)]
    cb = (lambda done, total: progress(labels[0], done, total)) if progress else None
    base, eng = run_once(sc, cb)
    results: dict[str, Any] = {"scenario": sc.sim.name, "seed": sc.sim.seed, "description": sc.description}
    results.update(base)
    results["series"] = series(eng)
    results["config"] = {"sim": asdict(sc.sim), "world": asdict(sc.world), "net": asdict(sc.net),
                         "adversary": asdict(sc.adversary), "params": asdict(sc.params)}
    results["variants"] = []
    for label, changes in zip(labels[1:], sc.variants):
        vsc = override(sc, changes)
        cbv = (lambda done, total, _l=label: progress(_l, done, total)) if progress else None
        out, _ = run_once(vsc, cbv)
        out.pop("routing_curve", None)
        results["variants"].append({"label": label, "changes": {k: v for k, v in changes.items() if k != "label"},
                                    **out})
    results["supply_conserved_everywhere"] = bool(
        results["supply_conserved"] and all(v["supply_conserved"] for v in results["variants"]))
    return results
