"""The ledger store as the daemon's authority sees it: writes decided on the trio thread, done on a worker thread.

Theory of operation: `moenode.core.authority.Authority` is sans-IO and writes through an injected store whenever
it applies a certificate, accepts evidence, carries a table over or signs a checkpoint (a vote lock, which the store
must make durable, with an fsync, before the signature may leave). Done directly on the ledger store
(`moenode.store.ledger_db.LedgerDB`), each of those is an sqlite write, sometimes an fsync, on the event loop.
`StoreWriter` stands between them: the authority's writes (`append`, `put_locks`, `rewrite`, and the sync walk's
`save_cursor`) are queued, in order, and `flush()` runs everything queued on a worker thread, one flush after
another in the order they were asked for (a FIFO trio lock), each write exactly as the store would have run it.

What is durable when does not change, because whoever acts on a write awaits `flush()` first: a checkpoint vote
is returned only once its lock is on disk; an order of ours is closed in the outbox only once its certificate is in
the log; the sync walk's cursor is queued after the rows it covers. Everything else (a gossiped certificate, the
escrow a member accepts, evidence, a carry-over) is flushed by `run()` as soon as the loop gets to it, in the order
it was decided, so the log on disk is always a prefix of what the ledger applied: a kill -9 leaves a shorter log
(which replays, and which peers' logs complete), never a different one. A flush that fails puts its writes back at
the head of the queue and raises; they are tried again before anything newer.

Reads pass through, except `entries()` (the whole log, read to rebuild it when a late checkpoint replaces a
carry-over) and `log_size()`, which first write what is queued, and `cursors()`, which shows the cursors still queued. Every use of
the log connection holds one thread lock, so a read on the trio thread never meets a write in progress on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import trio

from moenode.store.ledger_db import LedgerDB

log = logging.getLogger("moenode.node")

Write = tuple[Callable[..., None], tuple[Any, ...]]


class StoreWriter:
    def __init__(self, db: LedgerDB):
        self.db = db
        self._queue: list[Write] = []
        self._cursors: dict[bytes, bytes] = {}  # queued cursor saves, for `cursors()`
        self._turn = trio.Lock()  # flushes run one after another, in the order they were asked for
        self._lock = threading.Lock()  # the log connection: one user at a time
        self._locks_lock = threading.Lock()  # the locks connection (the order desk writes there from its thread)
        self._queued = trio.Event()
        self.writes = 0  # writes done through a flush (off the event loop)

    # LedgerStore, as the authority uses it --------------------------------------------------------------------------
    def locks(self) -> dict[bytes, tuple[bytes, bytes]]:
        with self._lock:
            return self.db.locks()

    def put_locks(self, rows: list[tuple[bytes, bytes, bytes, bytes]]) -> None:
        self._add(self.write_locks, rows)

    def write_locks(self, rows: list[tuple[bytes, bytes, bytes, bytes]]) -> None:
        """Commit and fsync vote locks now, on the calling thread (the order desk's worker thread)."""
        with self._locks_lock:
            self.db.put_locks(rows)

    def append(self, kind: str, ident: bytes, data: bytes) -> None:
        self._add(self.db.append, kind, ident, data)

    def rewrite(self, entries: list[tuple[str, bytes, bytes]]) -> None:
        self._add(self.db.rewrite, entries)

    def entries(self) -> list[tuple[str, bytes, bytes]]:
        self._write_now()  # rare (a rebuild): the loop waits for what is queued, then reads the whole log
        with self._lock:
            return self.db.entries()

    # the sync walk's cursors and pages ----------------------------------------------------------------------------------
    def save_cursor(self, peer: bytes, cursor: bytes) -> None:
        self._cursors[peer] = cursor
        self._add(self._save_cursor, peer, cursor)

    def cursors(self) -> dict[bytes, bytes]:
        with self._lock:
            saved = self.db.cursors()
        return saved | self._cursors

    def log_page(self, after: int, limit: int, kinds: tuple[str, ...] | None = None
                 ) -> list[tuple[int, str, bytes, bytes]]:
        with self._lock:
            return self.db.log_page(after, limit, kinds)

    def log_size(self) -> int:
        self._write_now()  # the log as the ledger has it (for tools and tests)
        with self._lock:
            return self.db.log_size()

    def votes_from_epoch(self) -> int:
        with self._lock:
            return self.db.votes_from_epoch()

    # writing -------------------------------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._queue)

    def _add(self, fn: Callable[..., None], *args: Any) -> None:
        self._queue.append((fn, args))
        self._queued.set()

    def _save_cursor(self, peer: bytes, cursor: bytes) -> None:
        self.db.save_cursor(peer, cursor)
        if self._cursors.get(peer) == cursor:
            self._cursors.pop(peer, None)

    def _run_writes(self, batch: list[Write], failed: list[Write]) -> None:
        """Run `batch` in order; on a failure, the writes not done go to `failed` and the error propagates."""
        with self._lock:
            for i, (fn, args) in enumerate(batch):
                try:
                    fn(*args)
                except BaseException:
                    failed.extend(batch[i:])
                    raise
                self.writes += 1

    async def flush(self) -> None:
        """Run every write queued so far on a worker thread; return once they are done (durable as the store makes
        them). Raises what the store raised; the writes not done stay first in the queue."""
        async with self._turn:
            batch, self._queue = self._queue, []
            if not batch:
                return
            failed: list[Write] = []
            try:
                with trio.CancelScope(shield=True):  # once started, a write's outcome must be known
                    await trio.to_thread.run_sync(self._run_writes, batch, failed)
            except BaseException:
                self._queue[:0] = failed
                raise

    def _write_now(self) -> None:
        """Run what is queued on this thread (for a read that must see it, and at close)."""
        batch, self._queue = self._queue, []
        failed: list[Write] = []
        try:
            self._run_writes(batch, failed)
        except BaseException:
            self._queue[:0] = failed
            raise

    async def run(self) -> None:
        """Flush whatever is queued, as it is queued, for as long as the node runs."""
        while True:
            await self._queued.wait()
            self._queued = trio.Event()
            try:
                await self.flush()
            except Exception as e:  # a full disk, say: the writes stay queued and are tried again
                log.error("ledger store: %d write(s) failed, kept to try again: %r", self.pending, e)
                await trio.sleep(1.0)
                self._queued.set()

    def close(self) -> None:
        """Write what is still queued (on this thread: the loop is ending), then close the store."""
        try:
            self._write_now()
        finally:
            self.db.close()
