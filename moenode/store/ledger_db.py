"""The ledger's durable store: sqlite in WAL mode (implements moenode.core.authority.LedgerStore).

Theory of operation: three tables (and the sync cursors of `moenode.store.cursors`). `meta` names the network the
file belongs to and the schema version. `locks` holds, per (account, sequence) or checkpoint epoch, the one order
an authority signed there; `put_locks` commits a batch of them in one transaction and fsyncs before it returns
(one fsync per batch of votes), so a signature never exists whose lock is not on disk. `log` is the list of
everything the ledger applied (certified orders, checkpoint certificates, skipped checkpoints, evidence), in the
order it did; its commits survive a kill -9 without an fsync each (see the pragma below). It is only appended to, except when a late checkpoint certificate replaces a skip
(`Authority.accept_checkpoint`); that rewrites it in one transaction. State is never stored directly: on open,
`open_authority` replays the log into a fresh `Ledger`, which re-checks every certificate's quorum and signatures
(each batch vote's signature once), and then asserts the supply invariant. A file that is not sqlite, fails
sqlite's quick check, belongs to another network, or whose log does not replay cleanly raises `StoreError` saying
which, and the node refuses to start. Rows an older version logged for certified orders of a future epoch whose
votes do not hold (it logged them before their stake table was known) are deleted on open, with a warning.

The locks are why a lost ledger is not a fresh one. `moenode init` creates an empty store next to the key (its
network is claimed on the first run), so a home whose key or certificate archive exists but whose ledger is
missing or empty has lost its locks: `require_ledger` refuses to start it. `resync_ledger` is the way out: it sets
the old file aside, creates an empty store, and records in `meta` the epoch from which the node may vote again
(`votes_from_epoch`: two epochs on, when every order and checkpoint it may have voted for before has closed). The
node then fetches the history from its peers.
"""

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from moenode.core.authority import Authority, replay
from moenode.core.crypto import Signer, Verifier
from moenode.core.errors import ConflictingCertificates, FutureCertificate, ProtocolError
from moenode.core.genesis import Genesis
from moenode.core.ledger import Ledger, VerifyCache
from moenode.store import cursors

log = logging.getLogger("moenode.store")

SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(Exception):
    """The store cannot be used: missing, corrupt, from another network, or inconsistent. The message says which;
    `resyncable` says whether setting it aside and fetching the history again from peers (`resync_ledger`) fixes
    it (not when it belongs to another network or schema: then the home or the software is the mistake)."""

    def __init__(self, message: str, resyncable: bool = True):
        super().__init__(message)
        self.resyncable = resyncable


class LedgerDB:
    def __init__(self, path: str | Path, network_id: bytes | None):
        """Open or create the store at `path`. `network_id` None: create or open it without claiming it for a
        network (`moenode init`, before the home knows its genesis)."""
        self.path = Path(path)
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                if f.read(16) != SQLITE_MAGIC:
                    raise StoreError(f"{self.path}: not a ledger store (not an sqlite file); refusing to start")
        try:
            self.db = _connect(self.path)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: every commit survives a crash or kill -9 of the process; only an OS crash or
            # power cut can lose the newest log rows (a prefix stays), which peers hold and sync brings back. A
            # lock is what a power cut must not lose (it stops a conflicting vote), so locks go through a second
            # connection that commits with FULL; its fsync of the shared WAL makes every earlier row durable too.
            self.db.execute("PRAGMA synchronous=NORMAL")
            ok = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise StoreError(f"{self.path}: sqlite quick_check failed ({ok}); refusing to start")
            self.db.executescript("""
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
                CREATE TABLE IF NOT EXISTS locks (key BLOB PRIMARY KEY, order_id BLOB NOT NULL,
                                                  settle_key BLOB NOT NULL, data BLOB NOT NULL);
                CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
                                                ident BLOB NOT NULL, data BLOB NOT NULL);
            """ + cursors.SCHEMA)
            self._check_meta(network_id)
            # locks may be written from a worker thread while the log is appended to on another: one connection
            # each, so neither's transaction can take in the other's statements
            self._locks_db = _connect(self.path)
            self._locks_db.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: corrupt ledger store ({e}); refusing to start") from None

    def _check_meta(self, network_id: bytes | None) -> None:
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if network_id is not None and "network_id" not in meta:
            with _transaction(self.db):
                self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                    [("network_id", network_id), ("schema", SCHEMA_VERSION)])
            return
        if meta.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {meta.get('schema')!r}, this node reads {SCHEMA_VERSION}",
                             resyncable=False)
        if network_id is not None and meta.get("network_id") != network_id:
            theirs = meta["network_id"]
            raise StoreError(f"{self.path}: belongs to network {theirs.hex()[:16]}, not to this node's network "
                             f"{network_id.hex()[:16]}; refusing to start", resyncable=False)

    def votes_from_epoch(self) -> int:
        """The first epoch in which this node may vote (0, unless its locks were lost: see `resync_ledger`)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'votes_from_epoch'").fetchone()
        return int(row[0]) if row else 0

    # LedgerStore --------------------------------------------------------------------------------------------------
    def locks(self) -> dict[bytes, tuple[bytes, bytes]]:
        return {k: (o, s) for k, o, s in self.db.execute("SELECT key, order_id, settle_key FROM locks")}

    def put_locks(self, rows: list[tuple[bytes, bytes, bytes, bytes]]) -> None:
        """Commit and fsync the rows in one transaction. Safe to call from a worker thread."""
        # INSERT (not REPLACE): a second lock under one key is a bug in the caller, and must not overwrite.
        with _transaction(self._locks_db):
            self._locks_db.executemany("INSERT INTO locks VALUES (?, ?, ?, ?)", rows)

    def append(self, kind: str, ident: bytes, data: bytes) -> None:
        self.db.execute("INSERT INTO log (kind, ident, data) VALUES (?, ?, ?)", (kind, ident, data))

    def rewrite(self, entries: list[tuple[str, bytes, bytes]]) -> None:
        # One transaction: a kill -9 leaves the old log or the new one. New rows get higher seqs than any old row,
        # so a sync cursor that points into the old log only makes a peer fetch some entries twice (no-ops).
        with _transaction(self.db):
            self.db.execute("DELETE FROM log")
            self.db.executemany("INSERT INTO log (kind, ident, data) VALUES (?, ?, ?)", entries)

    def delete(self, seqs: list[int]) -> None:
        """Delete these log rows, in one transaction (the others keep their positions)."""
        with _transaction(self.db):
            self.db.executemany("DELETE FROM log WHERE seq = ?", [(q,) for q in seqs])

    # reading ------------------------------------------------------------------------------------------------------
    def entries(self) -> list[tuple[str, bytes, bytes]]:
        return [tuple(r) for r in self.db.execute("SELECT kind, ident, data FROM log ORDER BY seq")]

    def log_page(self, after: int, limit: int, kinds: tuple[str, ...] | None = None
                 ) -> list[tuple[int, str, bytes, bytes]]:
        """Up to `limit` log rows (seq, kind, ident, data) with seq > `after` (and a kind in `kinds`), in order."""
        where = f" AND kind IN ({','.join('?' * len(kinds))})" if kinds else ""
        rows = self.db.execute(f"SELECT seq, kind, ident, data FROM log WHERE seq > ?{where} ORDER BY seq LIMIT ?",
                               (after, *(kinds or ()), limit)).fetchall()
        return [(seq, kind, bytes(ident), bytes(data)) for seq, kind, ident, data in rows]

    def log_size(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM log").fetchone()[0]

    # sync cursors into peers' logs (committed after the rows they cover, on the same connection) ------------------
    def cursors(self) -> dict[bytes, bytes]:
        return cursors.read_cursors(self.db)

    def save_cursor(self, peer: bytes, cursor: bytes) -> None:
        cursors.write_cursor(self.db, peer, cursor)

    def close(self) -> None:
        self._locks_db.close()
        self.db.close()


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=10000")  # the two connections take turns at writing; a turn is milliseconds
    return db


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """All statements inside commit together or not at all (a kill -9 midway leaves none of them)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


REPLAY_PAGE = 1024


def rebuild(genesis: Genesis, db: LedgerDB, verify: Verifier) -> Ledger:
    """Replay the store's log into a fresh ledger, re-checking every certificate and the supply invariant."""
    ledger = Ledger(genesis, verify)
    cached = VerifyCache(verify)  # a batch vote's signature is checked once, not once per order it covers
    total, done, after, junk = db.log_size(), 0, 0, []
    while rows := db.log_page(after, REPLAY_PAGE):
        for seq, kind, ident, data in rows:
            after, done = seq, done + 1
            try:
                replay(ledger, (kind, ident, data), cached)
            except FutureCertificate:
                junk.append(seq)  # logged while it waited for a table, and its votes do not hold: never applied
            except (ProtocolError, ConflictingCertificates, ValueError, KeyError) as e:
                raise StoreError(f"{db.path}: log entry {done} of {total} ({kind}) does not replay: {e}; "
                                 "refusing to start") from None
    try:
        ledger.assert_supply()
    except AssertionError as e:
        raise StoreError(f"{db.path}: {e}; refusing to start") from None
    if junk:
        log.warning("%s: deleted %d logged certified orders of future epochs whose votes do not hold", db.path,
                    len(junk))
        db.delete(junk)
    return ledger


def open_authority(path: str | Path, genesis: Genesis, signer: Signer, verify: Verifier) -> Authority:
    """Open (or create) the store at `path` and return the authority it holds, state rebuilt and checked."""
    db = LedgerDB(path, genesis.network_id)
    try:
        return Authority(rebuild(genesis, db, verify), signer, db, votes_from_epoch=db.votes_from_epoch())
    except BaseException:
        db.close()
        raise


def init_ledger(path: str | Path) -> None:
    """Create the empty store of a new home (its network is claimed on the first run). An existing one is kept."""
    LedgerDB(path, None).close()


def require_ledger(path: str | Path, used: list[Path]) -> None:
    """Refuse a home whose ledger is missing or empty although `used` (its key, its certificate archive) exist:
    its vote locks are gone, and a node that started afresh could vote twice for one (account, sequence)."""
    p = Path(path)
    if not used or (p.exists() and p.stat().st_size > 0):
        return
    state = "is empty (0 bytes)" if p.exists() else "is missing"
    raise StoreError(f"{p} {state} but {' and '.join(str(u) for u in used)} {'exist' if len(used) > 1 else 'exists'}:"
                     " this node's vote locks are gone, and starting from genesis could make it vote twice; refusing"
                     " to start")


def resync_ledger(path: str | Path, genesis: Genesis, now_ms: int, stamp: str) -> tuple[list[Path], int]:
    """Set the ledger at `path` aside (with its -wal and -shm files, renamed `<name>.<stamp>.broken`) and create an
    empty one that the node fills from its peers. Returns (the files set aside, the first epoch it may vote in).

    Its vote locks are lost, so the node votes on nothing before two epochs from now: an order is voted for only in
    its own epoch or the next, and a checkpoint of epoch E only during E+1, so by then nothing it may have voted for
    before can gather a vote any more.
    """
    p = Path(path)
    moved = []
    for f in (p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
        if f.exists():
            f.rename(f.with_name(f"{f.name}.{stamp}.broken"))
            moved.append(f.with_name(f"{f.name}.{stamp}.broken"))
    votes_from = max(0, genesis.epoch(now_ms)) + 2
    db = LedgerDB(p, genesis.network_id)
    try:
        with _transaction(db.db):
            db.db.execute("INSERT INTO meta VALUES ('votes_from_epoch', ?)", (votes_from,))
    finally:
        db.close()
    return moved, votes_from
