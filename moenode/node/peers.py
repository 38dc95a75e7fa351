"""The peers a node has learnt, kept in HOME/peers.json so that a restarted node finds the network without flags.

A connected peer's addresses come from its signed Advert (each ends in /p2p/<peer id>). The daemon calls
`remember` every few seconds with the addresses of the peers it is connected to; the file keeps the newest
address of at most `MAX_PEERS` peers, newest first, and is rewritten (atomically) only when that changes. At start
`bootstrap_with_peers` adds them to the configured bootstrap addresses, which `moenode run --bootstrap` saves in
config.toml. Addresses of peers that are gone cost only a backed-off redial (moenode.net.host).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from moenode.node.config import atomic_write

PEERS_FILE = "peers.json"
MAX_PEERS = 32


def _peer_of(addr: str) -> str:
    return addr.rsplit("/p2p/", 1)[-1]


def load_peers(home: Path) -> list[str]:
    """The remembered addresses, newest first; a missing or damaged file is an empty list (it is only a hint)."""
    try:
        doc = json.loads((Path(home) / PEERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    addrs = doc.get("peers") if isinstance(doc, dict) else None
    if not isinstance(addrs, list):
        return []
    return [a for a in addrs if isinstance(a, str) and a.startswith("/") and "/p2p/" in a][:MAX_PEERS]


def merged(first: Iterable[str], then: Iterable[str], limit: int = MAX_PEERS) -> list[str]:
    """One address per peer id, `first` winning over `then`, at most `limit`."""
    out: dict[str, str] = {}
    for addr in [*first, *then]:
        out.setdefault(_peer_of(addr), addr)
    return list(out.values())[:limit]


def remember(home: Path, addrs: Sequence[str]) -> bool:
    """Put `addrs` (of peers connected now) at the front of HOME/peers.json; True if the file changed."""
    if not addrs:
        return False
    old = load_peers(home)
    new = merged(addrs, old)
    if new == old:
        return False
    atomic_write(Path(home) / PEERS_FILE, json.dumps({"peers": new}, indent=1).encode())
    return True


def bootstrap_with_peers(home: Path, bootstrap: Sequence[str]) -> tuple[str, ...]:
    """The configured bootstrap addresses, then the remembered ones (every address is tried; see net.host)."""
    return tuple(dict.fromkeys([*bootstrap, *load_peers(home)]))
