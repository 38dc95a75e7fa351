"""A new operator's walk through README.md and docs/, driving the `moenode` command as a person would, from a
working directory with relative paths: testnet up, status into a pipe, submit, a new node that joins, is funded
and stakes, restarts without flags, a testnet node restarted by hand, and testnet down.

Each step checks what the docs promise: one-line answers, whole tables in a pipe, a start-up banner, JSON-lines
logs with event lines and no faiss noise, bonding shown after a stake, reconnection in seconds after a restart, and
a `testnet down` that stops every daemon under the testnet's directory (the one restarted by hand included).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moenode.testing.testnet import daemons_under, wait_peers

pytestmark = pytest.mark.slow


def moenode(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "moenode", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout)
    assert "Traceback" not in r.stdout + r.stderr, (args, r.stderr)
    return r


def start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "moenode", "run", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_run(home: Path, pid: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            run = json.loads((home / "run.json").read_text())
        except (OSError, ValueError):
            run = {}
        if run.get("pid") == pid:
            return run
        time.sleep(0.3)
    raise AssertionError(f"{home} did not come up")


def stop(p: subprocess.Popen) -> tuple[str, str]:
    if p.poll() is None:
        os.kill(p.pid, signal.SIGTERM)
    return p.communicate(timeout=60)


def test_a_new_operator_walks_through_the_docs(tmp_path):
    cwd = tmp_path
    procs: list[subprocess.Popen] = []
    try:
        # README: a local testnet
        r = moenode(cwd, "testnet", "up", "--nodes", "3", "--dir", "./tn", "--models", "minilm-l3,minilm-l3,minilm-l6")
        assert r.returncode == 0, r.stderr
        tn = (cwd / "tn").resolve()
        r = moenode(cwd, "testnet", "status", "--dir", "./tn")  # stdout is a pipe here
        assert r.returncode == 0 and "…" not in r.stdout
        assert len([line for line in r.stdout.splitlines() if "minilm" in line]) == 3, r.stdout

        # quickstart: submit and look
        r = moenode(cwd, "submit", "--home", "./tn/node1", "some text", "more text")
        assert r.returncode == 0 and "certified round" in r.stdout, r.stderr
        st = json.loads(moenode(cwd, "status", "--home", "./tn/node1", "--json").stdout)
        assert st["rounds"].get("certified", 0) >= 1 or st["submissions"] >= 1
        assert {"counters_since", "bonding", "stake_by_epoch", "member_from_epoch"} <= set(st)

        # joining-a-testnet: a new node
        r = moenode(cwd, "init", "--home", "./newnode", "--model", "minilm-l3")
        assert r.returncode == 0, r.stderr
        boot = json.loads((tn / "testnet.json").read_text())["nodes"][0]["addrs"][0]
        new = (cwd / "newnode").resolve()
        p = start(cwd, "--home", "./newnode", "--genesis", "./tn/genesis.toml", "--bootstrap", boot)
        procs.append(p)
        run = wait_run(new, p.pid)
        wait_peers(new, 3, 90)  # `moenode status` until it sees the network: the bootstrap node, then the others
        assert boot in (new / "config.toml").read_text()  # remembered for later runs

        r = moenode(cwd, "transfer", "--home", "./tn/node0", "./newnode", "10000")
        assert r.returncode == 0, r.stderr
        r = moenode(cwd, "stake", "--home", "./newnode", "5000", "--model", "minilm-l3")
        assert r.returncode == 0 and "counts from epoch" in r.stdout, r.stderr
        st = json.loads(moenode(cwd, "status", "--home", "./newnode", "--json").stdout)
        assert st["bonding"] == 5000 or (st["member_from_epoch"] or 0) > st["epoch"], st
        table = moenode(cwd, "status", "--home", "./newnode").stdout
        assert "not staked" not in table and ("bonding" in table or "member from epoch" in table), table

        # stop and restart without flags: the banner, then peers again within seconds
        out, _ = stop(p)
        assert run["peer_id"] in out and "node.log" in out and "node stopped" in out
        p = start(cwd, "--home", "./newnode")
        procs.append(p)
        wait_run(new, p.pid)
        took = wait_peers(new, 1, 30)
        assert took < 30

        # the log: JSON lines, the stake as an event, no faiss loader lines
        docs = [json.loads(line) for line in (new / "node.log").read_text().splitlines()]
        assert any(d.get("event") == "stake" and d.get("amount") == 5000 for d in docs)
        assert not any(d["logger"].startswith("faiss") for d in docs)
        assert any(d.get("event") == "transfer" and d.get("amount") == 10000
                   for d in map(json.loads, (tn / "node0" / "node.log").read_text().splitlines()))

        # a testnet node restarted by hand, then testnet down stops it too
        node1 = tn / "node1"
        old = json.loads((node1 / "run.json").read_text())["pid"]
        os.kill(old, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while (node1 / "run.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        again = start(cwd, "--home", "./tn/node1")
        procs.append(again)
        wait_run(node1, again.pid)
        wait_peers(node1, 1, 30)
        assert again.pid in daemons_under(tn)
        r = moenode(cwd, "testnet", "down", "--dir", "./tn")
        assert r.returncode == 0 and f"node1 (pid {again.pid})" in r.stdout, r.stdout
        again.wait(timeout=30)
        assert daemons_under(tn) == {} and p.poll() is None  # the new node lives outside ./tn
    finally:
        for q in procs:
            if q.poll() is None:
                stop(q)
        if (tmp_path / "tn" / "testnet.json").exists():
            moenode(cwd, "testnet", "down", "--dir", "./tn", timeout=120)
