"""The order outbox: every order this node signed, from before any authority sees it until its certificate is out.

Theory of operation: one table, `outbox`, in the node's ledger sqlite file, beside the ledger store's tables. A row
holds the order envelope and the certificates that go with its first request (`add`, before the first request
leaves), then its certificate (`record`, before the node applies or gossips it), and is closed once the certificate
is out (`close`). Every write is committed when it returns, so it survives a crash or kill -9 of the process.
`add` also survives a power cut: it commits on a connection with `synchronous=FULL` (an fsync), because an order
the authorities voted for and the node forgot would hold its sequence for good. The other writes need no fsync of
their own (WAL mode, `synchronous=NORMAL`): a power cut loses only a suffix of the file's commits, so at worst a
recorded certificate is lost together with everything after it, and the order, still open, is asked for again
(every authority that voted re-votes the same order), or a closed row is published once more. On start the node reads the open rows and finishes each: it asks for the votes of
an order that has none yet (renewing it if its epoch has passed) and publishes and applies a recorded certificate.
So a crash or kill -9 at any point loses no order the node signed, and no certificate it obtained: see
`moenode.core.ledger_client.delivery_steps` for the steps and `moenode.node.payments` for the driver.

Closed rows of the node's own account are kept, the newest `KEEP_CLOSED`, because the node attaches its last
certified orders to its next order's requests (an authority that missed their gossip would see a sequence gap).

Every method may be called from a worker thread; one lock serialises them. The store holds bytes only: the node
decodes and checks what it reads, as it does for anything from disk.
"""

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from moenode.core.codec import canonical, decode
from moenode.core.orders import OrderRequest
from moenode.store.ledger_db import StoreError, _connect, _transaction

KEEP_CLOSED = 8


@dataclass(frozen=True)
class Entry:
    order: bytes  # the signed envelope
    attach: tuple[bytes, ...]  # certified orders sent with its first request
    cert: bytes | None  # the certificate, once recorded


class Outbox:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.db = _connect(self.path)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._durable = _connect(self.path)  # for `add`: an order we signed must survive a power cut too
            self._durable.execute("PRAGMA synchronous=FULL")
            self.db.execute("""
                CREATE TABLE IF NOT EXISTS outbox (id BLOB PRIMARY KEY, account BLOB NOT NULL,
                                                   sequence INTEGER NOT NULL, order_data BLOB NOT NULL,
                                                   attach BLOB NOT NULL, cert BLOB, closed INTEGER NOT NULL)""")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: the order outbox cannot be opened ({e}); refusing to start") from None

    def add(self, order_id: bytes, account: bytes, sequence: int, order: bytes, attach: tuple[bytes, ...]) -> None:
        """Write an order we signed, before any authority is asked for it (again: a no-op)."""
        with self._lock:
            self._durable.execute("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?, ?, NULL, 0)",
                                  (order_id, account, sequence, order, canonical(list(attach))))

    def record(self, order_id: bytes, cert: bytes) -> None:
        """Write the certificate of an order we signed, before it is applied or published."""
        with self._lock:
            self.db.execute("UPDATE outbox SET cert = ? WHERE id = ?", (cert, order_id))

    def close(self, order_id: bytes, account: bytes) -> None:
        """The order's certificate is out; keep the newest few closed rows of `account` (our own), drop the rest."""
        with self._lock, _transaction(self.db):
            self.db.execute("UPDATE outbox SET closed = 1 WHERE id = ?", (order_id,))
            self.db.execute("DELETE FROM outbox WHERE closed = 1 AND (account != ? OR id NOT IN (SELECT id FROM "
                            "outbox WHERE closed = 1 AND account = ? ORDER BY sequence DESC LIMIT ?))",
                            (account, account, KEEP_CLOSED))

    def drop(self, order_id: bytes) -> None:
        """Forget an order that can never certify (its sequence is used by another order)."""
        with self._lock:
            self.db.execute("DELETE FROM outbox WHERE id = ?", (order_id,))

    def open_entries(self) -> list[Entry]:
        """Orders not closed yet, in the order they were signed."""
        with self._lock:
            rows = self.db.execute("SELECT order_data, attach, cert FROM outbox WHERE closed = 0 ORDER BY rowid")
            return [Entry(bytes(o), tuple(decode(a, max_bytes=OrderRequest.MAX_BYTES)), None if c is None else bytes(c)) for o, a, c in rows]

    def recent(self, account: bytes, n: int) -> list[bytes]:
        """The certificates of the last `n` orders of `account`, oldest first."""
        with self._lock:
            rows = self.db.execute("SELECT cert FROM outbox WHERE account = ? AND cert IS NOT NULL "
                                   "ORDER BY sequence DESC LIMIT ?", (account, n)).fetchall()
        return [bytes(c) for (c,) in reversed(rows)]

    def close_db(self) -> None:
        with self._lock:
            self._durable.close()
            self.db.close()
