"""The node commands' own logic: arguments, files, output formats and errors.

The daemon's control API is replaced here by a small HTTP server that records what it receives (a fake at the
boundary); tests/e2e/ runs the same commands against real daemons.
"""

import base64
import json
import os
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moenode.cli import app
from moenode.client import read_vectors
from moenode.core.crypto import Ed25519Signer, H
from moenode.core.genesis import genesis_to_toml, parse_genesis
from moenode.core.orders import escrow_account
from moenode.store.keys import load_or_create_token
from moenode.testing.testnet import make_genesis, wait_peers

runner = CliRunner()


class FakeDaemon:
    """Serves /status, /metrics, /submit, /transfer, /stake like the daemon's control API, and records requests.
    Like the daemon, it answers 401 to a request without the home's control token."""

    def __init__(self, home: Path, status: dict | None = None, dim: int = 4):
        home.mkdir(parents=True, exist_ok=True)
        self.token, _ = load_or_create_token(home / "control.token")
        self.requests: list[tuple[str, str, dict | None]] = []
        self.status = status or {"peer_id": "12D3KooWfake", "peers": ["a", "b"], "epoch": 3, "stake": 1000,
                                 "balance": 5000, "rounds": 7, "wins": 2, "proxies": 1, "strikes": 0}
        self.dim = dim
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def _send(self, code: int, obj) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {fake.token}":
                    return True
                self._send(401, {"error": "missing or wrong token"})
                return False

            def do_GET(self):
                if not self._authorized():
                    return
                fake.requests.append(("GET", self.path, None))
                if self.path == "/status":
                    return self._send(200, fake.status)
                self._send(404, {"error": "not found"})

            def do_POST(self):
                if not self._authorized():
                    return
                if self.headers.get("Content-Type") != "application/json":
                    return self._send(415, {"error": "not JSON"})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(("POST", self.path, body))
                if self.path == "/submit":
                    n = len(body["texts"])
                    emb = np.arange(n * fake.dim, dtype="<f4").reshape(n, fake.dim)
                    return self._send(200, {"embeddings": base64.b64encode(emb.tobytes()).decode(), "dim": fake.dim,
                                            "winner": "aa" * 32, "producer": "bb" * 32, "loss": 0.123456, "loss_micro": 123456,
                                            "certificate": "cd" * 40, "attempts": [{"ok": True}],
                                            "space": body.get("space", "main"), "model_id": "ab" * 32,
                                            "model_ids": ["ab" * 32] * n, "shard_id": "ef" * 32,
                                            "shard": {"members": 1, "signatures": 1} if body.get("space") == "solo"
                                            else {"members": 3, "signatures": 2}})
                if self.path == "/transfer" and body["amount"] > 10**9:
                    return self._send(400, {"error": "insufficient balance"})
                self._send(200, {"ok": True})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        (home / "run.json").write_text(json.dumps({
            "peer_id": "12D3KooWfake", "addrs": [], "account": "ff" * 32, "pid": os.getpid(),
            "control_url": f"http://127.0.0.1:{self.server.server_port}"}))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def daemon(tmp_path):
    d = FakeDaemon(tmp_path / "home")
    yield d
    d.close()


def test_init_creates_a_private_key_and_config_and_never_replaces_the_key(tmp_path):
    home = tmp_path / "n"
    r = runner.invoke(app, ["init", "--home", str(home), "--model", "minilm-l3", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert stat.S_IMODE((home / "key").stat().st_mode) == 0o600
    assert 'model = "minilm-l3"' in (home / "config.toml").read_text()
    assert info["peer_id"].startswith("12D3KooW") and len(info["account"]) == 64
    key = (home / "key").read_bytes()

    again = runner.invoke(app, ["init", "--home", str(home)])
    assert again.exit_code == 1 and "already a node home" in again.output
    forced = runner.invoke(app, ["init", "--home", str(home), "--force", "--json"])
    assert forced.exit_code == 0
    assert (home / "key").read_bytes() == key and json.loads(forced.output)["account"] == info["account"]


def test_run_refuses_a_home_without_key_or_genesis(tmp_path):
    r = runner.invoke(app, ["run", "--home", str(tmp_path / "none")])
    assert r.exit_code == 1 and "moenode init" in r.output
    runner.invoke(app, ["init", "--home", str(tmp_path / "n")])
    r = runner.invoke(app, ["run", "--home", str(tmp_path / "n")])
    assert r.exit_code == 1 and "--genesis" in r.output


def test_status_json_and_table(daemon, tmp_path):
    home = tmp_path / "home"
    r = runner.invoke(app, ["status", "--home", str(home), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == daemon.status
    r = runner.invoke(app, ["status", "--home", str(home)])
    assert r.exit_code == 0
    for field in ("peers", "epoch", "stake", "balance", "rounds", "wins", "proxies", "strikes"):
        assert field in r.output
    assert "2 connected" in r.output
    assert "membership" in r.output and "shard member" not in r.output  # the fake reports no voting power


def test_commands_without_a_running_node_explain_what_to_do(tmp_path):
    r = runner.invoke(app, ["status", "--home", str(tmp_path)])
    assert r.exit_code == 1 and "moenode run" in r.output
    (tmp_path / "run.json").write_text(json.dumps({"control_url": "http://127.0.0.1:9", "pid": 2**22 + 1}))
    r = runner.invoke(app, ["submit", "--home", str(tmp_path), "x"])
    assert r.exit_code == 1 and "stale" in r.output


def test_a_node_without_its_token_file_is_explained_in_one_line(daemon, tmp_path):
    (tmp_path / "home" / "control.token").unlink()
    r = runner.invoke(app, ["status", "--home", str(tmp_path / "home")])
    assert r.exit_code == 1 and "control.token" in r.output and len(r.output.strip().splitlines()) <= 2


@pytest.mark.parametrize("content", ["garbage\n", "ed25519-seed:zz\n", "", "ed25519-seed:" + "ab" * 31 + "\n"],
                         ids=["not-a-key", "not-hex", "empty", "short"])
def test_a_corrupt_key_is_one_line_naming_the_file_and_is_never_replaced(tmp_path, content):
    """`moenode run` on a home whose key file was damaged printed an 88-line traceback."""
    home = tmp_path / "n"
    assert runner.invoke(app, ["init", "--home", str(home), "--model", "minilm-l3"]).exit_code == 0
    genesis = make_genesis("corrupt-key", [(bytes(32), "minilm-l3")], epoch_ms=30_000)
    (home / "genesis.toml").write_text(genesis_to_toml(genesis))
    key = home / "key"
    key.write_text(content)
    for args in (["run", "--home", str(home)], ["init", "--home", str(home), "--force"]):
        r = subprocess.run([sys.executable, "-m", "moenode", *args], capture_output=True, text=True, timeout=120)
        err = r.stderr.strip()
        assert r.returncode == 1 and "Traceback" not in err and str(key) in err, err
        assert len(err.splitlines()) == 1 and "backup" in err, err
        assert key.read_text() == content  # left as it was


def test_a_damaged_genesis_in_the_home_is_one_line(tmp_path):
    home = tmp_path / "n"
    assert runner.invoke(app, ["init", "--home", str(home), "--model", "minilm-l3"]).exit_code == 0
    (home / "genesis.toml").write_text("garbage = [\n")
    r = subprocess.run([sys.executable, "-m", "moenode", "run", "--home", str(home)], capture_output=True, text=True,
                       timeout=120)
    err = r.stderr.strip()
    assert r.returncode == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "genesis.toml" in err and "not valid TOML" in err


def test_submit_texts_writes_npz_and_prints_summary(daemon, tmp_path):
    out = tmp_path / "v.npz"
    r = runner.invoke(app, ["submit", "--home", str(tmp_path / "home"), "--fee", "7", "--out", str(out),
                            "--space", "main", "one", "two", "three"])
    assert r.exit_code == 0, r.output
    assert daemon.requests[-1] == ("POST", "/submit", {"texts": ["one", "two", "three"], "fee": 7, "space": "main"})
    v = read_vectors(out)
    assert v["vectors"].shape == (3, 4) and v["vectors"].dtype == np.float32 and v["vectors"][1, 0] == 4.0
    assert v["space"] == "main" and list(v["model_ids"]) == ["ab" * 32] * 3
    for word in ("winner", "producer", "proxied", "loss", "0.123456", "certificate", "space"):
        assert word in r.output


def test_submit_says_how_many_members_checked_the_work(daemon, tmp_path):
    home = str(tmp_path / "home")
    r = runner.invoke(app, ["submit", "--home", home, "--space", "main", "one"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "3 members, 2 signed the certificate" in r.output and "no other node" not in r.output
    r = runner.invoke(app, ["submit", "--home", home, "--space", "solo", "one"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "1 member, 1 signed" in r.output and "only one node serves space solo: no other node checked this work" in r.output


def test_submit_out_must_be_npz(daemon, tmp_path):
    r = runner.invoke(app, ["submit", "--home", str(tmp_path / "home"), "--out", str(tmp_path / "v.npy"), "one"])
    assert r.exit_code == 2 and "v.npz" in r.output and len(daemon.requests) == 0


def test_submit_file_jsonl_and_json_output(daemon, tmp_path):
    f = tmp_path / "b.jsonl"
    f.write_text('{"text": "alpha"}\n"beta"\n\n{"text": "gamma", "id": 3}\n')
    r = runner.invoke(app, ["submit", "--home", str(tmp_path / "home"), "--file", str(f), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["shape"] == [3, 4] and res["loss_micro"] == 123456 and res["items"] == 3
    assert daemon.requests[-1][2] == {"texts": ["alpha", "beta", "gamma"]}


@pytest.mark.parametrize("content,msg", [('{"txt": 1}\n', "text"), ("not json\n", "not JSON")])
def test_submit_bad_file_is_refused_before_anything_is_sent(daemon, tmp_path, content, msg):
    f = tmp_path / "b.jsonl"
    f.write_text(content)
    r = runner.invoke(app, ["submit", "--home", str(tmp_path / "home"), "--file", str(f)])
    assert r.exit_code == 1 and msg in r.output and "b.jsonl:1" in r.output
    assert not any(p == "/submit" for _, p, _ in daemon.requests)


def test_submit_usage_errors(daemon, tmp_path):
    home = str(tmp_path / "home")
    assert runner.invoke(app, ["submit", "--home", home]).exit_code == 2
    assert runner.invoke(app, ["submit", "--home", home] + ["x"] * 257).exit_code == 2
    assert runner.invoke(app, ["submit", "--home", home, "--fee", "0", "x"]).exit_code == 2
    assert not daemon.requests


def test_transfer_to_a_home_and_stake(daemon, tmp_path):
    other = tmp_path / "other"
    info = json.loads(runner.invoke(app, ["init", "--home", str(other), "--json"]).output)
    r = runner.invoke(app, ["transfer", "--home", str(tmp_path / "home"), str(other), "500"])
    assert r.exit_code == 0, r.output
    assert daemon.requests[-1] == ("POST", "/transfer", {"to": info["account"], "amount": 500})
    r = runner.invoke(app, ["transfer", "--home", str(tmp_path / "home"), info["peer_id"], "5"])
    assert r.exit_code == 0 and daemon.requests[-1][2]["to"] == info["account"]
    r = runner.invoke(app, ["stake", "--home", str(tmp_path / "home"), "1000", "--model", "minilm-l3"])
    assert r.exit_code == 0 and ("POST", "/stake", {"amount": 1000, "model": "minilm-l3"}) in daemon.requests
    assert "counts from epoch 5" in r.output  # the fake node is in epoch 3


def test_transfer_errors_are_reported(daemon, tmp_path):
    home = str(tmp_path / "home")
    r = runner.invoke(app, ["transfer", "--home", home, "nobody", "5"])
    assert r.exit_code == 2 and "not an account" in r.output
    key = Ed25519Signer.from_entropy(b"recipient").public_key.hex()
    r = runner.invoke(app, ["transfer", "--home", home, key, str(10**10)])
    assert r.exit_code == 1 and "insufficient balance" in r.output


def test_a_transfer_to_an_escrow_or_a_non_key_is_refused_before_anything_is_sent(daemon, tmp_path):
    """A transfer to an escrow address got votes and burnt its amount; a mistyped account would too."""
    home = str(tmp_path / "home")
    r = runner.invoke(app, ["transfer", "--home", home, escrow_account(H("shard", b"x")).hex(), "5"])
    assert r.exit_code == 2 and "escrow account" in r.output
    r = runner.invoke(app, ["transfer", "--home", home, H("typo", b"").hex(), "5"])
    assert r.exit_code == 2 and "not an Ed25519 public key" in r.output
    assert not any(p == "/transfer" for _, p, _ in daemon.requests)


def test_run_refuses_a_bad_bootstrap_and_a_genesis_of_another_network(tmp_path):
    home = tmp_path / "n"
    runner.invoke(app, ["init", "--home", str(home)])
    mine = make_genesis("net-a", [(b"\x01" * 32, "minilm-l6")], epoch_ms=1000, now_ms=1)
    other = make_genesis("net-b", [(b"\x01" * 32, "minilm-l6")], epoch_ms=1000, now_ms=1)
    (home / "genesis.toml").write_text(genesis_to_toml(mine))
    (tmp_path / "other.toml").write_text(genesis_to_toml(other))
    r = runner.invoke(app, ["run", "--home", str(home), "--bootstrap", "/ip4/127.0.0.1/tcp/1"])
    assert r.exit_code == 2 and "/p2p/" in r.output
    r = runner.invoke(app, ["run", "--home", str(home), "--genesis", str(tmp_path / "other.toml")])
    assert r.exit_code == 1 and "another network" in r.output
    assert parse_genesis((home / "genesis.toml").read_text()).name == "net-a"  # left as it was


def _moenode(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moenode", *args], capture_output=True, text=True, timeout=timeout)


def test_run_refuses_a_lost_ledger_in_one_line_and_resync_sets_it_aside(tmp_path):
    """A 0-byte or deleted ledger.sqlite used to start the node from genesis, every vote lock gone (120 before, 0
    after): it could then vote twice for one sequence. `moenode run` now exits with one line that names the way
    out, `moenode resync`, which keeps the key, sets the broken file aside and makes the node abstain from voting
    until everything it may have voted for has closed."""
    from moenode.core.crypto import Ed25519Signer
    from moenode.core.messages import seal
    from moenode.core.orders import Transfer
    from moenode.store.keys import load_key
    from moenode.store.ledger_db import LedgerDB, open_authority

    home = tmp_path / "n"
    info = json.loads(runner.invoke(app, ["init", "--home", str(home), "--json"]).output)
    ledger = home / "ledger.sqlite"
    assert ledger.exists()
    signer = Ed25519Signer(load_key(home / "key"))
    g = make_genesis("net-a", [(signer.public_key, "minilm-l3")], epoch_ms=600_000)
    (home / "genesis.toml").write_text(genesis_to_toml(g))
    auth = open_authority(ledger, g, signer, lambda *a: True)
    order = seal(Transfer(signer.public_key, 0, g.epoch(int(time.time() * 1000)), b"\x05" * 32, 1), signer,
                 g.network_id)
    auth.handle_order(order.encode(), int(time.time() * 1000))  # a vote, and its lock
    auth.store.close()
    assert len(LedgerDB(ledger, g.network_id).locks()) == 1

    r = _moenode("resync", "--home", str(home))
    assert r.returncode == 1 and "is a usable ledger" in r.stderr  # a healthy one keeps its locks
    for lose in (lambda: ledger.write_bytes(b""), ledger.unlink):
        lose()
        r = _moenode("run", "--home", str(home))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, r.stderr
        assert "vote locks are gone" in lines[0] and f"moenode resync --home {home}" in lines[0]
        assert "Traceback" not in r.stderr + r.stdout
    ledger.write_bytes(b"not a database at all, but some bytes")
    r = _moenode("run", "--home", str(home))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "moenode resync" in r.stderr

    r = _moenode("resync", "--home", str(home), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["votes_from_epoch"] == g.epoch(int(time.time() * 1000)) + 2 and len(out["set_aside"]) >= 1
    assert Path(out["set_aside"][0]).read_bytes().startswith(b"not a database")  # kept, never deleted
    again = open_authority(ledger, g, signer, lambda *a: True)
    assert again.votes_from_epoch == out["votes_from_epoch"] and again.ledger.sequence(signer.public_key) == 0
    with pytest.raises(Exception, match="votes again from epoch"):
        again.handle_order(order.encode(), int(time.time() * 1000))
    again.store.close()
    assert (home / "key").exists() and info["account"] == signer.public_key.hex()


# --- a node an operator runs: ports, banner, logs, restarts -------------------------------------------------------
def _homes(tmp_path: Path, n: int, model: str = "minilm-l3") -> list[Path]:
    """n node homes (moenode init) sharing one genesis in which each is staked."""
    homes = [tmp_path / f"n{i}" for i in range(n)]
    infos = [json.loads(runner.invoke(app, ["init", "--home", str(h), "--model", model, "--json"]).output)
             for h in homes]
    g = make_genesis("ops", [(bytes.fromhex(i["account"]), model) for i in infos], epoch_ms=30_000)
    for h in homes:
        (h / "genesis.toml").write_text(genesis_to_toml(g))
    return homes


def _start(home: Path, *args: str) -> subprocess.Popen:
    (home / "run.json").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, "-m", "moenode", "run", "--home", str(home), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_up(home: Path, proc: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (home / "run.json").exists():
            return json.loads((home / "run.json").read_text())
        time.sleep(0.2)
    raise AssertionError(f"{home} did not come up")


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.terminate()
    return proc.communicate(timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_port_in_use_is_refused_in_one_line(tmp_path):
    """A node told to listen on a libp2p port another process listens on (with SO_REUSEPORT, as py-libp2p does)
    used to start and share the port; a control port in use gave a 557-line ExceptionGroup traceback."""
    import socket

    (home,) = _homes(tmp_path, 1)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        cfg = (home / "config.toml").read_text()
        (home / "config.toml").write_text(cfg.replace('"/ip4/127.0.0.1/tcp/0"', f'"/ip4/127.0.0.1/tcp/{port}"'))
        r = _moenode("run", "--home", str(home))
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"port {port} is in use" in r.stderr and "Traceback" not in r.stderr + r.stdout
        (home / "config.toml").write_text(cfg.replace("control_port = 0", f"control_port = {port}"))
        r = _moenode("run", "--home", str(home))
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"control port {port}" in r.stderr and "Traceback" not in r.stderr + r.stdout
    finally:
        holder.close()


def test_libp2p_listeners_do_not_share_a_port():
    """py-libp2p sets SO_REUSEPORT on its listeners, so two of them could bind one port."""
    import socket

    import libp2p.transport.tcp.tcp as libp2p_tcp

    import moenode.net.identity  # noqa: F401 - installs the listener options

    socks = [socket.socket(), socket.socket()]
    try:
        for s in socks:
            libp2p_tcp._set_reuse_flags(s)
        socks[0].bind(("127.0.0.1", 0))
        socks[0].listen()
        with pytest.raises(OSError):
            socks[1].bind(socks[0].getsockname())
    finally:
        for s in socks:
            s.close()


def test_init_stores_a_model_path_absolute(tmp_path, monkeypatch):
    """`init --model ./spec.onnx` stored the relative path, and `run` from another directory failed."""
    from moenode.node.config import load_config

    (tmp_path / "spec.onnx").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["init", "--home", "n", "--model", "./spec.onnx"])
    assert r.exit_code == 0, r.output
    assert load_config(tmp_path / "n").model == str(tmp_path / "spec.onnx")
    runner.invoke(app, ["init", "--home", "m", "--model", "minilm-l3"])
    assert load_config(tmp_path / "m").model == "minilm-l3"


def test_an_unknown_model_is_one_line(tmp_path):
    (home,) = _homes(tmp_path, 1)
    cfg = (home / "config.toml").read_text()
    (home / "config.toml").write_text(cfg.replace('model = "minilm-l3"', 'model = "/nowhere/spec.onnx"'))
    r = _moenode("run", "--home", str(home))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "/nowhere/spec.onnx" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("st,says", [
    ({"epoch": 3, "balance": 10, "bonding": 500, "stake": 0}, "500 bonding"),
    ({"epoch": 3, "balance": 10, "stake": 500, "member_from_epoch": 5}, "member from epoch 5"),
    ({"epoch": 3, "balance": 10, "stake": 0}, "not staked"),
])
def test_membership_shows_bonding_and_pending_stake(st, says):
    """After a successful stake, status said "not staked" until the epoch ended."""
    from moenode.cli.node import membership

    assert says in membership(st)


def test_run_prints_a_banner_and_logs_json_lines_without_faiss_noise(tmp_path):
    """`moenode run` printed nothing; node.log was plain text with ten faiss.loader lines on every start."""
    (home,) = _homes(tmp_path, 1)
    proc = _start(home)
    run = _wait_up(home, proc)
    time.sleep(1)
    out, err = _stop(proc)
    assert proc.returncode == 0, err
    assert run["peer_id"] in out and run["control_url"] in out and str(home / "node.log") in out
    assert all(a in out for a in run["addrs"]) and "node stopped" in out
    lines = (home / "node.log").read_text().splitlines()
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    assert docs and all({"ts", "level", "logger", "msg"} <= set(d) for d in docs)
    assert not any(d["logger"].startswith("faiss") for d in docs)
    proc = _start(home, "--log-format", "text")
    _wait_up(home, proc)
    _stop(proc)
    assert not (home / "node.log").read_text().splitlines()[-1].startswith("{")


@pytest.mark.slow
def test_a_restarted_node_reconnects_without_flags(tmp_path):
    """The bootstrap addresses given on the command line were not saved, nor the peers a node learnt: a node
    restarted without flags stayed at 0 peers for more than 45 s."""
    a, b = _homes(tmp_path, 2)
    for h in (a, b):  # fixed ports, as an operator configures them
        cfg = (h / "config.toml").read_text()
        (h / "config.toml").write_text(cfg.replace("/tcp/0", f"/tcp/{_free_port()}"))
    pa = _start(a)
    pb = None
    try:
        addr = _wait_up(a, pa)["addrs"][0]
        pb = _start(b, "--bootstrap", addr)
        b_addr = _wait_up(b, pb)["addrs"][0]
        assert addr in (b / "config.toml").read_text()  # saved for the next start
        wait_peers(b, 1, 60)
        deadline = time.monotonic() + 30  # a learns b's address from its advert and remembers it
        while b_addr not in ((a / "peers.json").read_text() if (a / "peers.json").exists() else ""):
            assert time.monotonic() < deadline, "a never wrote b into peers.json"
            time.sleep(0.5)
        _stop(pb)
        pb = _start(b)  # no flags: the bootstrap address was saved in config.toml
        _wait_up(b, pb)
        wait_peers(b, 1, 20)
        _stop(pa)
        pa = _start(a)  # no flags, and no bootstrap ever given to a: it dials the peer it learnt
        _wait_up(a, pa)
        wait_peers(a, 1, 20)
    finally:
        for p in (pa, pb):
            if p is not None and p.poll() is None:
                _stop(p)


def test_submit_refuses_a_batch_over_the_network_limits_before_sending(daemon, tmp_path):
    """The 8,192-byte item limit went unchecked until the daemon, and the count was a literal 256 in the command
    while the network's genesis sets it."""
    home = tmp_path / "home"
    g = make_genesis("limits", [(b"\x01" * 32, "minilm-l6")], epoch_ms=1000, now_ms=1)
    (home / "genesis.toml").write_text(genesis_to_toml(g))
    r = runner.invoke(app, ["submit", "--home", str(home), "x" * 8193])
    assert r.exit_code == 2 and "item 0 is 8,193 bytes" in r.output and "8,192" in r.output
    lines = tmp_path / "b.jsonl"
    lines.write_text("\n".join(json.dumps(f"t{i}") for i in range(300)))
    r = runner.invoke(app, ["submit", "--home", str(home), "--file", str(lines)])
    assert r.exit_code == 2 and "1 to 256 items, got 300" in r.output
    assert not any(p == "/submit" for _, p, _ in daemon.requests)
    r = runner.invoke(app, ["submit", "--home", str(home), "é" * 4096])  # 8,192 bytes: at the limit
    assert r.exit_code == 0, r.output


def test_a_ledger_whose_log_does_not_replay_is_one_line_naming_resync(tmp_path):
    """A log entry that did not replay stopped `moenode run` with a 100-line traceback, and no doc said what to do."""
    from moenode.store.ledger_db import LedgerDB

    (home,) = _homes(tmp_path, 1)
    g = parse_genesis((home / "genesis.toml").read_text())
    db = LedgerDB(home / "ledger.sqlite", g.network_id)
    db.append("checkpoint", b"\x07" * 32, b"not a checkpoint certificate")
    db.close()
    r = _moenode("run", "--home", str(home))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "does not replay" in lines[0] and f"moenode resync --home {home}" in lines[0]
    r = _moenode("resync", "--home", str(home), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["set_aside"], r.stderr
