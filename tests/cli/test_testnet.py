"""`moenode testnet` against processes that stand in for daemons: what `down` stops and what it spares.

tests/e2e runs the testnet commands' library (`moenode.testing.testnet`) against real daemons.
"""

import subprocess
import sys

from typer.testing import CliRunner

from moenode.cli import app
from moenode.testing.testnet import Testnet

runner = CliRunner()


def test_testnet_down_without_a_testnet_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["testnet", "down", "--dir", str(tmp_path)])
    assert r.exit_code == 1 and "no testnet" in r.output


def test_testnet_down_stops_the_recorded_processes_and_spares_strangers(tmp_path):
    tn = Testnet.create(tmp_path / "tn", 2, models=["minilm-l3", "minilm-l3"], epoch_ms=5_000)
    code = "import time; time.sleep(60)"
    procs = [subprocess.Popen([sys.executable, "-c", code, "run", "--home", str(nd.home)], start_new_session=True)
             for nd in tn.nodes]
    stranger = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        for nd, p in zip(tn.nodes, procs):
            nd.pid = p.pid
        tn.nodes.append(tn.nodes[0].__class__(2, tmp_path / "tn" / "ghost", "minilm-l3", pid=stranger.pid))
        tn.write_json()
        r = runner.invoke(app, ["testnet", "down", "--dir", str(tmp_path / "tn"), "--timeout", "5"])
        assert r.exit_code == 0, r.output
        assert "node0: stopped" in r.output and "node1: stopped" in r.output
        assert all(p.wait(timeout=10) is not None for p in procs)
        assert stranger.poll() is None  # its pid is in testnet.json, but it is not a node of that home
    finally:
        for p in procs + [stranger]:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_testnet_down_stops_every_daemon_whose_home_is_under_its_directory(tmp_path):
    """`down` stopped only the pids in testnet.json: two nodes restarted under the testnet's directory kept
    running. Each stand-in here holds its home's lock as a daemon does (the real `hold_home`); the one outside
    the directory is spared."""
    from moenode.testing.testnet import daemons_under

    tn = Testnet.create(tmp_path / "tn", 2, models=["minilm-l3", "minilm-l3"], epoch_ms=5_000)
    hold = "import sys, time; from pathlib import Path; from moenode.node.daemon import hold_home; " \
           "f = hold_home(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    homes = [nd.home for nd in tn.nodes] + [outside]
    procs = [subprocess.Popen([sys.executable, "-c", hold, str(h)], stdout=subprocess.PIPE, text=True) for h in homes]
    try:
        assert all(p.stdout.readline().strip() == "held" for p in procs)
        assert set(daemons_under(tmp_path / "tn").values()) == {nd.home for nd in tn.nodes}
        r = runner.invoke(app, ["testnet", "down", "--dir", str(tmp_path / "tn"), "--timeout", "5"])
        assert r.exit_code == 0, r.output
        assert all(p.wait(timeout=10) is not None for p in procs[:2])
        assert "node0 (pid" in r.output and "node1 (pid" in r.output
        assert procs[2].poll() is None  # not under the testnet's directory
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_testnet_status_prints_whole_rows_into_a_pipe(tmp_path):
    """Without a terminal, tables were cut at 80 columns: `testnet status | cat` showed `no… │ mi… │ 60…`."""
    Testnet.create(tmp_path / "tn", 2, models=["minilm-l3", "spec-legal"], epoch_ms=5_000)
    r = runner.invoke(app, ["testnet", "status", "--dir", str(tmp_path / "tn")])
    assert r.exit_code == 0, r.output
    assert "…" not in r.output
    rows = [line for line in r.output.splitlines() if "node0" in line or "node1" in line]
    assert len(rows) == 2 and "minilm-l3" in rows[0] and "spec-legal" in rows[1]


def test_testnet_status_folds_to_fit_a_narrow_terminal(tmp_path, monkeypatch):
    """On a terminal, cells are folded to fit its width instead of being cut to `no…`."""
    import io

    from rich.console import Console

    import moenode.cli.testnet as cli_testnet

    Testnet.create(tmp_path / "tn", 2, models=["minilm-l3", "spec-legal"], epoch_ms=5_000)
    buf = io.StringIO()
    monkeypatch.setattr(cli_testnet, "console", lambda: Console(file=buf, width=72))
    r = runner.invoke(app, ["testnet", "status", "--dir", str(tmp_path / "tn")])
    assert r.exit_code == 0, r.output
    text = buf.getvalue()
    assert "…" not in text and all(len(line) <= 72 for line in text.splitlines())
