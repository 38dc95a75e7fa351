"""A running testnet's ledgers, read from the outside: supply and state digest per node, and waiting until they agree.

Theory of operation: a node's view is (total supply, ledger state digest). `ledger_view` takes it from the node's
/status when the daemon reports both; otherwise `ledger_from_home` reads the node's store on disk without disturbing
it: `snapshot_ledger` takes a consistent copy with sqlite's backup API (safe while the daemon writes, WAL mode) and
`replay_ledger` replays the copy the way the daemon does on start-up, re-checking every certificate.
`ledger_views` snapshots every node first (one near-instant cut across the network) and replays afterwards;
`wait_ledgers_equal` polls until every live node holds the same ledger (certificates and orders travel by gossip).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moenode.client import ControlError
from moenode.core.genesis import parse_genesis

if TYPE_CHECKING:
    from moenode.testing.testnet import NodeProcess, Testnet

log = logging.getLogger("moenode.testnet")


def ledger_view(status: dict[str, Any] | None, home: Path | None = None) -> tuple[Any, Any]:
    """(supply, ledger digest hex) of a node: from its /status if it reports them, else from its store on disk."""
    if status:
        ledger = status.get("ledger")
        if not isinstance(ledger, dict):
            ledger = {}
        supply = status.get("supply", ledger.get("supply"))
        digest = status.get("ledger_digest", ledger.get("digest"))
        if supply is not None and digest is not None:
            return supply, digest
    if home is not None:
        got = ledger_from_home(home)
        if got is not None:
            return got
    return None, None


def ledger_from_home(home: Path) -> tuple[int, str] | None:
    """(total supply, state digest hex) of the ledger a node has on disk, read without disturbing the node.

    Takes a consistent sqlite backup of HOME's ledger store (safe while the daemon writes, WAL mode) and replays it
    the way the daemon does on start-up, which re-checks every certificate. None if there is no ledger yet.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="moenode-ledger-") as d:
        copy = snapshot_ledger(home, Path(d))
        return None if copy is None else replay_ledger(home, copy)


def snapshot_ledger(home: Path, into: Path) -> Path | None:
    """A consistent copy of HOME's ledger store in `into` (the sqlite backup API; milliseconds)."""
    import sqlite3

    from moenode.node.config import load_config

    src = load_config(home).path("ledger")
    if not src.exists():
        return None
    dst = into / f"{home.name}.sqlite"
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=10)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    return dst


def replay_ledger(home: Path, copy: Path) -> tuple[int, str]:
    """Replay a snapshot into a Ledger (every certificate re-checked): (total supply, state digest hex)."""
    from moenode.core.crypto import ed25519_verify
    from moenode.node.config import load_config
    from moenode.store.ledger_db import LedgerDB, rebuild

    g = parse_genesis(load_config(home).path("genesis").read_text(encoding="utf-8"))
    db = LedgerDB(copy, g.network_id)
    try:
        led = rebuild(g, db, ed25519_verify)
    finally:
        db.close()
    return led.total(), led.state_digest().hex()


def ledger_views(tn: Testnet, nodes: Sequence[NodeProcess] | None = None) -> dict[str, tuple[Any, Any]]:
    """{node name: (supply, digest)} for the live nodes (all of them by default).

    From /status when the daemon reports `supply` and `ledger_digest`; otherwise every node's store is snapshotted
    first (one near-instant cut across the nodes) and the snapshots are replayed afterwards.
    """
    import tempfile

    pick = [nd for nd in (nodes or tn.nodes) if nd.alive()]
    out: dict[str, tuple[Any, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="moenode-ledgers-") as d:
        copies: dict[str, Path | None] = {}
        for nd in pick:
            try:
                st = nd.control(10).status()
            except ControlError:
                st = None
            view = ledger_view(st)
            if view[1] is not None:
                out[nd.name] = view
            else:
                copies[nd.name] = snapshot_ledger(nd.home, Path(d))
        for nd in pick:
            if nd.name in copies:
                copy = copies[nd.name]
                out[nd.name] = replay_ledger(nd.home, copy) if copy is not None else (None, None)
    return out


def wait_ledgers_equal(tn: Testnet, timeout: float = 60.0, nodes: Sequence[NodeProcess] | None = None
                       ) -> dict[str, tuple[Any, Any]]:
    """Until every live node holds the same ledger (certificates and orders travel by gossip). Returns the views."""
    deadline = time.monotonic() + timeout
    while True:
        views = ledger_views(tn, nodes)
        digests = {v[1] for v in views.values()}
        if len(digests) == 1 and None not in digests:
            return views
        if time.monotonic() > deadline:
            log.warning("ledgers still differ after %.0fs: %s", timeout,
                        {k: (v[0], str(v[1])[:12]) for k, v in views.items()})
            return views
        time.sleep(0.5)
