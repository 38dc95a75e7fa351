"""The node's archive: the public history it has verified, in order, for restarts and for peers that catch up.

Theory of operation: one sqlite file with one append-only table, `log(seq, kind, ident, data)`, `ident` unique per
kind. Kinds: `order` (a certified order), `checkpoint` (a checkpoint certificate), `skip`, `evidence` (the ledger's
log, as `moenode.core.authority` writes it) and `cert` (a shard certificate). A restart replays the ledger kinds
through `authority.replay` and the `cert` kind into the winner index; the sync protocol serves any kind by cursor
(`seq`), so a late joiner fetches exactly what this node verified, in the order it verified it.

It also satisfies the authority's `LedgerStore` protocol (`locks`, `put_lock`, `append`) for the daemon when no
dedicated ledger database is installed: `put_lock` commits before it returns (WAL, synchronous=FULL), so a vote
never leaves before its lock is durable.
"""

import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, ident BLOB NOT NULL,
                                data BLOB NOT NULL, UNIQUE (kind, ident));
CREATE TABLE IF NOT EXISTS locks (key BLOB PRIMARY KEY, order_id BLOB NOT NULL, settle_key BLOB NOT NULL,
                                  data BLOB NOT NULL);
"""
LEDGER_KINDS = ("order", "checkpoint", "skip", "evidence")


class Archive:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # LedgerStore ---------------------------------------------------------------------------------------------------
    def locks(self) -> dict[bytes, tuple[bytes, bytes]]:
        with self._lock:
            rows = self._db.execute("SELECT key, order_id, settle_key FROM locks").fetchall()
        return {bytes(k): (bytes(o), bytes(s)) for k, o, s in rows}

    def put_lock(self, key: bytes, order_id: bytes, settle_key: bytes, data: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?)", (key, order_id, settle_key, data))

    def append(self, kind: str, ident: bytes, data: bytes) -> bool:
        """Add one entry; False if (kind, ident) is already archived."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO log (kind, ident, data) VALUES (?, ?, ?)",
                                   (kind, ident, data))
            return cur.rowcount == 1

    # reading -------------------------------------------------------------------------------------------------------
    def entries(self, kinds: tuple[str, ...] = LEDGER_KINDS) -> list[tuple[str, bytes, bytes]]:
        marks = ",".join("?" * len(kinds))
        with self._lock:
            rows = self._db.execute(f"SELECT kind, ident, data FROM log WHERE kind IN ({marks}) ORDER BY seq",
                                    kinds).fetchall()
        return [(k, bytes(i), bytes(d)) for k, i, d in rows]

    def page(self, after: int, limit: int, kinds: tuple[str, ...]) -> tuple[list[tuple[int, str, bytes, bytes]], int]:
        """Up to `limit` entries with seq > after, and the last seq returned (after, if none)."""
        marks = ",".join("?" * len(kinds))
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, kind, ident, data FROM log WHERE seq > ? AND kind IN ({marks}) ORDER BY seq LIMIT ?",
                (after, *kinds, limit)).fetchall()
        out = [(s, k, bytes(i), bytes(d)) for s, k, i, d in rows]
        return out, (out[-1][0] if out else after)

    def count(self, kind: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM log WHERE kind = ?", (kind,)).fetchone()[0]

    def has(self, kind: str, ident: bytes) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM log WHERE kind = ? AND ident = ?", (kind, ident)).fetchone() \
                is not None
