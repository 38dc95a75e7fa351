"""Plots (PNG) and a self-contained HTML page (plots embedded as base64, plus summary tables) for one run.

The page is meant to be read at a glance, so every figure says what it is: each summary row carries its meaning, a
value that cannot be computed is "n/a" with the reason (never a raw NaN), a routing ratio above 1 is explained
(the oracle is the best expert by *expected* loss, the market picks among realised losses), every run with node
classes beyond honest ones (the variants of a byzantine sweep too) gets its own per-class table with earnings
relative to honest nodes and what the protocol does to that class, a table per vector space gives its rounds,
wins per producer and cheats' wins, and a plot with nothing to show is not drawn. Each plot is one function of the
results (`PLOTS`) that returns its figure, or None when it has nothing to show.
"""

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from moenode.sim.metrics import POLICIES

COLOURS = {"market": "#1f77b4", "cbtm": "#ff7f0e", "random": "#7f7f7f", "oracle": "#2ca02c"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


Figure = tuple[Any, str, str]  # (a matplotlib figure, its file name, its caption)


def _loss_over_time(res: dict, plt: Any) -> Figure | None:
    loss = res["series"]["loss"]
    if not any(len(loss[p]["x"]) > 1 for p in POLICIES):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for p in POLICIES:
        ax.plot(loss[p]["x"], loss[p]["y"], label=p, color=COLOURS[p])
    ax.set_xlabel("submissions"), ax.set_ylabel("mean winning loss"), ax.legend()
    ax.set_title("Winning loss over time per routing policy")
    return fig, "loss_over_time.png", "Mean winning loss over time, per policy (same item stream)."


def _win_heatmap(res: dict, plt: Any) -> Figure | None:
    heat = res["series"]["heat"]
    wins = np.array(heat["wins"], dtype=float)
    if not wins.size or wins.sum() <= 0:
        return None
    fig, ax = plt.subplots(figsize=(7, max(3, 0.18 * len(wins) + 1)))
    im = ax.imshow(wins, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(heat["experts"])), heat["experts"], fontsize=6)
    ax.set_xticks(range(wins.shape[1]), [f"d{k}" for k in range(wins.shape[1])])
    ax.set_xlabel("domain (d0 the most popular)"), ax.set_title("Wins per expert x domain (top experts, market)")
    fig.colorbar(im, ax=ax)
    return fig, "win_heatmap.png", "Expert x domain win counts under the market policy (producers, top 40)."


def _rewards(res: dict, plt: Any) -> Figure | None:
    earned = np.sort(np.array(res["series"]["earned"], dtype=float))
    if earned.sum() <= 0:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    cum = np.concatenate([[0], np.cumsum(earned)]) / earned.sum()
    ax.plot(np.linspace(0, 1, len(cum)), cum, label=f"Lorenz (Gini {res['reward_gini']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("share of nodes"), ax.set_ylabel("share of rewards"), ax.legend()
    ax.set_title("Reward distribution")
    return fig, "rewards.png", "Reward distribution over nodes (Lorenz curve and Gini)."


def _proxy_rate(res: dict, plt: Any) -> Figure | None:
    proxy = res["series"]["proxy"]
    if not any(b for p in ("market", "cbtm") for _, b in proxy[p]):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for p in ("market", "cbtm"):
        ax.plot([a for a, _ in proxy[p]], [b for _, b in proxy[p]], label=p, color=COLOURS[p])
    ax.set_ylim(-0.02, 1.02), ax.set_xlabel("submissions"), ax.set_ylabel("served outside the drawn shard")
    ax.legend(), ax.set_title("Proxy rate over time")
    return fig, "proxy_rate.png", "Share of submissions served by an expert outside the drawn shard."


def _strikes(res: dict, plt: Any) -> Figure | None:
    cls = res["classes"]
    names = sorted(cls)
    if not any(cls[c]["strikes_per_node"] or cls[c]["faulty_per_node"] for c in names):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, [cls[c]["strikes_per_node"] for c in names], 0.4, label="strikes per node")
    ax.bar(xs + 0.2, [cls[c]["faulty_per_node"] for c in names], 0.4, label="faulty marks per node")
    ax.set_xticks(xs, [f"{c}\n({cls[c]['nodes']})" for c in names])
    ax.legend(), ax.set_title("Strikes and faulty marks per node class")
    return fig, "strikes.png", "Latency strikes and faulty marks per node class (count of nodes in brackets)."


def _latency_cdf(res: dict, plt: Any) -> Figure | None:
    lat = np.array(res["series"]["latency"], dtype=float)
    if len(lat) <= 1 or np.ptp(lat) <= 0:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.sort(lat), np.linspace(0, 1, len(lat)))
    ax.set_xlabel("round latency (ms, virtual)"), ax.set_ylabel("CDF"), ax.set_title("Round latency CDF")
    return fig, "latency_cdf.png", "Round latency CDF (virtual time, submission to certificate)."


def _routing_curve(res: dict, plt: Any) -> Figure | None:
    rc = res.get("routing_curve") or {}
    if not rc.get("proxied_share"):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rc["proxied_share"], rc["pgr"], label=f"market (APGR {res['apgr']:.3f})")
    ax.legend()
    ax.axhline(1.0, color="k", ls=":", lw=0.8)
    ax.set_xlabel("share of submissions proxied"), ax.set_ylabel("gap recovered (random -> oracle)")
    ax.set_title("Routing curve")
    return fig, "routing_curve.png", ("RouteLLM-style routing curve: share of the random->oracle gap recovered "
                                      "against the share of submissions proxied, highest routing score first.")


def _specialization(res: dict, plt: Any) -> Figure | None:
    spec = res.get("specialization") or []
    if len(spec) <= 1:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([e for e, _ in spec], [v for _, v in spec])
    ax.set_xlabel("epoch"), ax.set_ylabel("mean capacity share in top domain"), ax.set_title("Specialization")
    return fig, "specialization.png", "Specialization of experts over epochs (1/K = generalist, 1 = specialist)."


def honest_share(res: dict) -> float:
    """The honest nodes' share of everything earned in a run."""
    tot = sum(c["nodes"] * c["earned_per_node"] for c in res["classes"].values())
    h = res["classes"].get("honest", {})
    return h.get("nodes", 0) * h.get("earned_per_node", 0.0) / tot if tot else float("nan")


def _variants(res: dict, plt: Any) -> Figure | None:
    if not res.get("variants"):
        return None
    rows = [("base", res)] + [(v["label"], v) for v in res["variants"]]
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    xs = np.arange(len(rows))
    for p in ("market", "random", "oracle"):
        axes[0].plot(xs, [r[1]["policies"][p]["mean_loss"] for r in rows], "o-", label=p, color=COLOURS[p])
    axes[0].set_title("mean loss"), axes[0].legend()
    axes[1].plot(xs, [r[1]["certified_rate"] for r in rows], "o-")
    axes[1].set_title("certified rate")
    axes[2].plot(xs, [honest_share(r[1]) for r in rows], "o-"), axes[2].set_title("honest share of rewards")
    for a in axes:
        a.set_xticks(xs, [r[0] for r in rows], rotation=30, fontsize=7)
    return fig, "variants.png", "Variants of this scenario on the same seed and item stream."


PLOTS = (_loss_over_time, _win_heatmap, _rewards, _proxy_rate, _strikes, _latency_cdf, _routing_curve,
         _specialization, _variants)


def plots(res: dict, out: Path) -> list[tuple[str, str]]:
    """Write the PNGs (a plot with nothing to show is left out); return (file name, caption) pairs."""
    plt = _plt()
    made: list[tuple[str, str]] = []
    for draw in PLOTS:
        got = draw(res, plt)
        if got is not None:
            fig, name, caption = got
            fig.tight_layout()
            fig.savefig(out / name, dpi=90)
            plt.close(fig)
            made.append((name, caption))
    return made


def _table(rows: list[list[str]], head: list[str]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _f(v: object, nd: int = 4, why: str = "not computable in this run") -> str:
    """A number for the page: a NaN or None is "n/a (why)", never a raw nan."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"n/a ({why})"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


# What the protocol does to each node class (docs/simulator.md, [adversary]); the table shows what happened.
CLASS_NOTES = {
    "honest": "the reference: earns as winner, producer and signer",
    "equivocate": "sends two different Commits: evidence, never accepted, 50 % of its stake slashed",
    "fake": "claims 30 % of its real loss: fails verification and is marked faulty (5 % slashed) when its claim is "
            "the lowest; otherwise it still signs reports and earns as a signer, so some earnings are expected",
    "collapsed": "a collapsed encoder (loss 1.0): never wins, earns only as a signer",
    "withhold": "commits and never reveals: struck for latency, earns little",
    "slow": "an honest but slow node: struck when it misses the timers",
}


def routing_note(res: dict) -> str:
    """Why routing_ratio reads as it does: above 1, unmeasurable, or as expected."""
    rr = res.get("routing_ratio")
    if rr is None or (isinstance(rr, float) and math.isnan(rr)):
        return "n/a: random and oracle policies had the same mean loss, so there is no gap to recover"
    if rr > 1:
        return (f"{rr:.3f} > 1: the market beat the oracle. The oracle is the best expert per batch by *expected* "
                "loss; the market picks the lowest *realised* loss among the shard's candidates and the proxied "
                "expert, so it also selects on each batch's noise. Above 1 means routing recovered the whole gap.")
    return "share of the random -> oracle loss gap the market recovers (1 = as good as the oracle)"


def class_rows(classes: dict) -> list[list[str]]:
    honest = classes.get("honest", {}).get("earned_per_node") or 0.0
    rows = []
    for c, v in sorted(classes.items()):
        rel = f"{v['earned_per_node'] / honest:.2f}x" if honest else "n/a (no honest earnings)"
        rows.append([c, v["nodes"], _f(v["strikes_per_node"], 2), _f(v["faulty_per_node"], 2),
                     _f(v["slashed_per_node"], 1), _f(v["earned_per_node"], 1), rel, CLASS_NOTES.get(c, "")])
    return rows


def space_rows(spaces: dict) -> list[list[str]]:
    """One row per vector space: its rounds, certificates, wins per producer and cheats' wins."""
    def counts(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

    return [[space, v["rounds"], v["certified"], v["refunded"], v["unserved"], counts(v["wins"]),
             counts(v["cheat_wins"])] for space, v in spaces.items()]


def quality_rows(spaces: dict) -> list[list[str]]:
    """Real mode: per space and corpus group, what the submitters received against the best model of the space."""
    rows = []
    for space, v in spaces.items():
        for group, q in v.get("quality", {}).items():
            alone = {m: x for m, x in q["alone_mrr"].items() if x is not None}
            best = max(alone, key=lambda m: alone[m], default=None)
            rows.append([space, group, q["items"], _f(q["delivered_mrr"], 3, "no repeated label"),
                         f"{best} {_f(alone[best], 3)}" if best else "n/a (no model of the space)",
                         _f(q["ratio_to_best_in_space"], 3, "n/a")])
    return rows


QUALITY_HEAD = ["space", "items", "n", "delivered MRR", "best model alone", "delivered / best"]


def _spaces_worth_a_table(spaces: dict) -> bool:
    """More than one space, or cheats in one: a variant's spaces say something the base table does not."""
    return len(spaces) > 1 or any(v["cheat_wins"] for v in spaces.values())


SPACE_HEAD = ["space", "rounds", "certified", "refunded", "refused (no stake)", "wins per producer",
              "cheats' wins (must be 0 while honest models are most of a shard)"]

CLASS_HEAD = ["class", "nodes", "strikes/node", "faulty/node", "slashed/node", "earned/node", "earned vs honest",
              "what the protocol does to it"]


def write_report(res: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    slim = {k: v for k, v in res.items() if k != "series"}
    (out / "results.json").write_text(json.dumps(slim, indent=1, default=float))
    made = plots(res, out)
    pol = [[p, _f(res["policies"][p]["mean_loss"]), _f(res["policies"][p]["win_rate_specialists"], 3),
            _f(res["policies"][p]["proxy_rate"], 3)] for p in POLICIES]
    head = [["scenario", res["scenario"]], ["seed", res["seed"]], ["fidelity", res["fidelity"]],
            ["nodes", res["nodes"]], ["submissions", res["submissions"]], ["wall (s)", _f(res["wall_s"], 1)],
            ["protocol events / s", f"{res['events_per_s']:,.0f}"],
            ["routing_ratio", _f(res["routing_ratio"], 3, "no random -> oracle gap"), routing_note(res)],
            ["routing_ratio (cbtm)", _f(res["routing_ratio_cbtm"], 3, "no random -> oracle gap"),
             "the same for the cbtm baseline (clustered routing without a market)"],
            ["apgr", _f(res["apgr"], 3, "the message level has no per-submission 'proxy this one' counterfactual"
                                        if res["fidelity"] == "message" else "no routing curve in this run"),
             "area under the routing curve: gap recovered, averaged over the share of submissions proxied"],
            ["certified rate", _f(res["certified_rate"], 3, "no rounds"),
             "share of rounds that ended with a certificate (q of the shard signed one report); the rest timed out "
             "or lacked signers and their fees were refunded"],
            ["reward Gini", _f(res["reward_gini"], 3, "nothing earned"), "0 = equal rewards, 1 = one node earns all"],
            ["supply before / after", f"{res['supply_before']} / {res['supply_after']}", "must be equal"],
            ["supply conserved (all runs)", res["supply_conserved_everywhere"], ""]]
    cls = class_rows(res["classes"])
    var = [[v["label"], json.dumps(v["changes"]), _f(v["policies"]["market"]["mean_loss"]),
            _f(v["routing_ratio"], 3, "no gap"), _f(v["certified_rate"], 3, "no rounds"),
            _f(v["classes"].get("honest", {}).get("earned_per_node", 0.0), 1), v["supply_conserved"]]
           for v in res.get("variants", [])]
    var_classes = "".join(f"<h3>Node classes: {html.escape(v['label'])}</h3>" + _table(class_rows(v["classes"]),
                                                                                          CLASS_HEAD)
                          for v in res.get("variants", []) if set(v.get("classes", {})) - {"honest"})
    var_classes += "".join(f"<h3>Vector spaces: {html.escape(v['label'])}</h3>" + _table(space_rows(v["spaces"]),
                                                                                         SPACE_HEAD)
                           for v in res.get("variants", []) if _spaces_worth_a_table(v.get("spaces", {})))
    imgs = "".join(
        f"<figure><img src='data:image/png;base64,{base64.b64encode((out / n).read_bytes()).decode()}'>"
        f"<figcaption>{html.escape(c)}</figcaption></figure>" for n, c in made)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>moenode sim: {html.escape(res['scenario'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}figure{{display:inline-block;margin:8px}}
img{{max-width:520px}}figcaption{{font-size:12px;max-width:520px}}</style></head><body>
<h1>moenode simulator: {html.escape(res['scenario'])}</h1><p>{html.escape(res.get('description', ''))}</p>
<p>Signatures in this run: {'Ed25519' if res['config']['net']['ed25519'] else 'CheapSigner (a keyed-hash stand-in; the real signer runs in the consistency test)'}.</p>
<h2>Summary</h2>{_table([[r[0], str(r[1]), r[2] if len(r) > 2 else ''] for r in head], ['', 'value', 'meaning'])}
<h2>Policies (after warm-up)</h2>{_table(pol, ['policy', 'mean loss', 'specialist win rate', 'proxy rate'])}
<h2>Vector spaces</h2><p>Each submission names a space; its shard is drawn from the stake that serves it, and
routing, proxies and the other policies stay inside it. Wins are counted per producer (the model in the real mode,
the expert's kind in the synthetic world).</p>{_table(space_rows(res.get("spaces", {})), SPACE_HEAD)}
{('<h2>Delivered quality (real mode)</h2><p>One index per space of every measured item a submitter received (the '
  'vectors of the model that won its last round): global MRR of the first same-source neighbour, against each '
  'model of the space alone on the same items, as bench/quality.py measures it on a testnet.</p>'
  + _table(quality_rows(res.get("spaces", {})), QUALITY_HEAD)) if quality_rows(res.get("spaces", {})) else ''}
<h2>Node classes</h2>{_table(cls, CLASS_HEAD)}
{('<h2>Variants</h2>' + _table(var, ['label', 'changes', 'market loss', 'routing_ratio', 'certified', 'honest earned/node', 'supply ok'])) if var else ''}
{var_classes}
<h2>Plots</h2>{imgs}</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
