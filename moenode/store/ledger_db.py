"""The ledger's durable store: sqlite in WAL mode (implements moenode.core.authority.LedgerStore).

Theory of operation: three tables. `meta` names the network the file belongs to and the schema version. `locks`
holds, per (account, sequence) or checkpoint epoch, the one order an authority signed there; `put_lock` commits with
`synchronous=FULL` before it returns, so a signature never exists whose lock is not on disk. `log` is the list of
everything the ledger accepted (certified orders, checkpoint certificates, skipped checkpoints, evidence), in
acceptance order. It is only appended to, except when a late checkpoint certificate replaces a skip
(`Authority.accept_checkpoint`); that rewrites it in one transaction. State is never stored directly: on open,
`open_authority` replays the log into a fresh `Ledger`, which re-checks every certificate's quorum and signatures,
and then asserts the supply invariant. A file that is not sqlite, fails sqlite's quick check, belongs to another
network, or whose log does not replay cleanly raises `StoreError` saying which, and the node refuses to start.
"""

import sqlite3
from pathlib import Path

from moenode.core.authority import Authority, replay
from moenode.core.crypto import Signer, Verifier
from moenode.core.errors import ProtocolError
from moenode.core.genesis import Genesis
from moenode.core.ledger import ConflictingCertificates, Ledger

SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(Exception):
    """The store cannot be used: corrupt, from another network, or inconsistent. The message says which."""


class LedgerDB:
    def __init__(self, path: str | Path, network_id: bytes):
        self.path = Path(path)
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                if f.read(16) != SQLITE_MAGIC:
                    raise StoreError(f"{self.path}: not a ledger store (not an sqlite file); refusing to start")
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            ok = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise StoreError(f"{self.path}: sqlite quick_check failed ({ok}); refusing to start")
            self.db.executescript("""
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
                CREATE TABLE IF NOT EXISTS locks (key BLOB PRIMARY KEY, order_id BLOB NOT NULL,
                                                  settle_key BLOB NOT NULL, data BLOB NOT NULL);
                CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
                                                ident BLOB NOT NULL, data BLOB NOT NULL);
            """)
            self._check_meta(network_id)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: corrupt ledger store ({e}); refusing to start") from None

    def _check_meta(self, network_id: bytes) -> None:
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                [("network_id", network_id), ("schema", SCHEMA_VERSION)])
            self.db.execute("COMMIT")
            return
        if meta.get("schema") != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {meta.get('schema')!r}, this node reads {SCHEMA_VERSION}")
        if meta.get("network_id") != network_id:
            theirs = meta.get("network_id")
            raise StoreError(f"{self.path}: belongs to network {theirs.hex()[:16] if theirs else '?'}, not to this "
                             f"node's network {network_id.hex()[:16]}; refusing to start")

    # LedgerStore --------------------------------------------------------------------------------------------------
    def locks(self) -> dict[bytes, tuple[bytes, bytes]]:
        return {k: (o, s) for k, o, s in self.db.execute("SELECT key, order_id, settle_key FROM locks")}

    def put_lock(self, key: bytes, order_id: bytes, settle_key: bytes, data: bytes) -> None:
        # INSERT (not REPLACE): a second lock under one key is a bug in the caller, and must not overwrite.
        self.db.execute("INSERT INTO locks VALUES (?, ?, ?, ?)", (key, order_id, settle_key, data))

    def append(self, kind: str, ident: bytes, data: bytes) -> None:
        self.db.execute("INSERT INTO log (kind, ident, data) VALUES (?, ?, ?)", (kind, ident, data))

    def rewrite(self, entries: list[tuple[str, bytes, bytes]]) -> None:
        # One transaction: a kill -9 leaves the old log or the new one. New rows get higher seqs than any old row,
        # so a sync cursor that points into the old log only makes a peer fetch some entries twice (no-ops).
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DELETE FROM log")
            self.db.executemany("INSERT INTO log (kind, ident, data) VALUES (?, ?, ?)", entries)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # reading ------------------------------------------------------------------------------------------------------
    def entries(self) -> list[tuple[str, bytes, bytes]]:
        return [tuple(r) for r in self.db.execute("SELECT kind, ident, data FROM log ORDER BY seq")]  # type: ignore

    def close(self) -> None:
        self.db.close()


def rebuild(genesis: Genesis, db: LedgerDB, verify: Verifier) -> Ledger:
    """Replay the store's log into a fresh ledger, re-checking every certificate and the supply invariant."""
    ledger = Ledger(genesis, verify)
    entries = db.entries()
    for i, entry in enumerate(entries):
        try:
            replay(ledger, entry)
        except (ProtocolError, ConflictingCertificates, ValueError, KeyError) as e:
            raise StoreError(f"{db.path}: log entry {i + 1} of {len(entries)} ({entry[0]}) does not replay: {e}; "
                             "refusing to start") from None
    try:
        ledger.assert_supply()
    except AssertionError as e:
        raise StoreError(f"{db.path}: {e}; refusing to start") from None
    return ledger


def open_authority(path: str | Path, genesis: Genesis, signer: Signer, verify: Verifier) -> Authority:
    """Open (or create) the store at `path` and return the authority it holds, state rebuilt and checked."""
    db = LedgerDB(path, genesis.network_id)
    try:
        return Authority(rebuild(genesis, db, verify), signer, db)
    except BaseException:
        db.close()
        raise
