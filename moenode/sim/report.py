"""Plots (PNG) and a self-contained HTML page (plots embedded as base64, plus summary tables) for one run."""

import base64
import html
import json
from pathlib import Path

import numpy as np

from moenode.sim.metrics import POLICIES

COLOURS = {"market": "#1f77b4", "cbtm": "#ff7f0e", "random": "#7f7f7f", "oracle": "#2ca02c"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plots(res: dict, out: Path) -> list[tuple[str, str]]:
    """Write the PNGs; return (file name, caption) pairs."""
    plt = _plt()
    s = res["series"]
    made: list[tuple[str, str]] = []

    def save(fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        made.append((name, caption))

    fig, ax = plt.subplots(figsize=(7, 4))
    for p in POLICIES:
        ax.plot(s["loss"][p]["x"], s["loss"][p]["y"], label=p, color=COLOURS[p])
    ax.set_xlabel("submissions"), ax.set_ylabel("mean winning loss"), ax.legend()
    ax.set_title("Winning loss over time per routing policy")
    save(fig, "loss_over_time.png", "Mean winning loss over time, per policy (same item stream).")

    wins = np.array(s["heat"]["wins"]) if s["heat"]["wins"] else np.zeros((1, 1))
    fig, ax = plt.subplots(figsize=(7, max(3, 0.18 * len(wins) + 1)))
    im = ax.imshow(wins, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(s["heat"]["experts"])), s["heat"]["experts"], fontsize=6)
    ax.set_xlabel("domain"), ax.set_title("Wins per expert x domain (top experts, market)")
    fig.colorbar(im, ax=ax)
    save(fig, "win_heatmap.png", "Expert x domain win counts under the market policy (producers, top 40).")

    earned = np.sort(np.array(s["earned"], dtype=float))
    fig, ax = plt.subplots(figsize=(6, 4))
    if earned.sum() > 0:
        cum = np.concatenate([[0], np.cumsum(earned)]) / earned.sum()
        ax.plot(np.linspace(0, 1, len(cum)), cum, label=f"Lorenz (Gini {res['reward_gini']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("share of nodes"), ax.set_ylabel("share of rewards"), ax.legend()
    ax.set_title("Reward distribution")
    save(fig, "rewards.png", "Reward distribution over nodes (Lorenz curve and Gini).")

    fig, ax = plt.subplots(figsize=(7, 4))
    for p in ("market", "cbtm"):
        pts = s["proxy"][p]
        ax.plot([a for a, _ in pts], [b for _, b in pts], label=p, color=COLOURS[p])
    ax.set_ylim(-0.02, 1.02), ax.set_xlabel("submissions"), ax.set_ylabel("served outside the drawn shard")
    ax.legend(), ax.set_title("Proxy rate over time")
    save(fig, "proxy_rate.png", "Share of submissions served by an expert outside the drawn shard.")

    cls = res["classes"]
    names = sorted(cls)
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, [cls[c]["strikes_per_node"] for c in names], 0.4, label="strikes per node")
    ax.bar(xs + 0.2, [cls[c]["faulty_per_node"] for c in names], 0.4, label="faulty marks per node")
    ax.set_xticks(xs, [f"{c}\n({cls[c]['nodes']})" for c in names])
    ax.legend(), ax.set_title("Strikes and faulty marks per node class")
    save(fig, "strikes.png", "Latency strikes and faulty marks per node class (count of nodes in brackets).")

    lat = np.array(s["latency"], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(lat):
        ax.plot(np.sort(lat), np.linspace(0, 1, len(lat)))
    ax.set_xlabel("round latency (ms, virtual)"), ax.set_ylabel("CDF"), ax.set_title("Round latency CDF")
    save(fig, "latency_cdf.png", "Round latency CDF (virtual time, submission to certificate).")

    rc = res.get("routing_curve") or {}
    fig, ax = plt.subplots(figsize=(6, 4))
    if rc.get("proxied_share"):
        ax.plot(rc["proxied_share"], rc["pgr"], label=f"market (APGR {res['apgr']:.3f})")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no routing curve at this fidelity level", ha="center", transform=ax.transAxes)
    ax.axhline(1.0, color="k", ls=":", lw=0.8)
    ax.set_xlabel("share of submissions proxied"), ax.set_ylabel("gap recovered (random -> oracle)")
    ax.set_title("Routing curve")
    save(fig, "routing_curve.png", "RouteLLM-style routing curve: share of the random->oracle gap recovered "
                                   "against the share of submissions proxied, highest routing score first.")

    spec = res.get("specialization") or []
    if len(spec) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([e for e, _ in spec], [v for _, v in spec])
        ax.set_xlabel("epoch"), ax.set_ylabel("mean capacity share in top domain"), ax.set_title("Specialization")
        save(fig, "specialization.png", "Specialization of experts over epochs (1/K = generalist, 1 = specialist).")

    if res.get("variants"):
        rows = [("base", res)] + [(v["label"], v) for v in res["variants"]]
        fig, axes = plt.subplots(1, 3, figsize=(11, 4))
        labels = [r[0] for r in rows]
        xs = np.arange(len(rows))
        for p in ("market", "random", "oracle"):
            axes[0].plot(xs, [r[1]["policies"][p]["mean_loss"] for r in rows], "o-", label=p, color=COLOURS[p])
        axes[0].set_title("mean loss"), axes[0].legend()
        axes[1].plot(xs, [r[1]["certified_rate"] for r in rows], "o-")
        axes[1].set_title("certified rate")
        def honest_share(res_: dict) -> float:
            tot = sum(c["nodes"] * c["earned_per_node"] for c in res_["classes"].values())
            h = res_["classes"].get("honest", {})
            return h.get("nodes", 0) * h.get("earned_per_node", 0.0) / tot if tot else float("nan")

        axes[2].plot(xs, [honest_share(r[1]) for r in rows], "o-"), axes[2].set_title("honest share of rewards")
        for a in axes:
            a.set_xticks(xs, labels, rotation=30, fontsize=7)
        save(fig, "variants.png", "Variants of this scenario on the same seed and item stream.")
    return made


def _table(rows: list[list[str]], head: list[str]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _f(v: object, nd: int = 4) -> str:
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


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
            ["routing_ratio", _f(res["routing_ratio"], 3)], ["routing_ratio (cbtm)", _f(res["routing_ratio_cbtm"], 3)],
            ["apgr", _f(res["apgr"], 3)], ["certified rate", _f(res["certified_rate"], 3)],
            ["reward Gini", _f(res["reward_gini"], 3)],
            ["supply before / after", f"{res['supply_before']} / {res['supply_after']}"],
            ["supply conserved (all runs)", res["supply_conserved_everywhere"]]]
    cls = [[c, v["nodes"], _f(v["strikes_per_node"], 2), _f(v["faulty_per_node"], 2), _f(v["slashed_per_node"], 1),
            _f(v["earned_per_node"], 1)] for c, v in sorted(res["classes"].items())]
    var = [[v["label"], json.dumps(v["changes"]), _f(v["policies"]["market"]["mean_loss"]),
            _f(v["routing_ratio"], 3), _f(v["certified_rate"], 3),
            _f(v["classes"].get("honest", {}).get("earned_per_node", 0.0), 1), v["supply_conserved"]]
           for v in res.get("variants", [])]
    imgs = "".join(
        f"<figure><img src='data:image/png;base64,{base64.b64encode((out / n).read_bytes()).decode()}'>"
        f"<figcaption>{html.escape(c)}</figcaption></figure>" for n, c in made)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>moenode sim: {html.escape(res['scenario'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}figure{{display:inline-block;margin:8px}}
img{{max-width:520px}}figcaption{{font-size:12px;max-width:520px}}</style></head><body>
<h1>moenode simulator: {html.escape(res['scenario'])}</h1><p>{html.escape(res.get('description', ''))}</p>
<p>Signatures in this run: {'Ed25519' if res['config']['net']['ed25519'] else 'CheapSigner (a keyed-hash stand-in; the real signer runs in the consistency test)'}.</p>
<h2>Summary</h2>{_table([[a, str(b)] for a, b in head], ['', ''])}
<h2>Policies (after warm-up)</h2>{_table(pol, ['policy', 'mean loss', 'specialist win rate', 'proxy rate'])}
<h2>Node classes</h2>{_table(cls, ['class', 'nodes', 'strikes/node', 'faulty/node', 'slashed/node', 'earned/node'])}
{('<h2>Variants</h2>' + _table(var, ['label', 'changes', 'market loss', 'routing_ratio', 'certified', 'honest earned/node', 'supply ok'])) if var else ''}
<h2>Plots</h2>{imgs}</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
