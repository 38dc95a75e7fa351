"""Who may call the control API: the node's own user with its token, and no one else.

The server here is the real one (`moenode.node.control_server.serve`, trio + h11 on 127.0.0.1); the node behind it
is a stand-in at that boundary, which answers /status and records whether a request ever reached it.
tests/node/test_epochs.py runs the same checks against real nodes, and tests/e2e the CLI against real daemons.
"""

import json
import os
import stat
import tempfile
from pathlib import Path

import pytest
import trio
from controlkit import NOBODY, as_nobody, raw_http

from moenode.client import Control, ControlError
from moenode.core.crypto import H
from moenode.core.orders import escrow_account
from moenode.node import control_server
from moenode.node.context import Metrics
from moenode.store.keys import load_or_create_token


class NodeBoundary:
    """What the control server reads of a node to guard and answer /status and /metrics."""

    def __init__(self, home: Path):
        self.control_token, _ = load_or_create_token(home / "control.token")
        self.metrics = Metrics()
        self.reached = 0

    def operations(self) -> control_server.Operations:
        return control_server.Operations(self.control_token, self.metrics, self.status, self.counters)

    def status(self) -> dict:
        self.reached += 1
        return {"peers": 0, "balance": 5, "stake": 0, "voting_power": 0, "epoch": 1, "strikes": 0, "wins": 0,
                "index": {"entries": 0}, "rejections": {}}

    def counters(self) -> dict[str, int]:
        return {f"node_{k}": v for k, v in self.metrics.c.items()}


@pytest.fixture
def home():
    """A node home that other users can traverse, as a home directory usually is: only file modes protect it."""
    d = Path(tempfile.mkdtemp(prefix="moenode-control-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    for p in sorted(d.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    d.rmdir()


@pytest.fixture
async def server(home, nursery):
    node = NodeBoundary(home)
    url = await nursery.start(control_server.serve, node.operations(), 0)
    port = int(url.rsplit(":", 1)[1])
    (home / "run.json").write_text(json.dumps({"control_url": url, "pid": os.getpid()}))  # the daemon's keys
    return node, port


def call(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
    status, raw = raw_http(port, method, path, headers, body)
    return status, json.loads(raw) if raw.startswith(b"{") else {"text": raw.decode()}


async def acall(*args, **kw) -> tuple[int, dict]:
    return await trio.to_thread.run_sync(lambda: call(*args, **kw))


def good(port: int, token: str) -> dict[str, str]:
    return {"Host": f"127.0.0.1:{port}", "Authorization": f"Bearer {token}"}


async def test_the_token_opens_status_metrics_and_posts(server):
    node, port = server
    h = good(port, node.control_token)
    assert (await acall(port, "GET", "/status", h))[0] == 200
    status, text = await acall(port, "GET", "/metrics", h)
    assert status == 200 and "moenode_balance 5.0" in text["text"]
    localhost = dict(h, Host=f"localhost:{port}")
    assert (await acall(port, "GET", "/status", localhost))[0] == 200
    # a POST with the token and JSON reaches the handler (which refuses this body for its own reason)
    status, err = await acall(port, "POST", "/transfer", dict(h, **{"Content-Type": "application/json"}), b"{}")
    assert status == 400 and "'to'" in err["error"]
    status, err = await acall(port, "POST", "/transfer",
                              dict(h, **{"Content-Type": "application/json; charset=utf-8"}), b"{}")
    assert status == 400 and "'to'" in err["error"]


@pytest.mark.parametrize("to,why", [(escrow_account(H("shard", b"x")), "escrow account"),
                                    (H("typo", b""), "not an Ed25519 public key")], ids=["escrow", "not-a-key"])
async def test_a_transfer_no_one_could_spend_is_refused(server, to, why):
    node, port = server
    headers = good(port, node.control_token) | {"Content-Type": "application/json"}
    body = json.dumps({"to": to.hex(), "amount": 5}).encode()
    status, err = await acall(port, "POST", "/transfer", headers, body)
    assert status == 400 and why in err["error"]


@pytest.mark.parametrize("path", ["/status", "/metrics", "/transfer", "/stake", "/submit", "/nothing"])
async def test_no_token_or_a_wrong_one_is_refused_everywhere(server, path):
    node, port = server
    method = "GET" if path in ("/status", "/metrics") else "POST"
    json_ct = {"Content-Type": "application/json"}
    wrong = "0" * 64 if node.control_token != "0" * 64 else "1" * 64
    for headers in ({"Host": f"127.0.0.1:{port}"} | json_ct, good(port, wrong) | json_ct,
                    good(port, node.control_token[:-1]) | json_ct, {"Host": f"127.0.0.1:{port}",
                    "Authorization": f"Basic {node.control_token}"} | json_ct):
        status, err = await acall(port, method, path, headers, b'{"to": "00", "amount": 1}' if method == "POST" else b"")
        assert status == 401 and "token" in err["error"], (headers, status, err)
    assert node.reached == 0 and node.metrics.get("control_refused_token") == 4


async def test_a_browser_style_request_is_refused_even_with_the_token(server):
    """A cross-origin `text/plain` POST with a foreign Host was accepted and moved funds: a web page the operator
    opens (or a DNS-rebound name) can send one. Each of its marks is refused on its own."""
    node, port = server
    token = node.control_token
    page = {"Host": "attacker.example:80", "Origin": "http://attacker.example", "Content-Type": "text/plain"}
    body = b'{"to": "' + b"ab" * 32 + b'", "amount": 1234}'
    assert (await acall(port, "POST", "/transfer", page, body))[0] in (401, 403, 415, 421)
    cases = [
        ({"Host": f"attacker.example:{port}"}, 421, "Host"),
        ({"Host": f"127.0.0.1:{port + 1}"}, 421, "Host"),
        ({"Origin": "http://attacker.example"}, 403, "Origin"),
        ({"Origin": "null"}, 403, "Origin"),
        ({"Content-Type": "text/plain"}, 415, "application/json"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),
    ]
    for extra, want, word in cases:
        headers = good(port, token) | {"Content-Type": "application/json"} | extra
        status, err = await acall(port, "POST", "/transfer", headers, body)
        assert status == want and word in err["error"], (extra, status, err)
    assert node.reached == 0
    counted = {k: v for k, v in node.metrics.c.items() if k.startswith("control_refused_")}
    assert counted == {"control_refused_host": 3, "control_refused_origin": 2, "control_refused_content_type": 2}


async def test_another_local_user_can_read_neither_file_and_is_refused(server, home):
    """As uid nobody, the audit read run.json (0644) for the port and moved funds with no credential at all."""
    node, port = server
    os.chmod(home / "run.json", 0o600)  # as the daemon writes it (tests/node/test_epochs.py checks the daemon does)

    def attack() -> dict:
        out = {}
        for name in ("run.json", "control.token"):
            try:
                (home / name).read_text()
                out[name] = "read"
            except PermissionError:
                out[name] = "denied"
        # it knows the port anyway (a port scan of 127.0.0.1 finds it) and guesses at the token
        out["status"] = call(port, "POST", "/transfer", {"Host": f"127.0.0.1:{port}", "Content-Type":
                             "application/json", "Authorization": "Bearer " + "ab" * 32},
                             b'{"to": "' + b"ab" * 32 + b'", "amount": 1234}')[0]
        try:
            Control.for_home(home).status()
            out["cli"] = "worked"
        except ControlError as e:
            out["cli"] = str(e)
        return out

    seen = await trio.to_thread.run_sync(as_nobody, attack)
    assert seen["run.json"] == "denied" and seen["control.token"] == "denied"
    assert seen["status"] == 401 and "permission denied" in seen["cli"]
    assert node.reached == 0
    assert stat.S_IMODE((home / "control.token").stat().st_mode) == 0o600 and NOBODY != os.getuid()


async def test_the_client_reads_the_token_from_the_home(server, home):
    node, port = server
    ctl = Control.for_home(home)
    assert (await trio.to_thread.run_sync(ctl.status))["balance"] == 5
    assert "moenode_balance" in await trio.to_thread.run_sync(ctl.metrics)
    assert node.control_token not in repr(ctl)


async def test_idle_connections_cannot_use_up_the_node_and_the_operator_still_gets_in(server):
    """Anyone who can reach 127.0.0.1 can connect without the token. 1,100 connections left silent used up the
    file descriptors of a live node running under the usual limit of 1,024: /status timed out, and its peers could
    not connect to it. Connections are now capped: over the cap, a new connection takes the place of the one that
    has waited longest without sending a request, so the silent ones are closed at once and a real request is
    answered."""
    node, port = server
    idle = []
    with trio.fail_after(30):
        for _ in range(200):  # well over the cap
            s = trio.socket.socket()
            await s.connect(("127.0.0.1", port))
            idle.append(s)
        assert (await acall(port, "GET", "/status", good(port, node.control_token)))[0] == 200
        closed = 0
        for s in idle:  # the oldest silent ones were closed by the server
            with trio.move_on_after(0.02):
                closed += await s.recv(1) == b""
            s.close()
    assert closed >= 100 and node.metrics.get("control_evicted") >= 100


async def test_every_metric_exists_from_the_start_with_a_real_help_text(server):
    """Series appeared only after their first increment, with HELP texts such as `count of net_connected`."""
    from prometheus_client.parser import text_string_to_metric_families

    from moenode.node.metrics import COUNTERS, FAMILIES

    node, port = server
    status, body = await acall(port, "GET", "/metrics", good(port, node.control_token))
    assert status == 200
    fams = {f.name: f for f in text_string_to_metric_families(body["text"])}
    for name, help_ in [COUNTERS[k] for k in COUNTERS] + [(f.name, f.help) for f in FAMILIES]:
        assert name in fams and fams[name].type == "counter" and fams[name].documentation == help_, name
        assert all(s.value == 0 for s in fams[name].samples if s.name.endswith("_total")), name
    for f in FAMILIES:
        assert {s.labels[f.label] for s in fams[f.name].samples if s.name.endswith("_total")} >= set(f.values)
    for fam in fams.values():
        assert fam.name.startswith("moenode_") and fam.name == fam.name.lower(), fam.name
        assert not fam.documentation.startswith(("count of", "current ")), fam.name
        assert "not yet described" not in fam.documentation, fam.name
    assert "moenode_rejected_messages" in fams and "moenode_stake_bonding" in fams


def test_the_metrics_reference_lists_every_series():
    from moenode.node.metrics import COUNTERS, FAMILIES, GAUGES

    doc = (Path(__file__).parents[2] / "docs" / "status-and-metrics.md").read_text()
    for name in [n + "_total" for n, _ in COUNTERS.values()] + [f.name + "_total" for f in FAMILIES] + \
            [n for n, _ in GAUGES.values()]:
        assert f"`{name}" in doc, name


async def test_a_control_port_taken_at_the_last_moment_is_one_config_error(home):
    import socket

    from moenode.node.config import ConfigError

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        with pytest.raises(ConfigError, match=f"control port {holder.getsockname()[1]}"):
            async with trio.open_nursery() as n:
                await n.start(control_server.serve, NodeBoundary(home).operations(), holder.getsockname()[1])
    except BaseExceptionGroup as eg:  # trio wraps what a nursery raises
        assert isinstance(eg.exceptions[0], ConfigError)
    finally:
        holder.close()
