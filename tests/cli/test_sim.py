"""`moenode sim run` end to end on a tiny scenario: results.json with the agreed keys, PNGs, a self-contained page."""

import json

from typer.testing import CliRunner

from moenode.cli.sim import app
from moenode.sim import SCENARIOS
from moenode.sim.config import parse

TINY = """
description = "tiny"
[sim]
name = "tiny"
nodes = 80
submissions = 1200
epoch_submissions = 400
chunk = 200
cbtm_clusters = 8
[[variants]]
label = "proxy off"
"sim.proxy" = false
"""


def test_run_writes_results_plots_and_report(tmp_path):
    f = tmp_path / "tiny.toml"
    f.write_text(TINY)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(f), "--out", str(out), "--seed", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    for k in ("scenario", "seed", "nodes", "submissions", "fidelity", "wall_s", "events_per_s", "policies",
              "routing_ratio", "supply_before", "supply_after", "apgr"):
        assert k in r
    assert r["seed"] == 3 and r["scenario"] == "tiny" and r["supply_before"] == r["supply_after"]
    assert set(r["policies"]) == {"market", "cbtm", "random", "oracle"}
    for p in r["policies"].values():
        assert {"mean_loss", "win_rate_specialists", "proxy_rate"} <= set(p)
    assert r["variants"][0]["label"] == "proxy off"
    pngs = {p.name for p in out.glob("*.png")}
    assert {"loss_over_time.png", "win_heatmap.png", "rewards.png", "proxy_rate.png", "routing_curve.png",
            "variants.png"} <= pngs
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs) and "<table>" in page


def test_bad_scenario_is_a_clear_error(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[sim]\nnodez = 3\n")
    res = CliRunner().invoke(app, ["run", str(f), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "nodez" in res.output
    assert not (tmp_path / "o").exists()


def test_bundled_scenarios_parse():
    names = {f.stem for f in SCENARIOS.glob("*.toml")}
    assert {"specialization", "proxy", "routing", "slashing", "byzantine", "scale"} <= names
    for f in SCENARIOS.glob("*.toml"):
        parse(f.read_text())


BYZ = TINY.replace('name = "tiny"', 'name = "byz"') + """
[[variants]]
label = "byz 8%"
"adversary.fake" = 0.04
"adversary.withhold" = 0.04
"""


def test_a_report_explains_its_figures_and_draws_no_empty_plot(tmp_path):
    """A routing_ratio over 1 was unexplained, NaN was printed raw, a byzantine run's per-class results were only in
    results.json, and plots with nothing to show (an empty strikes chart) were drawn."""
    from moenode.sim.report import write_report
    from moenode.sim.scenario import run_scenario

    res = run_scenario(parse(BYZ), 3)
    res["routing_ratio"], res["apgr"] = 1.012, float("nan")  # as a routing run and a message-level run report
    out = tmp_path / "out"
    page = write_report(res, out).read_text()
    import re

    text = re.sub(r"base64,[^']*", "", page)
    assert not re.search(r"\bnan\b", text, re.I)
    assert "n/a (" in page and "1.012 &gt; 1: the market beat the oracle" in page and "expected" in page
    assert "share of rounds that ended with a certificate" in page
    assert "Node classes: byz 8%" in page and "fake" in page and "earned vs honest" in page
    pngs = {p.name for p in out.glob("*.png")}
    assert "strikes.png" not in pngs  # the base run has no strikes and no faulty marks
    assert page.count("data:image/png;base64,") == len(pngs)


def test_progress_is_reported_as_it_goes_without_a_terminal(tmp_path):
    """Without a TTY the progress bar of `sim run` printed once, at the end."""
    f = tmp_path / "tiny.toml"
    f.write_text(TINY)
    res = CliRunner().invoke(app, ["run", str(f), "--out", str(tmp_path / "o"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    steps = [line for line in res.output.splitlines() if line.startswith("base: ")]
    assert len(steps) >= 3 and steps[-1].endswith("1200/1200 submissions"), res.output
