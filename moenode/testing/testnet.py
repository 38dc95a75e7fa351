"""A local testnet: N daemon processes on loopback, each with its own home, key, log and control API.

Theory of operation
-------------------
`create` makes one home per node (key and config, through the same code as `moenode init`: `moenode.node.home`),
then writes one genesis naming every node's account with a distinct model (general models first, then the domain
specialists the zoo ships), a balance to pay fees with, stake, and a faucet balance on node 0. The genesis uses
short timers (`testnet_params`) so rounds, refunds and epochs happen in seconds. `start` spawns `python -m moenode run` per home,
each in its own process group with stdout/stderr in `HOME/console.log` (the daemon writes `HOME/node.log`).
Node i bootstraps from the addresses of nodes 0..i-1, read from their `run.json`, so the mesh is complete without
waiting for discovery. The testnet is ready when every node's `/status` reports all the others as peers.
`D/testnet.json` records what other tools need: per node its peer id, addresses, home, control/status URL, pid and
model.

Stopping is SIGTERM, a wait, then SIGKILL of the whole process group. `Testnet` is a context manager whose exit
always stops every process it started, so a failing test or an interrupted demo leaves nothing behind; `down`
stops a testnet started by another process, from the pids in `testnet.json` (checked against /proc so a reused
pid is never signalled), and every other daemon whose home lies under the testnet's directory: the processes that
hold a `HOME/node.lock` there (`daemons_under`), so a node restarted by hand is stopped too.

Each node (`NodeProcess`, a handle on one daemon process) is reached through its control API with the control
client (`moenode.client`); `moenode.testing.ledger_tools` reads and compares the nodes' ledgers.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from moenode.client import RUN_FILE, TOKEN_FILE, Control, ControlError, peer_count, pid_alive, read_run, read_token
from moenode.core.genesis import Account, Genesis, Params, genesis_to_toml
from moenode.node.config import LOCK_FILE
from moenode.core.spaces import DEFAULT_SPACE, Space
from moenode.node.home import init_home

log = logging.getLogger("moenode.testnet")

TESTNET_FILE = "testnet.json"
GENESIS_FILE = "genesis.toml"
GENERAL_MODELS = ("minilm-l6", "minilm-l3")
LARGE_MODEL = "mpnet-base"  # the large expert: about 6x L6's compute per item, so it needs a submitter's deadline
MARKET_NODES = 5  # testnets of at least this many nodes get the large expert by default (see default_models)
DEFAULT_DEADLINE_MS = 60_000  # the demo's commit deadline: long enough for the large expert on a shared machine
NODE_BALANCE = 1_000_000  # each node's spending money for fees
NODE_STAKE = 1_000
FAUCET_BALANCE = 100_000_000  # node 0 also holds the faucet: `moenode transfer --home <node0>` funds newcomers
DEFAULT_FEE = 100
ADVERT_INTERVAL_S = 30  # a late joiner still learns the experts at once: nodes re-advertise to newcomers


class TestnetError(RuntimeError):
    """The testnet could not be brought up or reached; the message says which node and where its log is."""

    __test__ = False


# --- genesis ---------------------------------------------------------------------------------------------------
def testnet_params(**overrides: Any) -> Params:
    """Protocol parameters with timers short enough for a laptop testnet (rounds in seconds, refunds in a minute).

    Commit timeouts stay generous: every node shares the same few cores, so one member's embedding can wait behind
    the others'.
    """
    short: dict[str, Any] = dict(
        commit_timeout_ms=30_000,
        commit_ms_per_mib=1_000,
        grace_min_ms=200,
        grace_cap_ms=5_000,
        vote_timeout_ms=10_000,
        reveal_timeout_ms=10_000,
        verify_timeout_ms=30_000,
        report_timeout_ms=10_000,
        round_abort_ms=90_000,
        # a testnet's winner index holds a few hundred entries, not hundreds of thousands: two nearby wins by one
        # producer are evidence enough to route to it
        routing_min_hits=2,
        # the router (static-l3) puts two items of one corpus domain at cosine 0.10-0.35 (median) and two of
        # different domains at -0.11 to -0.03; at the default 0.5 a testnet's small index never covers half a batch
        # and no member ever proxies. Measured on the corpus (48 eval items per domain, two won batches indexed, the
        # third routed): at 0.35 docstrings stay unroutable; at 0.25 every domain routes, and 5 of 20 cross-domain
        # batches find the other domain's winner too (the member's own estimate per region still decides)
        routing_min_cos_micro=250_000,
    )
    short.update(overrides)
    return replace(Params(), **short)


def zoo_names() -> list[str]:
    """Real zoo models (general ones and specialists), without the adversaries."""
    try:
        from moenode.encoders import zoo
    except ImportError:  # encoders not installed: general names only
        return list(GENERAL_MODELS)
    return [n for n in zoo.names() if not zoo.is_adversary(n) and not zoo.is_router(n)]


def default_models(n: int, available: Sequence[str] | None = None) -> list[str]:
    """n distinct models where possible, then repeats from the top.

    From `MARKET_NODES` nodes on, a market: L6, the large expert, the specialists, then L3. Smaller testnets (most
    tests) keep to the small general models, then the specialists: the large expert costs 0.5 GB in every node that
    verifies it and about 6x L6's compute, and a 3-node shard would hold it in every round. Specialists are what
    give the market something to route: with only general models one of them wins everywhere.
    """
    names = list(available if available is not None else zoo_names())
    general = [m for m in GENERAL_MODELS if m in names] or names[:1]
    specs = [m for m in names if m.startswith("spec-")]
    large = [LARGE_MODEL] if LARGE_MODEL in names else []
    head = general[:1] + large + specs + general[1:] if n >= MARKET_NODES and large else general + specs
    order = head + [m for m in names if m not in head and m != LARGE_MODEL]
    if not order:
        raise TestnetError("no models available to assign")
    return [order[i % len(order)] for i in range(n)]


def make_genesis(name: str, accounts: Sequence[tuple[bytes, str]], *, epoch_ms: int, now_ms: int | None = None,
                 params: Params | None = None, balance: int = NODE_BALANCE, stake: int = NODE_STAKE,
                 faucet: int = FAUCET_BALANCE) -> Genesis:
    """A genesis for (account, model) pairs; the first account also holds the faucet balance."""
    serves, spaces = model_spaces([model for _, model in accounts])
    accs = [Account(pubkey=pk, balance=balance + (faucet if i == 0 else 0), stake=stake, model_id=model, price=0,
                    spaces=(serves[model],))
            for i, (pk, model) in enumerate(accounts)]
    gtime = int(time.time() * 1000) if now_ms is None else now_ms
    g = Genesis(name=name, genesis_time_ms=gtime, epoch_ms=epoch_ms, params=params or testnet_params(),
                spaces=spaces)
    g = g.with_accounts(sorted(accs, key=lambda a: a.pubkey))
    return g


def model_spaces(models: Sequence[str]) -> tuple[dict[str, str], tuple[Space, ...]]:
    """The space each model serves and the spaces they make up; the default (first) is the space most nodes serve,
    "main" (minilm-l6's) on a tie. Without the encoders installed every model serves one open default space."""
    try:
        from moenode.encoders import zoo
    except ImportError:
        return {m: DEFAULT_SPACE for m in models}, (Space(),)
    serves = {m: zoo.space_of(m) for m in models}
    count = Counter(serves[m] for m in models)
    ids = sorted(count, key=lambda s: (-count[s], s != DEFAULT_SPACE, s))
    spaces = tuple(zoo.space(s) for s in ids)
    return serves, spaces


# --- processes -------------------------------------------------------------------------------------------------
def node_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def spawn_node(home: Path, genesis: Path | None, bootstrap: Sequence[str], extra: Sequence[str] = ()
               ) -> subprocess.Popen:
    """Start `moenode run` for one home in its own process group (so it and its children stop together)."""
    cmd = [sys.executable, "-m", "moenode", "run", "--home", str(home)]
    if genesis is not None:
        cmd += ["--genesis", str(genesis)]
    for addr in bootstrap:
        cmd += ["--bootstrap", addr]
    cmd += list(extra)
    console = open(home / "console.log", "ab")
    try:
        return subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=node_env(), start_new_session=True)
    finally:
        console.close()


def _is_our_node(pid: int, home: Path) -> bool:
    """True if pid is a `moenode run` of this home (guards against signalling a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"run" in cmdline and str(home).encode() in cmdline


def stop_pid(pid: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> str:
    """SIGTERM, wait up to `timeout`, then SIGKILL the process group. Returns "stopped", "killed" or "gone"."""
    def alive() -> bool:
        if proc is not None:
            return proc.poll() is None
        return pid_alive(pid) and not _zombie(pid)

    if not alive():
        return "gone"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "gone"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            _reap_group(pid)
            return "stopped"
        time.sleep(0.1)
    _reap_group(pid, force=True)
    if proc is not None:
        proc.wait(timeout=10)
    return "killed"


def _running(pid: int) -> bool:
    return pid_alive(pid) and not _zombie(pid)


def daemons_under(root: Path) -> dict[int, Path]:
    """pid -> home of every process holding a HOME/node.lock under `root` open: what a running daemon does from
    start to exit (moenode.node.daemon.hold_home), whoever started it. Reads /proc; other users' processes are
    not visible, and are not ours to stop."""
    root = root.resolve()
    found: dict[int, Path] = {}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            targets = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:  # gone, or not ours
            continue
        for t in targets:
            if t.endswith("/" + LOCK_FILE) and Path(t).is_relative_to(root):
                found[int(fd_dir.parent.name)] = Path(t).parent
    found.pop(os.getpid(), None)
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def _reap_group(pgid: int, force: bool = False) -> None:
    """Kill whatever is left in the node's process group (its worker children, if any)."""
    try:
        os.killpg(pgid, signal.SIGKILL if force else signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


# --- the testnet -----------------------------------------------------------------------------------------------
@dataclass
class NodeProcess:
    """One daemon process of a testnet: its home, model and identity, and while it runs its pid and control URL
    (`proc` when this process started it)."""

    index: int
    home: Path
    model: str
    account: str = ""
    peer_id: str = ""
    addrs: list[str] = field(default_factory=list)
    control_url: str = ""
    pid: int | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.home.name

    def control(self, timeout: float = 10.0) -> Control:
        if not self.control_url:
            return Control.for_home(self.home, timeout)
        return Control(self.control_url, read_token(self.home), timeout)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and pid_alive(self.pid) and not _zombie(self.pid)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "peer_id": self.peer_id, "account": self.account,
                "addrs": self.addrs, "home": str(self.home), "model": self.model, "control_url": self.control_url,
                "status_url": self.control_url + "/status" if self.control_url else "",
                "metrics_url": self.control_url + "/metrics" if self.control_url else "",
                "token_file": str(self.home / TOKEN_FILE), "pid": self.pid}


class Testnet:
    """N local daemons. Use as a context manager (`with Testnet.create(...) as tn: tn.start()`): exit stops all."""

    __test__ = False  # not a pytest test class

    def __init__(self, root: Path, nodes: list[NodeProcess], genesis_path: Path):
        self.root = root
        self.nodes = nodes
        self.genesis_path = genesis_path
        self.extra_args: list[str] = []

    # creation ----------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, n: int, *, models: Sequence[str] | None = None, epoch_ms: int = 30_000,
               name: str = "", params: Params | None = None, start_in_ms: int = 0) -> "Testnet":
        """Homes root/node0..node{n-1} with keys and configs, and one genesis copied into every home."""
        if n < 1:
            raise TestnetError("a testnet needs at least one node")
        root = root.resolve()
        if (root / TESTNET_FILE).exists():
            prev = load_testnet_json(root)
            if any(nd.get("pid") and pid_alive(nd["pid"]) and _is_our_node(nd["pid"], Path(nd["home"]))
                   for nd in prev.get("nodes", [])):
                raise TestnetError(f"a testnet is already running in {root}; `moenode testnet down --dir {root}`")
        root.mkdir(parents=True, exist_ok=True)
        models = list(models) if models else default_models(n)
        if len(models) < n:
            models = [models[i % len(models)] for i in range(n)]
        nodes: list[NodeProcess] = []
        for i in range(n):
            home = root / f"node{i}"
            info = init_home(home, models[i], force=True, advert_interval_s=ADVERT_INTERVAL_S)
            nodes.append(NodeProcess(i, home, models[i], account=info["account"], peer_id=info.get("peer_id", "")))
        g = make_genesis(name or f"testnet-{root.name}"[:64], [(bytes.fromhex(nd.account), nd.model) for nd in nodes],
                         epoch_ms=epoch_ms, params=params, now_ms=int(time.time() * 1000) + start_in_ms)
        text = genesis_to_toml(g)
        gpath = root / GENESIS_FILE
        gpath.write_text(text)
        for nd in nodes:
            (nd.home / GENESIS_FILE).write_text(text)
        tn = cls(root, nodes, gpath)
        tn.write_json()
        log.info("testnet created dir=%s nodes=%d models=%s", root, n, ",".join(models))
        return tn

    @classmethod
    def load(cls, root: Path) -> "Testnet":
        root = root.resolve()
        doc = load_testnet_json(root)
        nodes = [NodeProcess(d.get("index", i), Path(d["home"]), d.get("model", ""), account=d.get("account", ""),
                      peer_id=d.get("peer_id", ""), addrs=list(d.get("addrs", [])),
                      control_url=d.get("control_url", ""), pid=d.get("pid"))
                 for i, d in enumerate(doc["nodes"])]
        return cls(root, nodes, Path(doc.get("genesis", root / GENESIS_FILE)))

    def write_json(self) -> None:
        doc = {"dir": str(self.root), "genesis": str(self.genesis_path),
               "faucet": {"home": str(self.nodes[0].home), "account": self.nodes[0].account},
               "nodes": [nd.as_json() for nd in self.nodes]}
        tmp = self.root / (TESTNET_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, self.root / TESTNET_FILE)

    # running -----------------------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0, progress=None) -> None:
        """Start every node in order (each bootstraps from those already up) and wait until all are connected."""
        for nd in self.nodes:
            self.start_node(nd, timeout=timeout)
            if progress:
                progress(nd)
        self.wait_connected(timeout=timeout)
        self.write_json()

    def bootstrap_for(self, nd: NodeProcess) -> list[str]:
        addrs: list[str] = []
        for other in self.nodes:
            if other is not nd and other.addrs and other.alive():
                addrs += other.addrs[:1]
        return addrs

    def start_node(self, nd: NodeProcess, timeout: float = 180.0, wait: bool = True) -> None:
        if nd.alive():
            raise TestnetError(f"{nd.name} is already running (pid {nd.pid})")
        (nd.home / RUN_FILE).unlink(missing_ok=True)
        nd.proc = spawn_node(nd.home, self.genesis_path, self.bootstrap_for(nd), self.extra_args)
        _STARTED.add(self)
        nd.pid = nd.proc.pid
        nd.control_url = ""
        log.info("node started name=%s pid=%d model=%s", nd.name, nd.pid, nd.model)
        if wait:
            self.wait_up(nd, timeout)

    def wait_up(self, nd: NodeProcess, timeout: float = 180.0) -> None:
        """Until run.json names this process and /status answers."""
        deadline = time.monotonic() + timeout
        while True:
            if not nd.alive():
                raise TestnetError(f"{nd.name} exited during start-up (code {nd.proc.poll() if nd.proc else '?'});"
                                   f" see {nd.home / 'console.log'} and {nd.home / 'node.log'}")
            run = read_run(nd.home)
            if run and run.get("pid") == nd.pid and run.get("control_url"):
                try:
                    Control(run["control_url"], read_token(nd.home), 5).status()
                except ControlError:
                    pass
                else:
                    nd.peer_id, nd.addrs = run.get("peer_id", nd.peer_id), list(run.get("addrs", []))
                    nd.account = run.get("account", nd.account)
                    nd.control_url = run["control_url"]
                    self.write_json()
                    return
            if time.monotonic() > deadline:
                raise TestnetError(f"{nd.name} did not come up within {timeout:.0f}s; see {nd.home / 'node.log'}")
            time.sleep(0.2)

    def wait_connected(self, timeout: float = 120.0, nodes: Sequence[NodeProcess] | None = None) -> None:
        """Until each live node reports every other live node as a peer."""
        deadline = time.monotonic() + timeout
        live = [nd for nd in (nodes or self.nodes) if nd.alive()]
        want = len([nd for nd in self.nodes if nd.alive()]) - 1
        while True:
            counts = {}
            for nd in live:
                try:
                    counts[nd.name] = peer_count(nd.control(5).status())
                except ControlError:
                    counts[nd.name] = -1
            if all(c >= want for c in counts.values()):
                return
            if time.monotonic() > deadline:
                raise TestnetError(f"nodes not connected after {timeout:.0f}s (peers seen: {counts}, want {want})")
            time.sleep(0.3)

    def statuses(self, timeout: float = 10.0) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        for nd in self.nodes:
            try:
                out.append(nd.control(timeout).status() if nd.alive() else None)
            except ControlError:
                out.append(None)
        return out

    def kill(self, nd: NodeProcess) -> None:
        """kill -9, as a crash would: no clean shutdown, run.json left behind."""
        if nd.pid is not None and nd.alive():
            _reap_group(nd.pid, force=True)
            if nd.proc is not None:
                nd.proc.wait(timeout=10)
        log.info("node killed name=%s pid=%s", nd.name, nd.pid)

    def stop_node(self, nd: NodeProcess, timeout: float = 20.0) -> str:
        """SIGTERM one node (SIGKILL its group after `timeout`): "stopped", "killed", or "gone" if it was not ours."""
        if nd.pid is None or (nd.proc is None and not _is_our_node(nd.pid, nd.home)):
            return "gone"
        how = stop_pid(nd.pid, timeout, nd.proc)
        log.info("node stopped name=%s pid=%s how=%s", nd.name, nd.pid, how)
        return how

    def stop(self, timeout: float = 20.0) -> dict[str, str]:
        """Stop every node: SIGTERM to all at once, wait up to `timeout`, then SIGKILL the stragglers' groups.

        Besides the processes recorded in testnet.json, every daemon that holds the lock of a home under the
        testnet's directory is stopped too, whatever started it (a node restarted by hand, or by a script)."""
        live = [(nd, nd.pid) for nd in self.nodes if nd.pid is not None and nd.alive()
                and (nd.proc is not None or _is_our_node(nd.pid, nd.home))]
        known = {pid for _, pid in live}
        others = {pid: home for pid, home in daemons_under(self.root).items() if pid not in known}
        for pid in [pid for _, pid in live] + list(others):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while (any(nd.alive() for nd, _ in live) or any(_running(p) for p in others)) and time.monotonic() < deadline:
            time.sleep(0.1)
        result = {}
        for nd, pid in live:
            if nd.alive():
                _reap_group(pid, force=True)
                result[nd.name] = "killed"
            else:
                _reap_group(pid)  # leftovers of its group, if any
                result[nd.name] = "stopped"
            if nd.proc is not None:
                nd.proc.wait(timeout=10)
            log.info("node stopped name=%s pid=%s how=%s", nd.name, nd.pid, result[nd.name])
        for pid, home in others.items():
            name = f"{home.relative_to(self.root) if home.is_relative_to(self.root) else home} (pid {pid})"
            if _running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                result[name] = "killed"
            else:
                result[name] = "stopped"
            log.info("node stopped name=%s pid=%s how=%s", name, pid, result[name])
        return result

    def detach(self) -> None:
        """Leave the nodes running after this process exits (`moenode testnet up`); `down` stops them later."""
        _STARTED.discard(self)
        for nd in self.nodes:
            nd.proc = None

    def __enter__(self) -> "Testnet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_STARTED: "weakref.WeakSet[Testnet]" = weakref.WeakSet()


@atexit.register
def _stop_started() -> None:
    """Safety net: a process that started nodes stops them when it exits (testnet up hands them over instead)."""
    for tn in list(_STARTED):
        tn.stop(timeout=10)


def wait_peers(home: Path, want: int, timeout: float) -> float:
    """Until the node of `home` reports at least `want` connected peers; returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if peer_count(Control.for_home(home, 10).status()) >= want:
                return time.monotonic() - t0
        except ControlError:  # not up yet, or restarting
            pass
        time.sleep(0.2)
    raise TestnetError(f"{home}: fewer than {want} peers after {timeout:.0f}s")


def load_testnet_json(root: Path) -> dict[str, Any]:
    path = root / TESTNET_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TestnetError(f"no testnet in {root} (no {TESTNET_FILE}); start one with "
                           f"`moenode testnet up --dir {root}`") from None
    except ValueError as e:
        raise TestnetError(f"{path} is not valid JSON: {e}") from None
