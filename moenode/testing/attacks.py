"""Attacks on a live testnet, and what each one costs the nodes (bench/attacks.py and tests/e2e/test_attacks.py).

Theory of operation
-------------------
An `Arena` is a running local testnet (`moenode.testing.testnet.Testnet`: daemon processes, real libp2p, real ledgers on
disk) plus what an attacker learns about it from outside: the network id, the nodes' addresses and accounts. An
`Attack` is a function of the arena that attacks it and returns what the attacker saw (refused, counted by reason,
the round's outcome). `measure(arena, attack, probe)` runs one and reports:

* per node: alive at the end; its peak resident memory during the attack (the kernel's high-water mark, reset
  when the attack starts); its CPU seconds during the attack; its /status latency (p50, max) while the attack ran
  and after it, measured by `moenode.testing.statusprobe` in a process of its own so the attacker's CPU is not counted;
* whether every node holds the same ledger once the attack is over (the digests in /status, waited for up to
  `settle_s` as gossip and sync deliver), and whether the supply is still the genesis supply;
* the attacker's side.

A node that an attack kills by mistake is reported dead and started again before the next attack, so one finding
does not hide the others. Nodes an attack stops on purpose (a crash, an operator's mistake) are started again by
the attack itself and flagged `restarted`.

Who attacks. Most attacks come from outside: keys that complete a Noise handshake and hold no stake, either a
standard py-libp2p host writing raw bytes where a protocol expects a message, or moenode's own host used in bad
faith (its caps raised, its answers lies). Some replay a scenario that has an insider: the operator (a deleted
ledger, a corrupt key), a crash (kill -9 of a payer inside its own transfer), authorities that go down, and a long
staked history written with every authority's key (`long-sync`, built in seconds with the test helpers).

Roles: node0 holds the faucet and submits batches; node1 is the victim of the network attacks; other attacks name
their nodes. `prepare(tn, ...)` arranges before the testnet starts what some attacks need: a listen address
outside loopback (connections per IP are only capped there) and winner indexes that route batches to the
attacker's "expert" (as history would, after it had won there).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from moenode.client import ControlError
from moenode.core.codec import canonical
from moenode.core.crypto import Ed25519Signer, H
from moenode.core.genesis import parse_genesis
from moenode.core.messages import Advert, ProxyRequest, seal
from moenode.core.orders import OrderAnswer, OrderRequest, Transfer, certify, escrow_account
from moenode.encoders import zoo
from moenode.net import NetConfig, open_host, topic_name
from moenode.net.direct import envelope_protocol
from moenode.net.framing import MiB, encode_frame
from moenode.net.gossip import DEFAULT_TOPIC_CAPS, GossipConfig
from moenode.net.outsider import attacker_of, envelope_head, send_malformed_frames, send_raw
from moenode.node.config import load_config, write_default_config
from moenode.node.sync import PAGE_LIMIT
from moenode.node.winner_index import WinnerIndex
from moenode.store.keys import load_key
from moenode.testing.fuzzkit import SHAPES, dense, dense_envelope
from moenode.testing.ledger_tools import wait_ledgers_equal
from moenode.testing.ledgerkit import seal_unchecked
from moenode.testing.localuser import as_nobody, raw_http
from moenode.testing.nodekit import TEXTS, certified_transfers, write_log
from moenode.testing.testnet import NodeProcess, Testnet, spawn_node

log = logging.getLogger("attacks")

KINDS = ("kill", "freeze", "fork", "rob", "operator", "baseline")  # what an attack could do if a defence failed
EXPERT_SEED = H("key", b"attacks/lying-expert")  # the outsider the primed winner indexes route batches to
ATTACKER_CAPS = {kind: 8 * MiB for kind in DEFAULT_TOPIC_CAPS}  # an attacker ignores the topic caps


# --- the arena -----------------------------------------------------------------------------------------------------
@dataclass
class Arena:
    """A live testnet under attack, and the settings of this run."""

    tn: Testnet
    quick: bool = False
    hold_s: float = 10.0  # how long slow-loris streams and partial messages are held
    outside_ip: str | None = None  # the nodes' listen address outside loopback (see `prepare`), if any
    primed: bool = False  # the winner indexes route `TEXTS` to the lying expert (see `prepare`)
    long_log: int = 20_000  # entries of the history `long-sync` makes a node catch up on

    def __post_init__(self) -> None:
        self.genesis = parse_genesis(self.tn.genesis_path.read_text(encoding="utf-8"))
        self.net_id = self.genesis.network_id
        self.supply = self.genesis.supply()

    @property
    def nodes(self) -> list[NodeProcess]:
        return self.tn.nodes

    @property
    def faucet(self) -> NodeProcess:
        return self.nodes[0]

    @property
    def victim(self) -> NodeProcess:
        return self.nodes[1]

    def status(self, nd: NodeProcess, timeout: float = 10.0) -> dict[str, Any]:
        return nd.control(timeout).status()

    def rejections(self, nodes: list[NodeProcess] | None = None) -> Counter[str]:
        """Rejections by reason, summed over `nodes` (all by default)."""
        total: Counter[str] = Counter()
        for nd in nodes or self.nodes:
            total.update(self.status(nd)["rejections"])
        return total

    def metric(self, nd: NodeProcess, name: str) -> int:
        """One counter of the node's /metrics, e.g. `moenode_net_partial_message_waits_total` (0 if absent)."""
        for row in nd.control(10).metrics().splitlines():
            if row.startswith(name + " "):
                return int(float(row.split()[1]))
        return 0

    def account(self, nd: NodeProcess) -> bytes:
        return bytes.fromhex(nd.account)

    def addr(self, nd: NodeProcess, ip: str = "127.0.0.1") -> str:
        return next(a for a in nd.addrs if a.startswith(f"/ip4/{ip}/"))

    def restart(self, *nodes: NodeProcess) -> None:
        """Start the nodes that are down (each bootstraps from those up), and wait until all are connected."""
        for nd in nodes:
            if not nd.alive():
                self.tn.start_node(nd, timeout=180)
        self.tn.wait_connected(timeout=120)

    def wait(self, cond: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                return False
            time.sleep(step)
        return True

    def epoch(self) -> int:
        return self.genesis.epoch(int(time.time() * 1000))


def prepare(tn: Testnet, *, outside_ip: str | None, prime: bool) -> None:
    """Before the testnet starts: listen on `outside_ip` too (the per-IP connection cap exempts loopback), and
    prime every node's winner index with the lying expert's wins on `TEXTS`, as certificates would have."""
    for nd in tn.nodes:
        cfg = load_config(nd.home)
        if outside_ip:
            (nd.home / "config.toml").unlink()
            write_default_config(nd.home, model=cfg.model, advert_interval_s=cfg.advert_interval_s,
                                 listen=[*cfg.listen, f"/ip4/{outside_ip}/tcp/0"])
    if not prime:
        return
    p = parse_genesis(tn.genesis_path.read_text(encoding="utf-8")).params
    vecs = zoo.load(p.router_model).embed(TEXTS)
    expert = Ed25519Signer(EXPERT_SEED).public_key
    for nd in tn.nodes:
        index = WinnerIndex.open(load_config(nd.home).path("index"), vecs.shape[1], epochs=p.index_epochs,
                                 max_entries=p.index_max_entries)
        for k in range(3):  # three past wins per item, each far better than the region's norm
            index.add(H("past", bytes([k])), vecs, expert, [1_000] * len(TEXTS), 0)
        index.save()


def outside_address() -> str | None:
    """This machine's IPv4 address outside loopback, if it has one (the route to a public address)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        ip = s.getsockname()[0]
        return None if ip.startswith("127.") else ip
    return None


# --- measuring -----------------------------------------------------------------------------------------------------
class StatusProbe:
    """`moenode.testing.statusprobe` in a process of its own, polling every node's /status (see its docstring)."""

    def __init__(self, homes: list[Path], interval: float = 0.1, timeout: float = 10.0):
        self.proc = subprocess.Popen([sys.executable, "-m", "moenode.testing.statusprobe"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     text=True)
        self._send({"homes": [str(h) for h in homes], "interval": interval, "timeout": timeout})

    def _send(self, cmd: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def phase(self, name: str) -> None:
        self._send({"phase": name})

    def report(self, next_phase: str | None = None) -> dict[str, dict[str, dict]]:
        """Every sample since the last report, by node and phase; `next_phase` names the phase of the samples after
        it, set in the same command so that no sample starts under the old name."""
        self._send({"report": True} | ({"phase": next_phase} if next_phase else {}))
        assert self.proc.stdout is not None
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._send({"quit": True})
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()

    def __enter__(self) -> StatusProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process (every thread), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int | None) -> float | None:
    """The process's resident-memory high-water mark (VmHWM) in MiB."""
    with contextlib.suppress(OSError, TypeError, StopIteration):
        row = next(r for r in Path(f"/proc/{pid}/status").read_text().splitlines() if r.startswith("VmHWM:"))
        return round(int(row.split()[1]) / 1024, 1)
    return None


def reset_peak(pid: int | None) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux: `5` to clear_refs), so the next peak is this one's."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except (OSError, TypeError):
        return False


@dataclass
class Meter:
    """CPU and peak memory of one node's process from the start of an attack."""

    pid: int | None
    cpu0: float
    peak_reset: bool

    @classmethod
    def start(cls, nd: NodeProcess) -> Meter:
        return cls(nd.pid, cpu_s(nd.pid), reset_peak(nd.pid))

    def read(self, nd: NodeProcess) -> dict[str, Any]:
        pid = nd.pid if nd.alive() else None
        restarted = pid != self.pid
        return {"restarted": restarted, "cpu_s": round(cpu_s(pid) - (0.0 if restarted else self.cpu0), 2),
                "peak_rss_mb": peak_rss_mb(pid), "peak_since_attack": self.peak_reset or restarted}


@dataclass(frozen=True)
class Attack:
    name: str
    kind: str  # one of KINDS
    what: str  # one line for --list and the report
    run: Callable[[Arena], dict[str, Any]]
    needs: str = ""  # "outside_ip", "primed": what `prepare` must have arranged


def measure(arena: Arena, attack: Attack, probe: StatusProbe, *, settle_s: float = 120.0,
            after_s: float = 2.0) -> dict[str, Any]:
    """Run one attack against the arena and report what it cost each node (see the module docstring)."""
    meters = {nd.name: Meter.start(nd) for nd in arena.nodes}
    probe.report(next_phase="during")  # forget what came before
    t0 = time.monotonic()
    try:
        seen, error = attack.run(arena), None
    except Exception as e:  # the attack's own failure is a result too; the nodes are still measured
        log.error("attack %s failed:\n%s", attack.name, traceback.format_exc())
        seen, error = {}, f"{type(e).__name__}: {e}"[:300]
    attack_s = time.monotonic() - t0
    paused = set(seen.get("paused", ()))  # nodes the attack froze on purpose: their latency is its doing
    nodes = {nd.name: meters[nd.name].read(nd) | {"alive": nd.alive(), "paused": nd.name in paused}
             for nd in arena.nodes}
    probe.phase("settle")
    died = [nd for nd in arena.nodes if not nd.alive()]
    if died:  # a finding: bring them back so the next attack meets the whole testnet
        log.error("attack %s left %s dead", attack.name, [nd.name for nd in died])
        arena.restart(*died)
    t1 = time.monotonic()
    views = wait_ledgers_equal(arena.tn, settle_s)
    settle = time.monotonic() - t1
    probe.phase("after")
    time.sleep(after_s)
    latency = probe.report()
    for name, row in nodes.items():
        for phase in ("during", "after"):
            row[f"status_{phase}"] = latency.get(name, {}).get(phase, {})
    digests = {d for _, d in views.values()}
    return {
        "attack": attack.name, "kind": attack.kind, "what": attack.what, "attack_s": round(attack_s, 1),
        "error": error, "nodes": nodes, "all_alive": not died,
        "ledgers_equal": len(views) == len(arena.nodes) and len(digests) == 1 and None not in digests,
        "supply_conserved": all(s == arena.supply for s, _ in views.values()),
        "settle_s": round(settle, 1), "attacker": seen,
    }


def done_when(result: dict[str, Any], bound_s: float = 1.0) -> list[str]:
    """What keeps a result from the issue's "done": every node alive, /status answering within `bound_s` after the
    attack, the ledger digests equal and the supply conserved. Empty when it holds."""
    out = [] if result["error"] is None else [f"the attack itself failed: {result['error']}"]
    for name, row in result["nodes"].items():
        after = row["status_after"]
        if not row["alive"]:
            out.append(f"{name} died")
        if not after.get("answered") or after.get("failed"):
            out.append(f"{name}: /status failed after the attack ({after})")
        elif after["max_ms"] > bound_s * 1000:
            out.append(f"{name}: /status took {after['max_ms']} ms after the attack")
    if not result["ledgers_equal"]:
        out.append("the ledgers differ")
    if not result["supply_conserved"]:
        out.append("the supply changed")
    return out


# --- helpers of the attacks ----------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def moenode_host(arena: Arena, seed: bytes, nodes: list[NodeProcess] | None = None, **net: Any):
    """moenode's own host, with `seed` and the testnet's network id, its topic caps lifted, connected to `nodes`
    (all by default): an outsider that speaks every protocol and means harm."""
    config = NetConfig(seed=seed, net_id=arena.net_id, gossip=GossipConfig(topic_caps=dict(ATTACKER_CAPS)), **net)
    async with open_host(config) as host:
        for nd in arena.nodes if nodes is None else nodes:
            await host.connect(arena.addr(nd))
        yield host


async def wait_topic_peers(host: Any, kind: str, n: int, timeout: float = 20.0) -> None:
    """Until `n` peers of `host` are known to subscribe to topic `kind`."""
    with trio.fail_after(timeout):
        while len(host.gossip.topic_peers(kind)) < n:
            await trio.sleep(0.05)


async def wait_mesh(host: Any, kind: str, n: int, timeout: float = 20.0) -> None:
    """Until `n` peers are in `host`'s mesh of topic `kind` (what it publishes goes to each of them)."""
    with trio.fail_after(timeout):
        while len(host.gossip.mesh_peers(kind)) < n:
            await trio.sleep(0.05)


def log_rows(nd: NodeProcess) -> int:
    """Certified orders in the node's ledger log, read from its store without disturbing the daemon."""
    db = sqlite3.connect(f"file:{nd.home / 'ledger.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM log WHERE kind = 'order'").fetchone()[0]
    finally:
        db.close()


def moenode_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moenode", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ | {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})


def failed_start(tn: Testnet, nd: NodeProcess, timeout: float = 60.0) -> dict[str, Any]:
    """Start a node that should refuse to: its exit code and what it printed (console.log's new lines)."""
    console = nd.home / "console.log"
    offset = console.stat().st_size if console.exists() else 0
    tn.start_node(nd, wait=False)
    assert nd.proc is not None
    try:
        code = nd.proc.wait(timeout)
    except subprocess.TimeoutExpired:  # it started after all: that is the finding
        tn.kill(nd)
        code = None
    with console.open("rb") as f:
        f.seek(offset)
        lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    return {"exit_code": code, "lines": len(lines), "said": lines[-1] if lines else ""}


def fund(arena: Arena, account: bytes, amount: int) -> None:
    """A transfer from the faucet, applied on every node before this returns."""
    arena.faucet.control(60).transfer(account.hex(), amount)
    wait_ledgers_equal(arena.tn, 60)


# --- the attacks ---------------------------------------------------------------------------------------------------
def pubsub_frames(arena: Arena) -> dict[str, Any]:
    """The 3-byte pubsub frame `02 0a ff` and py-libp2p's other fatal frames, from an outsider, to every node."""
    before = arena.rejections()

    async def attack() -> int:
        sent = 0
        for nd in arena.nodes:
            mine = arena.rejections([nd])
            async with attacker_of(arena.addr(nd)) as (evil, pid):
                sent += (n := await send_malformed_frames(evil, pid, topic_name(arena.net_id, "adverts")))
                # stay connected until the node has judged every stream (leaving would reset the last ones)
                await trio.to_thread.run_sync(arena.wait, lambda: sum((arena.rejections([nd]) - mine).values()) >= n,
                                              20)
        return sent

    sent = trio.run(attack)
    return {"frames_sent": sent, "refused": dict(arena.rejections() - before)}


def future_orders(arena: Arena) -> dict[str, Any]:
    """Forged certified orders of the next two epochs (junk votes from every authority), offered by gossip twice
    to every node and, unless quick, by sync pages five times over to a node that restarts from an empty ledger
    with the attacker as its only bootstrap peer. They used to be logged on every offer (tens of thousands of junk
    rows per node, a restart 15 times slower)."""
    forger = Ed25519Signer(H("key", b"attacks/forger"))
    stakers = [a.pubkey for a in arena.genesis.accounts if a.stake > 0]
    epoch, count = arena.epoch(), 100 if arena.quick else 300
    forged = [certify(seal(Transfer(forger.public_key, i, epoch + 1 + i % 2, arena.account(arena.victim), 1),
                           forger, arena.net_id), {pk: bytes(64) for pk in stakers}).encode() for i in range(count)]
    rows = {nd.name: log_rows(nd) for nd in arena.nodes}
    before = arena.rejections()
    copies, by_sync = 5, not arena.quick

    async def serve(peer: bytes, query: bytes, cursor: bytes, limit: int) -> tuple[list[bytes], bytes]:
        at = int.from_bytes(cursor, "big") if cursor else 0  # an endless-looking log: the same orders again
        page = [canonical(["order", forged[(at + k) % count]]) for k in range(min(limit, copies * count - at))] \
            if query == b"ledger" else []
        return page, ((at + len(page)).to_bytes(8, "big") if page else b"")

    async def attack() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with moenode_host(arena, forger.seed) as evil:
            evil.set_page_handler("sync", serve, max_limit=PAGE_LIMIT)
            await evil.gossip.subscribe("orders", lambda origin, data: trio.sleep(0))
            await wait_mesh(evil, "orders", len(arena.nodes))
            for _ in range(2):
                for data in forged:
                    await evil.gossip.publish("orders", data)
                await trio.sleep(1)
            out["gossiped"] = 2 * count
            if by_sync:
                out["sync"] = await trio.to_thread.run_sync(restart_from, arena, arena.victim, evil.addrs()[0],
                                                            copies * count)
        return out

    seen = trio.run(attack)
    arena.wait(lambda: (arena.rejections() - before)["bad_signature"] >= 2 * count * len(arena.nodes), 20)
    seen["refused"] = dict(arena.rejections() - before)
    seen["log_rows_added"] = {nd.name: log_rows(nd) - rows[nd.name] for nd in arena.nodes
                              if not (by_sync and nd is arena.victim)}
    return seen


def restart_from(arena: Arena, nd: NodeProcess, bootstrap: str, entries: int) -> dict[str, Any]:
    """Stop `nd`, set its ledger aside (`moenode resync`), and start it with `bootstrap` as its only peer, so that
    its first walk asks that peer; return its sync state once it has fetched `entries` (or given up)."""
    arena.tn.stop_node(nd)
    r = moenode_cli("resync", "--home", str(nd.home), "--force", "--json")
    nd.proc = spawn_node(nd.home, arena.tn.genesis_path, [bootstrap])
    nd.pid = nd.proc.pid
    arena.tn.wait_up(nd)
    arena.wait(lambda: arena.status(nd)["sync"].get("fetched", 0) >= entries, 60)
    sync = arena.status(nd)["sync"]
    rows = log_rows(nd)
    arena.tn.stop_node(nd)  # back into the testnet the usual way (bootstrapping from the honest nodes)
    arena.restart(nd)
    return {"resync_exit": r.returncode, "fetched": sync.get("fetched"), "rejected": sync.get("rejected"),
            "applied": sync.get("applied"), "log_rows_after_walk": rows}


def dense_envelopes(arena: Arena) -> dict[str, Any]:
    """Container-dense msgpack (about one empty array or map per byte) of 4 and 12 MiB on the shard protocol and
    the order RPC, and on gossip as large as the topic and frame caps let through: it used to cost 145 bytes of
    memory per wire byte and freeze a node for 40 s."""
    victim = arena.victim
    shapes = ("arrays",) if arena.quick else SHAPES
    before = arena.rejections([victim])

    async def attack() -> dict[str, Any]:
        out: dict[str, Any] = {"shard": 0, "order_rpc": [], "gossip": 0}
        async with moenode_host(arena, H("key", b"attacks/dense"), [victim]) as evil:
            to = arena.account(victim)
            for size in (4 * MiB, 12 * MiB):
                for shape in shapes:
                    await evil.send(to, dense_envelope(size, shape))
                    out["shard"] += 1
                try:  # the order RPC takes at most 4 MiB: the first just fits, the second is over
                    await evil.request(to, "order", dense(size - 4096, "arrays"), timeout=30)
                    out["order_rpc"].append("answered")
                except Exception as e:  # noqa: BLE001 - refused, or the stream reset under the write
                    out["order_rpc"].append(f"{type(e).__name__}: {e}"[:80])
            for kind in ("orders", "certs"):
                await evil.gossip.subscribe(kind, lambda origin, data: trio.sleep(0))
                await wait_mesh(evil, kind, 1)
            # as large as the daemon's topic caps let through (1.2 MB orders, 768 KiB certificates), then a
            # 4 MiB one, over the 2 MiB pubsub frame cap
            for kind, size in (("orders", 1_200_000), ("certs", 780_000), ("orders", 4 * MiB)):
                await evil.gossip.publish(kind, dense(size, "arrays"))
                out["gossip"] += 1
            await trio.sleep(1)
        return out

    seen = trio.run(attack)
    arena.wait(lambda: sum((arena.rejections([victim]) - before).values()) >= seen["shard"] + 2, 20)
    seen["refused"] = dict(arena.rejections([victim]) - before)
    return seen


def slow_loris(arena: Arena) -> dict[str, Any]:
    """2,000 streams opened and left silent, from 8 outside keys, on the envelope protocol: they used to be held
    for good. Held for `hold_s`, then the attackers leave."""
    victim, proto = arena.victim, envelope_protocol(arena.net_id)
    keys, per_key = 8, 250
    before = arena.rejections([victim])
    idle0 = arena.metric(victim, "moenode_net_idle_streams_closed_total")

    async def one(opened: list[int]) -> None:
        async with attacker_of(arena.addr(victim)) as (evil, pid):
            for _ in range(per_key):
                if await send_raw(evil, pid, proto, b"", close=False) is not None:
                    opened[0] += 1
            await trio.sleep(arena.hold_s)

    async def attack() -> int:
        opened = [0]
        async with trio.open_nursery() as n:
            for _ in range(keys):
                n.start_soon(one, opened)
        return opened[0]

    opened = trio.run(attack)
    refused = arena.rejections([victim]) - before
    return {"streams": keys * per_key, "opened_by_attacker": opened, "refused": dict(refused),
            "held_by_victim": keys * per_key - refused["too_many_streams"], "held_s": arena.hold_s,
            "closed_idle": arena.metric(victim, "moenode_net_idle_streams_closed_total") - idle0}


def partial_messages(arena: Arena) -> dict[str, Any]:
    """Envelopes that declare 15 MiB, send 1 MiB and go quiet: 8 from each of 4 outside keys (480 MiB declared).
    Eight of them used to hold 132 MB for over a minute. Held for `hold_s`, then the attackers leave."""
    victim, proto = arena.victim, envelope_protocol(arena.net_id)
    keys, per_key = (2, 8) if arena.quick else (4, 8)
    before = arena.rejections([victim])
    waits0 = arena.metric(victim, "moenode_net_partial_message_waits_total")
    rss0 = peak_rss_mb(victim.pid)
    head = envelope_head(15 * MiB) + encode_frame(b"p" * MiB)

    async def one() -> None:
        async with attacker_of(arena.addr(victim)) as (evil, pid):
            for _ in range(per_key):  # a message waiting for budget is not read: its write stalls on the window
                with trio.move_on_after(2):
                    await send_raw(evil, pid, proto, head, close=False)
            await trio.sleep(arena.hold_s)

    async def attack() -> None:
        async with trio.open_nursery() as n:
            for _ in range(keys):
                n.start_soon(one)

    trio.run(attack)
    return {"messages": keys * per_key, "declared_mib": keys * per_key * 15, "sent_mib": keys * per_key,
            "held_s": arena.hold_s, "rss_before_mb": rss0,
            "waited_for_budget": arena.metric(victim, "moenode_net_partial_message_waits_total") - waits0,
            "refused": dict(arena.rejections([victim]) - before)}


def conns_per_ip(arena: Arena) -> dict[str, Any]:
    """20 outside keys connecting from one address outside loopback (loopback is exempt from the cap)."""
    if not arena.outside_ip:
        return {"skipped": "no listen address outside loopback (see prepare)"}
    victim, tries = arena.victim, 20
    addr = arena.addr(victim, arena.outside_ip)
    before = arena.rejections([victim])

    async def attack() -> int:
        connected = 0
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(tries):
                try:
                    await stack.enter_async_context(attacker_of(addr))
                    connected += 1
                except Exception:  # closed before the handshake: the cap
                    pass
            await trio.sleep(1)
        return connected

    connected = trio.run(attack)
    return {"tried": tries, "connected": connected, "refused": dict(arena.rejections([victim]) - before)}


def control_api(arena: Arena) -> dict[str, Any]:
    """Requests that must move nothing: no token, a browser's cross-site POST (text/plain, a foreign Host, an
    Origin), a DNS-rebound Host, and another local user (uid nobody) who cannot read the token."""
    victim = arena.victim
    port = int(victim.control_url.rsplit(":", 1)[1])
    token = (victim.home / "control.token").read_text().strip()
    body = json.dumps({"to": arena.faucet.account, "amount": 1234}).encode()
    host = f"127.0.0.1:{port}"
    st = arena.status(victim)
    tries = {
        "no token": ("POST", {"Host": host, "Content-Type": "application/json"}),
        "wrong token": ("POST", {"Host": host, "Content-Type": "application/json",
                                 "Authorization": "Bearer " + "0" * 64}),
        "cross-site text/plain": ("POST", {"Host": f"evil.example:{port}", "Origin": "http://evil.example",
                                           "Content-Type": "text/plain"}),
        "DNS rebinding": ("POST", {"Host": f"evil.example:{port}", "Content-Type": "application/json",
                                   "Authorization": f"Bearer {token}"}),
        "Origin with the token": ("POST", {"Host": host, "Origin": "http://evil.example",
                                           "Content-Type": "application/json", "Authorization": f"Bearer {token}"}),
        "text/plain with the token": ("POST", {"Host": host, "Content-Type": "text/plain",
                                               "Authorization": f"Bearer {token}"}),
        "metrics without a token": ("GET", {"Host": host}),
    }
    out: dict[str, Any] = {}
    for what, (method, headers) in tries.items():
        path = "/metrics" if method == "GET" else "/transfer"
        out[what] = raw_http(port, method, path, headers, body if method == "POST" else b"")[0]
    if os.geteuid() == 0:
        def as_other_user() -> dict[str, Any]:
            got: dict[str, Any] = {}
            for name in ("control.token", "run.json"):
                try:
                    (victim.home / name).read_text()
                    got[name] = "read"
                except PermissionError:
                    got[name] = "permission denied"
            got["POST /transfer"] = raw_http(port, "POST", "/transfer",
                                             {"Host": host, "Content-Type": "application/json"}, body)[0]
            return got
        out["uid nobody"] = as_nobody(as_other_user)
    else:
        out["uid nobody"] = "skipped: switching users needs root"
    after = arena.status(victim)
    out["moved"] = {"balance": after["balance"] - st["balance"], "sequence": after["sequence"] - st["sequence"]}
    return out


def control_flood(arena: Arena) -> dict[str, Any]:
    """A local user opens 1,100 connections to the control API and sends nothing, while the node runs under the
    usual limit of 1,024 file descriptors (set here with prlimit). They used to use up the descriptors: /status
    timed out and no peer could connect to the node. Meanwhile an outside key tries to connect over libp2p."""
    victim = arena.victim
    port = int(victim.control_url.rsplit(":", 1)[1])
    resource.prlimit(victim.pid, resource.RLIMIT_NOFILE, (1024, 1024))  # type: ignore[arg-type]
    evicted0 = arena.metric(victim, "moenode_control_connections_evicted_total")
    held: list[socket.socket] = []
    try:
        for _ in range(1_100):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(s)
        time.sleep(1)
        t0 = time.monotonic()
        try:
            answer: Any = arena.status(victim, 5)["peers"]
        except ControlError as e:
            answer = str(e)[:100]
        status_s = time.monotonic() - t0

        async def outsider() -> str:
            try:
                with trio.fail_after(15):
                    async with attacker_of(arena.addr(victim)):
                        return "connected"
            except Exception as e:  # noqa: BLE001 - the finding, whatever its form
                return type(e).__name__

        libp2p = trio.run(outsider)
        descriptors = len(os.listdir(f"/proc/{victim.pid}/fd"))
    finally:
        for s in held:
            s.close()
    return {"connections": len(held), "status_s": round(status_s, 3), "status_peers": answer,
            "outsider_over_libp2p": libp2p, "descriptors_in_use": descriptors,
            "evicted": arena.metric(victim, "moenode_control_connections_evicted_total") - evicted0}


def escrow_transfer(arena: Arena) -> dict[str, Any]:
    """A Transfer into an escrow account (whose balance no key could ever spend), signed by a funded outsider and
    sent to every authority over the order RPC, and asked of the control API. It used to get votes, and the funds
    were burnt. The same outsider's ordinary transfer at the same sequence, asked afterwards, is the baseline."""
    payer = Ed25519Signer(H("key", b"attacks/escrow-payer"))
    fund(arena, payer.public_key, 1_000)
    escrow = escrow_account(H("shard", b"attacks/escrow"))
    out: dict[str, Any] = {}
    try:
        arena.faucet.control(30).transfer(escrow.hex(), 10)
        out["control_api"] = "accepted"
    except ControlError as e:
        out["control_api"] = str(e)[:120]

    async def ask_all(to: bytes) -> dict[str, int]:
        req = OrderRequest(seal_unchecked(Transfer(payer.public_key, 0, arena.epoch(), to, 500), payer,
                                          arena.net_id), ()).encode()
        answers: Counter[str] = Counter()
        async with moenode_host(arena, payer.seed) as host:
            for nd in arena.nodes:
                answer = OrderAnswer.decode(await host.request(arena.account(nd), "order", req, timeout=30))
                answers["vote" if answer.vote is not None else answer.refusal or "?"] += 1
        return dict(answers)

    out["to_escrow"] = trio.run(ask_all, escrow)
    out["baseline_to_an_account"] = trio.run(ask_all, arena.account(arena.faucet))
    return out


def proxy_answers(arena: Arena) -> dict[str, Any]:
    """An outside expert that the shard members' winner indexes favour answers their proxy requests with
    `{"x": 1}`, `{"submission": null}` and bytes that are not msgpack. Those raised KeyError and TypeError in the
    sponsor, and the liar was not counted. A batch is submitted through node0."""
    if not arena.primed:
        return {"skipped": "the winner indexes were not primed (see prepare)"}
    lies = [canonical({"x": 1}), canonical({"submission": None}), b"\xc1 not msgpack"]
    asked: list[bytes] = []
    before = arena.rejections()

    async def lie(peer: bytes, req: bytes) -> bytes:
        asked.append(peer)
        return lies[(len(asked) - 1) % len(lies)]

    async def attack() -> dict[str, Any]:
        signer = Ed25519Signer(EXPERT_SEED)
        async with moenode_host(arena, EXPERT_SEED) as evil:
            evil.set_request_handler("proxy", lie, max_request=ProxyRequest.MAX_BYTES)
            await wait_topic_peers(evil, "adverts", len(arena.nodes))
            advert = Advert(model_id=H("model", b"attacks"), model_name="expert", price=1_000,
                            addrs=tuple(evil.addrs()[:8]), time_ms=int(time.time() * 1000))
            want = len(arena.nodes)  # every node then knows the others and the expert
            while not all(arena.status(nd)["adverts"] >= want for nd in arena.nodes):
                await evil.gossip.publish("adverts", seal(advert, signer, arena.net_id).encode())
                await trio.sleep(0.5)
            try:
                res = await trio.to_thread.run_sync(lambda: arena.faucet.control(300).submit(TEXTS, 100))
                return {"round": "certified", "winner_is_liar": res["producer"] == signer.public_key.hex()}
            except ControlError as e:
                return {"round": str(e)[:120]}

    seen = trio.run(attack)
    seen["proxy_requests"] = len(asked)
    seen["refused"] = dict(arena.rejections() - before)
    return seen


def authorities_down(arena: Arena) -> dict[str, Any]:
    """Two of four authorities stop answering while a transfer is out (SIGSTOP), then come back; unless quick, two
    are also killed before a transfer and started again. The transfer used to lock the account's sequence for good."""
    payer, friend = arena.nodes[1], arena.nodes[0]
    down = arena.nodes[2:4]
    ctl = payer.control(120)
    out: dict[str, Any] = {"paused": [nd.name for nd in down]}
    for nd in down:
        os.kill(nd.pid, signal.SIGSTOP)  # type: ignore[arg-type]
    try:
        t0 = time.monotonic()
        try:
            ctl.transfer(friend.account, 3)
            out["hung"] = "certified"
        except ControlError as e:
            out["hung"] = str(e)[:160]
        out["hung_answer_s"] = round(time.monotonic() - t0, 1)
        out["hung_orders_open"] = arena.status(payer)["orders_open"]
    finally:
        for nd in down:
            os.kill(nd.pid, signal.SIGCONT)  # type: ignore[arg-type]
    t0 = time.monotonic()
    arena.wait(lambda: arena.status(payer)["orders_open"] == 0, 90)
    out["finished_after_s"] = round(time.monotonic() - t0, 1)
    if not arena.quick:
        for nd in down:
            arena.tn.kill(nd)
        arena.wait(lambda: arena.status(payer)["peers"] <= len(arena.nodes) - 1 - len(down), 30)
        try:
            ctl.transfer(friend.account, 4)
            out["killed"] = "certified"
        except ControlError as e:
            out["killed"] = str(e)[:160]
        arena.restart(*down)
    seq = arena.status(payer)["sequence"]
    ctl.transfer(friend.account, 5)
    out["next_transfer"] = "certified" if arena.status(payer)["sequence"] == seq + 1 else "not applied"
    return out


def payer_kill(arena: Arena) -> dict[str, Any]:
    """kill -9 of a payer 0-40 ms after its own transfer request went out (before it signed, while votes were out,
    with the certificate in hand but not applied or gossiped), then a restart. Each time its ledger must end equal
    to the others', and its next transfer must certify."""
    payer, friend = arena.nodes[2], arena.nodes[3]
    runs = []
    for delay_ms in (10,) if arena.quick else (0, 10, 25, 40):
        ctl = payer.control(30)
        seq = arena.status(payer)["sequence"]
        sender = _background(lambda: ctl.transfer(friend.account, 7))
        time.sleep(delay_ms / 1000)
        arena.tn.kill(payer)
        sender.join(30)
        arena.restart(payer)
        left_open = arena.status(payer)["orders_open"]
        arena.wait(lambda: arena.status(payer)["orders_open"] == 0, 120)
        wait_ledgers_equal(arena.tn, 120)
        runs.append({"delay_ms": delay_ms, "left_open": left_open,
                     "sequence": f"{seq} -> {arena.status(payer)['sequence']}"})
    before = arena.status(payer)["sequence"]
    payer.control(60).transfer(friend.account, 1)
    return {"kills": runs, "next_transfer": "certified" if arena.status(payer)["sequence"] == before + 1 else "not"}


def _background(fn: Callable[[], object]) -> Any:
    """Run `fn` on a daemon thread, ignoring a ControlError (the connection dies with the node)."""
    def run() -> None:
        with contextlib.suppress(ControlError):
            fn()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def lost_ledger(arena: Arena) -> dict[str, Any]:
    """The operator empties, then deletes, a node's ledger.sqlite (its vote locks) and starts it: it must refuse in
    one line naming `moenode resync`, and used to start from genesis with every lock gone. Then the way back:
    `moenode resync` and a start (the node catches up and abstains for two epochs), or, when quick, the backup
    put back."""
    nd = arena.nodes[3]
    ledger = nd.home / "ledger.sqlite"
    keep = nd.home.parent / f"{nd.name}-ledger-backup"
    out: dict[str, Any] = {}
    arena.tn.stop_node(nd)
    keep.mkdir(exist_ok=True)
    for f in nd.home.glob("ledger.sqlite*"):
        shutil.move(str(f), keep / f.name)
    try:
        ledger.write_bytes(b"")
        out["0-byte"] = failed_start(arena.tn, nd)
        ledger.unlink()
        out["deleted"] = failed_start(arena.tn, nd)
        if not arena.quick:
            r = moenode_cli("resync", "--home", str(nd.home), "--json")
            out["recovery"] = json.loads(r.stdout) if r.returncode == 0 else r.stderr.strip()[-200:]
    finally:
        if not ledger.exists() or not ledger.stat().st_size:  # quick, or the attack failed: the backup goes back
            for f in nd.home.glob("ledger.sqlite*"):
                f.unlink()
            for f in keep.iterdir():
                shutil.move(str(f), nd.home / f.name)
            out.setdefault("recovery", "backup restored")
        shutil.rmtree(keep)
    t0 = time.monotonic()
    arena.restart(nd)
    wait_ledgers_equal(arena.tn, 120)
    out["caught_up_s"] = round(time.monotonic() - t0, 1)
    return out


def corrupt_key(arena: Arena) -> dict[str, Any]:
    """The operator damages a node's key file, then its control token: each start must stop in one line naming
    the file (it used to print an 88-line traceback), and the node must come back once the file is restored."""
    nd = arena.nodes[3]
    out: dict[str, Any] = {}
    arena.tn.stop_node(nd)
    for name, junk in (("key", b"ed25519:not-a-key\n"), ("control.token", b"\xff\xfe\x00")):
        path = nd.home / name
        saved = path.read_bytes()
        path.write_bytes(junk)
        try:
            out[name] = failed_start(arena.tn, nd)
        finally:
            path.write_bytes(saved)
    arena.restart(nd)
    return out


def double_start(arena: Arena) -> dict[str, Any]:
    """The operator starts a second `moenode run` on the home of a node that is running (a service and a shell,
    say). It used to start: two processes sharing one ledger and outbox, each with its own view, one peer id twice
    on the network. It must stop in one line, and leave the running node as it was."""
    nd = arena.nodes[3]
    run_before = (nd.home / "run.json").read_text()
    console = nd.home / "console.log"
    offset = console.stat().st_size
    second = spawn_node(nd.home, None, [])
    try:
        code: int | None = second.wait(30)
    except subprocess.TimeoutExpired:  # it runs: that is the finding
        os.killpg(second.pid, signal.SIGKILL)
        second.wait(10)
        code = None
    with console.open("rb") as f:
        f.seek(offset)
        lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    return {"exit_code": code, "lines": len(lines), "said": lines[-1] if lines else "",
            "first_untouched": (nd.home / "run.json").read_text() == run_before and nd.alive()}


def long_sync(arena: Arena) -> dict[str, Any]:
    """A node is down while its peers apply a history of `long_log` entries (certified transfers among four funded
    accounts, voted by every authority: written into the peers' stores while the testnet is stopped, then
    replayed as each starts). It restarts, is killed (-9) when a third of the walk is done, restarts again, and
    must resume its walk and end with its peers' ledger. A walk of over 7,000 entries used to fail for good."""
    nd, n = arena.nodes[3], arena.long_log
    users = [H("key", f"attacks/user/{i}".encode()) for i in range(4)]
    for u in users:
        fund(arena, Ed25519Signer(u).public_key, 20)
    arena.tn.stop()
    authorities = [load_key(x.home / "key") for x in arena.nodes]
    t0 = time.process_time()
    history = certified_transfers(arena.genesis, authorities, users, n)
    built_s = time.process_time() - t0
    for peer in arena.nodes:
        if peer is not nd:
            write_log(peer.home / "ledger.sqlite", arena.genesis, history)
    del history
    t0 = time.monotonic()
    arena.restart(*[x for x in arena.nodes if x is not nd])
    peers_up_s = time.monotonic() - t0
    t0 = time.monotonic()
    arena.tn.start_node(nd, timeout=180)
    arena.wait(lambda: arena.status(nd)["sync"].get("fetched", 0) >= n // 3, 120, step=0.05)
    first = dict(arena.status(nd)["sync"])
    arena.tn.kill(nd)
    arena.restart(nd)
    arena.wait(lambda: arena.status(nd)["sync"].get("state") == "synced", 240)
    second = dict(arena.status(nd)["sync"])
    walk_s = time.monotonic() - t0
    keys = ("fetched", "applied", "duplicates", "rejected", "pages", "backoffs")
    return {"entries": n, "build_cpu_s": round(built_s, 1), "peers_restart_s": round(peers_up_s, 1),
            "walk_s_with_kill": round(walk_s, 1), "before_kill": {k: first.get(k) for k in keys},
            "after_restart": {k: second.get(k) for k in keys} | {"state": second.get("state")},
            "resumed": (second.get("fetched") or n) < n}


def idle(arena: Arena) -> dict[str, Any]:
    """Nothing, for a few seconds: the baseline of a run (memory, CPU and /status latency of quiet nodes)."""
    time.sleep(3 if arena.quick else 6)
    return {}


IDLE = Attack("idle", "baseline", "no attack: the nodes at rest, for comparison", idle)
ATTACKS = [
    Attack("pubsub-frames", "kill", "the 3-byte pubsub frame 02 0a ff and other fatal library-protocol frames",
           pubsub_frames),
    Attack("future-orders", "freeze", "forged future-epoch certified orders by gossip and by sync", future_orders),
    Attack("dense-envelopes", "freeze", "container-dense 4 and 12 MiB inputs: shard protocol, order RPC, gossip",
           dense_envelopes),
    Attack("slow-loris", "freeze", "2,000 silent streams from 8 outside keys", slow_loris),
    Attack("partial-messages", "freeze", "15 MiB envelopes sent 1 MiB in, then silence", partial_messages),
    Attack("conns-per-ip", "freeze", "20 connections from one address", conns_per_ip, needs="outside_ip"),
    Attack("control-api", "rob", "control API: no token, browser-style, another uid", control_api),
    Attack("control-flood", "freeze", "1,100 silent connections to the control API of a node with 1,024 fds",
           control_flood),
    Attack("escrow-transfer", "rob", "a transfer into an escrow account", escrow_transfer),
    Attack("proxy-answers", "rob", "malformed proxy answers from a favoured expert", proxy_answers, needs="primed"),
    Attack("authorities-down", "freeze", "2 of 4 authorities down during a transfer, then back", authorities_down),
    Attack("payer-kill", "fork", "kill -9 of a payer inside its own transfer", payer_kill),
    Attack("lost-ledger", "fork", "a 0-byte, then deleted, ledger.sqlite", lost_ledger),
    Attack("corrupt-key", "operator", "a corrupt key file and control token", corrupt_key),
    Attack("double-start", "operator", "a second `moenode run` on a running node's home", double_start),
    Attack("long-sync", "fork", "catch-up of a long log after a restart, killed midway", long_sync),
]
BY_NAME = {a.name: a for a in ATTACKS}
