"""Catch-up sync: a late joiner fetches the public history a peer has verified, checks it, then follows gossip.

Theory of operation: a node keeps two ordered histories: the ledger store's log (certified orders, checkpoint
certificates, evidence; `moenode.store.ledger_db`) and the certificate archive (shard certificates; `archive.py`).
The paged RPC `sync` serves either by cursor: query `ledger` or `certs`, the cursor is the position as 8 big-endian
bytes, each item is `canonical([kind, data])`, a page holds at most `PAGE_BYTES` of data, its next-cursor is the
position of its last item, and an empty page (with an empty next-cursor) ends the walk. Nothing is taken on trust:
the fetching node runs every entry through the same checks as gossip (`Payments.accept`,
`Authority.accept_checkpoint`, `Node.on_certificate`), so a lying peer can only withhold history, never forge it.
Skipped checkpoints are local decisions (a timeout) and are not served. Entries whose prerequisites are missing (a
Settle before its epoch's table is known, say) are retried once after the walk.

The walk starts once a peer is connected, asks the bootstrap peers first, and moves to the next peer on failure.
After it, the node pulls again every `PULL_EVERY_S` from the same peer, from where the last walk ended (so only
what was appended since crosses the wire): anti-entropy, so that whatever gossip lost (a restart, a partition,
a dropped message) still arrives, and two nodes that heard different things converge.
`state` is what /status shows: idle, syncing, synced (with counts: fetched, applied, duplicates, rejected) or
failed (with the reason).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from moenode.core.codec import canonical, decode
from moenode.core.errors import ProtocolError, SchemaError
from moenode.core.messages import Evidence, decode_certificate

if TYPE_CHECKING:
    from moenode.node.daemon import Node

log = logging.getLogger("moenode.node")

PAGE_LIMIT = 64
PAGE_BYTES = 8 << 20
LEDGER_KINDS = ("order", "checkpoint", "evidence")
WAIT_FOR_PEERS = 10.0
PULL_EVERY_S = 15.0  # anti-entropy: what gossip lost (a restart, a partition, a full queue) arrives within this


class Sync:
    def __init__(self, node: Node):
        self.node = node
        self.state: dict[str, Any] = {"state": "idle", "peer": None, "fetched": 0, "applied": 0, "rejected": 0,
                                      "duplicates": 0}
        self.cursors: dict[tuple[bytes, bytes], bytes] = {}  # (peer, query) -> where the last walk there ended
        self.source: bytes | None = None  # the peer the last walk completed from

    # serving ---------------------------------------------------------------------------------------------------------
    def _rows(self, query: bytes, after: int, limit: int) -> list[tuple[int, str, bytes]]:
        if query == b"certs":
            return [(seq, "cert", data) for seq, _ident, data in self.node.archive.page(after, limit)]
        if query == b"ledger":
            db = self.node.payments.authority.store.db  # type: ignore[attr-defined]  # the ledger store's log
            marks = ",".join("?" * len(LEDGER_KINDS))
            rows = db.execute(f"SELECT seq, kind, data FROM log WHERE seq > ? AND kind IN ({marks}) "
                              "ORDER BY seq LIMIT ?", (after, *LEDGER_KINDS, limit)).fetchall()
            return [(seq, kind, bytes(data)) for seq, kind, data in rows]
        raise SchemaError(f"sync: unknown query {query!r:.20}")

    async def serve_page(self, peer: bytes, query: bytes, cursor: bytes, limit: int) -> tuple[list[bytes], bytes]:
        if cursor and len(cursor) != 8:
            raise SchemaError("sync: the cursor is 8 bytes")
        after = int.from_bytes(cursor, "big") if cursor else 0
        limit = min(limit, PAGE_LIMIT)
        rows = self._rows(query, after, limit)
        items, size, last = [], 0, after
        for seq, kind, data in rows:
            if items and size + len(data) > PAGE_BYTES:
                break
            items.append(canonical([kind, data]))
            size += len(data)
            last = seq
        # the cursor is where this page ended, and a page is only empty at the end of the log: so a walker that
        # keeps the last cursor asks next time for exactly what has been appended since
        return items, (last.to_bytes(8, "big") if items else b"")

    # fetching --------------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """The catch-up walk, then an incremental pull every `PULL_EVERY_S` for as long as the node runs."""
        node = self.node
        with trio.move_on_after(WAIT_FOR_PEERS):
            while not node.net.connected():
                await trio.sleep(0.1)
        if not node.net.connected():
            self.state.update(state="synced", note="no peers: nothing to fetch")
        else:
            await self._walk_any()
        while True:
            await trio.sleep(PULL_EVERY_S)
            await self._walk_any(quiet=True)

    async def _walk_any(self, quiet: bool = False) -> None:
        """Walk from the peer that served last (cheap: from where that walk ended), else bootstrap peers, else any."""
        node = self.node
        peers = node.net.connected()
        boot = node.net.bootstrap_accounts
        order = [p for p in [self.source] if p in peers] + [p for p in boot if p in peers and p != self.source]
        order += [p for p in peers if p not in order]
        for peer in order:
            try:
                await self.walk(peer, quiet)
                return
            except Exception as e:  # an unreachable or misbehaving peer: try the next one
                log.warning("sync from %s failed: %r", peer.hex()[:16], e)
                if not quiet:
                    self.state.update(state="failed", reason=repr(e)[:200])

    async def walk(self, peer: bytes, quiet: bool = False) -> None:
        if not quiet:
            self.state.update(state="syncing", peer=peer.hex())
        applied = self.state["applied"]
        retry: list[tuple[str, bytes]] = []
        for query in (b"ledger", b"certs"):
            cursor = self.cursors.get((peer, query), b"")
            async for items, nxt in self.node.net.iter_pages(peer, "sync", query, cursor=cursor, limit=PAGE_LIMIT):
                for raw in items:
                    self.state["fetched"] += 1
                    kind, data = self._entry(raw)
                    if not await self.apply(peer, kind, data, final=False):
                        retry.append((kind, data))
                cursor = nxt or cursor
            self.cursors[(peer, query)] = cursor
        for kind, data in retry:
            await self.apply(peer, kind, data, final=True)
        self.source = peer
        if not quiet:
            self.state.update(state="synced")
            log.info("synced from %s: %s", peer.hex()[:16], self.state)
        elif self.state["applied"] > applied:
            log.info("pulled %d entries from %s that gossip had not brought", self.state["applied"] - applied,
                     peer.hex()[:16])

    @staticmethod
    def _entry(raw: bytes) -> tuple[str, bytes]:
        e = decode(raw, max_bytes=PAGE_BYTES + 1024)
        if not (isinstance(e, list) and len(e) == 2 and e[0] in LEDGER_KINDS + ("cert",) and isinstance(e[1], bytes)):
            raise SchemaError("sync: expected [kind, data]")
        return e[0], e[1]

    async def apply(self, peer: bytes, kind: str, data: bytes, final: bool) -> bool:
        """Apply one fetched entry; False if it should be retried later (a prerequisite may still come)."""
        node = self.node
        try:
            if kind == "order":
                new = node.payments.accept(data) != "duplicate"
            elif kind == "checkpoint":
                new = node.epochs.accept(data) != "duplicate"
            elif kind == "evidence":
                ev = Evidence.decode(data)
                new = node.payments.authority.add_evidence(ev, node.now_ms())
            else:
                new = await node.on_certificate(decode_certificate(data), peer, b"", publish=False)
        except ProtocolError as e:
            if not final:
                return False
            self.state["rejected"] += 1
            node.reject(peer, e, f"sync/{kind}")
            return True
        self.state["applied" if new else "duplicates"] += 1
        return True
