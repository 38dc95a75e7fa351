"""The node's certificate archive: every shard certificate it verified, in order, for restarts and for peers.

Theory of operation: one sqlite file (`HOME/certs.sqlite`, WAL) with one append-only table,
`certs(seq, ident UNIQUE, data)`: `ident` is the certificate id (its report's digest), `data` its canonical
encoding. A restart re-reads it to know which certificates it already indexed and settled; the sync protocol
serves it by cursor (`seq`) so a late joiner rebuilds its winner index from public, re-verified history, and the
cursors of this node's own walks of its peers' archives are kept here too (`moenode.store.cursors`). The
ledger's own history lives in the ledger store (`moenode.store.ledger_db`), not here.
"""

import sqlite3
import threading
from pathlib import Path

from moenode.store import cursors

SCHEMA = """
CREATE TABLE IF NOT EXISTS certs (seq INTEGER PRIMARY KEY AUTOINCREMENT, ident BLOB NOT NULL UNIQUE,
                                  data BLOB NOT NULL);
"""


class Archive:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA + cursors.SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(self, ident: bytes, data: bytes) -> bool:
        """Archive one certificate; False if it is already there."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO certs (ident, data) VALUES (?, ?)", (ident, data))
            return cur.rowcount == 1

    def page(self, after: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        """Up to `limit` (seq, ident, data) with seq > after, in order."""
        with self._lock:
            rows = self._db.execute("SELECT seq, ident, data FROM certs WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after, limit)).fetchall()
        return [(s, bytes(i), bytes(d)) for s, i, d in rows]

    def idents(self) -> set[bytes]:
        with self._lock:
            return {bytes(r[0]) for r in self._db.execute("SELECT ident FROM certs")}

    def cursors(self) -> dict[bytes, bytes]:
        with self._lock:
            return cursors.read_cursors(self._db)

    def save_cursor(self, peer: bytes, cursor: bytes) -> None:
        with self._lock:
            cursors.write_cursor(self._db, peer, cursor)

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM certs").fetchone()[0]
