"""Catch-up sync: a late joiner fetches the public history a peer has verified, checks it, then follows gossip.

Theory of operation: a node keeps two ordered histories: the ledger store's log (certified orders, checkpoint
certificates, evidence; `moenode.store.ledger_db`) and the certificate archive (shard certificates; `archive.py`).
The paged RPC `sync` serves either by cursor: query `ledger` or `certs`, the cursor is the position as 8 big-endian
bytes, each item is `canonical([kind, data])`, a page holds at most `PAGE_LIMIT` items and `PAGE_BYTES` of data,
its next-cursor is the position of its last item, and an empty page (with an empty next-cursor) ends the walk.
Nothing is taken on trust: the fetching node runs every entry through the same checks as gossip
(`Payments.accept`, `Epochs.accept`, `Certificates.on_certificate`), so a lying peer can only withhold
history, never forge it. Skipped checkpoints are local decisions (a timeout) and are not served. A peer's log is in
the order its node applied it, so a checkpoint comes before the orders of the epoch it fixes. Entries refused for
a state that a later entry may change (a checkpoint whose predecessor is not here yet) are retried once after the
walk; at most `RETRY_MAX` of them (`RETRY_BYTES`) are held, the rest are refused at once.

A walk is paced and resumable, so a history of any length completes:
- pages are requested at most `PAGES_PER_S` a second (a token bucket, `moenode.net.limits`), well inside the
  request rate every node grants a peer (50 a second, 100 banked; docs/networking.md), so a walk never runs into
  the server's limit and leaves room for the votes and rounds that go to the same peer;
- a page refused as `rate_limited` or `internal`, or lost to a timeout, is asked again after a backoff
  (`backoff_s`, doubling, with jitter this driver draws) up to `TRIES` times; any other failure ends the walk of
  that peer, and the next peer is tried;
- the cursor is saved after every page, in the store the page's entries went to (`moenode.store.cursors`), per
  peer and history: a walk cut short (a failure, a stop, a kill) resumes from there, and a restarted node first
  asks the peer it had walked furthest. The saved cursor never passes an entry waiting for its retry: until the
  walk ends, it stays before the first page that left one.

The first walk starts once a peer is connected, and asks (after a peer it can resume) the bootstrap peers first,
moving to the next peer on failure. After it, the node pulls again every `PULL_EVERY_S` from where its last walk of
that peer ended (only what was appended since crosses the wire), each time from the next connected staked peer in
turn (round robin): anti-entropy, so that whatever gossip lost (a restart, a partition, a dropped message) still
arrives, and no single peer that lags or withholds can keep the node behind.
`state` is what /status shows: idle, syncing, synced (with counts: fetched, applied, duplicates, rejected, pages,
backoffs) or failed (with the reason).
"""

from __future__ import annotations

import logging
import random
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import trio

from moenode.core.codec import canonical, decode
from moenode.core.errors import FutureCertificate, ProtocolError, SchemaError, StateError
from moenode.core.messages import Evidence, decode_certificate

from moenode.node.certificates import Certificates
from moenode.node.context import Context, NetLink
from moenode.node.epochs import Epochs
from moenode.node.payments import Payments

if TYPE_CHECKING:
    from moenode.net.limits import TokenBucket

log = logging.getLogger("moenode.node")

PAGE_LIMIT = 256  # items per page (a server caps what it is asked at this)
PAGE_BYTES = 8 << 20
LEDGER_KINDS = ("order", "checkpoint", "evidence")
QUERIES = (b"ledger", b"certs")  # the ledger first: certificates are checked against its stake tables
WAIT_FOR_PEERS = 10.0
PULL_EVERY_S = 15.0  # anti-entropy: what gossip lost (a restart, a partition, a full queue) arrives within this
PAGES_PER_S, PAGES_BANKED = 20.0, 10.0  # well inside the 50 requests a second (100 banked) a node grants a peer
TRIES = 6  # attempts at one page before the walk of that peer fails
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 16.0
TRANSIENT = ("rate_limited", "internal")  # a peer's refusals that asking again later may cure
RETRY_MAX, RETRY_BYTES = 1024, 16 << 20


def backoff_s(attempt: int, jitter: float) -> float:
    """The wait before attempt `attempt` + 1 (`attempt` >= 1): doubling from BACKOFF_FIRST_S up to BACKOFF_MAX_S,
    times 0.5..1 by `jitter` (uniform in [0, 1), drawn by the caller) so that peers do not retry in step."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1)) * (0.5 + jitter / 2)


def transient(e: Exception) -> bool:
    """A failure to fetch a page that asking the same peer again later may cure."""
    from moenode.net import NetError, RemoteError  # here, like the node's other uses: libp2p loads when it runs

    if isinstance(e, RemoteError):
        return str(e) in TRANSIENT
    return isinstance(e, NetError)  # timed out, or the stream broke


class Retries:
    """Entries to apply again once the walk has ended, at most RETRY_MAX of them holding RETRY_BYTES of data."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, bytes]] = []
        self.size = 0

    def __len__(self) -> int:
        return len(self.entries)

    def room(self, data: bytes) -> bool:
        return len(self.entries) < RETRY_MAX and self.size + len(data) <= RETRY_BYTES

    def add(self, kind: str, data: bytes) -> None:
        self.entries.append((kind, data))
        self.size += len(data)


class Sync:
    """Catch-up and anti-entropy. Collaborators: the context, the net link, and the parts that apply what it fetches
    (and keep the histories it serves): payments (orders; the ledger store), epochs (checkpoints, evidence) and
    certificates (shard certificates; the archive)."""

    def __init__(self, ctx: Context, link: NetLink, payments: Payments, epochs: Epochs, certificates: Certificates):
        self.ctx, self.link = ctx, link
        self.payments, self.epochs, self.certificates = payments, epochs, certificates
        self.state: dict[str, Any] = {"state": "idle", "peer": None, "fetched": 0, "applied": 0, "rejected": 0,
                                      "duplicates": 0, "pages": 0, "backoffs": 0}
        self.source: bytes | None = None  # the peer the last walk completed from
        self.rng = random.Random()  # the backoff's jitter
        self._pace: TokenBucket | None = None

    @property
    def busy(self) -> bool:
        """The catch-up walk has not finished (the history being fetched may hold what the node waits for)."""
        return self.state["state"] in ("idle", "syncing")

    # cursors (per peer and history, saved in the store the history's entries go to) -------------------------------
    def _store(self, query: bytes) -> Any:
        return self.certificates.archive if query == b"certs" else self.payments.store

    def cursor(self, peer: bytes, query: bytes) -> bytes:
        return self._store(query).cursors().get(peer, b"")

    async def _save(self, peer: bytes, query: bytes, cursor: bytes) -> None:
        """Save a cursor after the rows it covers: the ledger store's writer queues it behind them; the archive's
        rows were written before `apply` returned, and its cursor is written on a worker thread too."""
        if not cursor:
            return
        if query == b"certs":
            await trio.to_thread.run_sync(self.certificates.archive.save_cursor, peer, cursor)
        else:
            self.payments.store.save_cursor(peer, cursor)

    # serving ---------------------------------------------------------------------------------------------------------
    def _rows(self, query: bytes, after: int, limit: int) -> list[tuple[int, str, bytes]]:
        if query == b"certs":
            return [(seq, "cert", data) for seq, _ident, data in self.certificates.archive.page(after, limit)]
        if query == b"ledger":
            rows = self._store(query).log_page(after, limit, LEDGER_KINDS)
            return [(seq, kind, data) for seq, kind, _ident, data in rows]
        raise SchemaError(f"sync: unknown query {query!r:.20}")

    async def serve_page(self, peer: bytes, query: bytes, cursor: bytes, limit: int) -> tuple[list[bytes], bytes]:
        if cursor and len(cursor) != 8:
            raise SchemaError("sync: the cursor is 8 bytes")
        after = int.from_bytes(cursor, "big") if cursor else 0
        limit = min(limit, PAGE_LIMIT)
        rows = await trio.to_thread.run_sync(self._rows, query, after, limit)  # up to PAGE_BYTES read from disk
        items: list[bytes] = []
        size, last = 0, after
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
        with trio.move_on_after(WAIT_FOR_PEERS):
            while not self.link.connected():
                await trio.sleep(0.1)
        if not self.link.connected():
            self.state.update(state="synced", note="no peers: nothing to fetch")
        else:
            await self._walk_any(self.sources(catch_up=True))
        while True:
            await trio.sleep(PULL_EVERY_S)
            catching_up = self.state["state"] != "synced"  # a failed catch-up is tried again, loudly
            await self._walk_any(self.sources(catch_up=catching_up), quiet=not catching_up)

    def sources(self, catch_up: bool) -> list[bytes]:
        """Peers to walk, in the order to try them.

        Catching up: a peer whose walk this node can resume (furthest first), the bootstrap peers, then staked
        peers, then any. Afterwards: the connected staked peers (any connected peer if none is staked) in turn,
        starting after the one that served last, so every pull asks another peer.
        """
        net, ledger = self.link.host, self.payments.ledger
        peers = sorted(net.connected())
        staked = [p for p in peers if ledger.stake(p) > 0]
        if catch_up:
            saved = sorted((p for p in peers if self.cursor(p, QUERIES[0])),
                           key=lambda p: -int.from_bytes(self.cursor(p, QUERIES[0]), "big"))
            boot = [p for p in net.bootstrap_accounts if p in peers]
            return list(dict.fromkeys(saved + boot + staked + peers))
        pool = staked or peers
        after = [p for p in pool if self.source is not None and p > self.source]
        return after + [p for p in pool if p not in after]

    async def _walk_any(self, peers: list[bytes], quiet: bool = False) -> None:
        """Walk the first of `peers` that completes a walk; a peer that fails gives its turn to the next."""
        for peer in peers:
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
        retry = Retries()
        ends = {query: await self._walk_history(peer, query, retry) for query in QUERIES}
        for kind, data in retry.entries:
            await self.apply(peer, kind, data, final=True)
        for query, cursor in ends.items():  # the retried entries are settled: the cursors may pass them now
            await self._save(peer, query, cursor)
        self.source = peer
        if not quiet:
            self.state.update(state="synced")
            log.info("synced from %s: %s", peer.hex()[:16], self.state)
        elif self.state["applied"] > applied:
            log.info("pulled %d entries from %s that gossip had not brought", self.state["applied"] - applied,
                     peer.hex()[:16])

    async def _walk_history(self, peer: bytes, query: bytes, retry: Retries) -> bytes:
        """Walk one history of `peer` from the saved cursor to its end, saving the cursor after every page; return
        where it ended. Entries to retry are added to `retry`."""
        cursor = self.cursor(peer, query)
        pinned: bytes | None = None  # before the first page that left an entry to retry
        while True:
            items, nxt = await self._page(peer, query, cursor)
            waiting = len(retry)
            for raw in items:
                self.state["fetched"] += 1
                kind, data = self._entry(raw)
                if not await self.apply(peer, kind, data, final=not retry.room(data)):
                    retry.add(kind, data)
            if len(retry) > waiting and pinned is None:
                pinned = cursor or b"\x00" * 8
            if not nxt:
                return cursor
            if nxt == cursor:
                raise SchemaError(f"sync: the page cursor of {peer.hex()[:16]} did not advance")
            cursor = nxt
            await self._save(peer, query, pinned or cursor)

    async def _page(self, peer: bytes, query: bytes, cursor: bytes) -> tuple[list[bytes], bytes]:
        """One page, paced; a transient failure is retried after a backoff, up to TRIES times."""
        for attempt in range(1, TRIES + 1):
            await self._paced()
            try:
                async with aclosing(self.link.host.iter_pages(peer, "sync", query, cursor=cursor,
                                                             limit=PAGE_LIMIT)) as pages:
                    async for page in pages:
                        self.state["pages"] += 1
                        return page
                raise SchemaError("sync: the peer answered no page")
            except Exception as e:
                if attempt == TRIES or not transient(e) or peer not in self.link.connected():
                    raise
                self.state["backoffs"] += 1
                log.info("sync page from %s: %s; asking again (attempt %d)", peer.hex()[:16], e, attempt + 1)
                await trio.sleep(backoff_s(attempt, self.rng.random()))
        raise AssertionError("unreachable")

    async def _paced(self) -> None:
        from moenode.net.limits import Rate, TokenBucket

        now = self.ctx.clock.timer()
        if self._pace is None:
            self._pace = TokenBucket(Rate(PAGES_PER_S, PAGES_BANKED), now)
        while not self._pace.take(now):
            await trio.sleep((1.0 - self._pace.tokens) / self._pace.rate)
            now = self.ctx.clock.timer()

    @staticmethod
    def _entry(raw: bytes) -> tuple[str, bytes]:
        e = decode(raw, max_bytes=PAGE_BYTES + 1024)
        if not (isinstance(e, list) and len(e) == 2 and e[0] in LEDGER_KINDS + ("cert",) and isinstance(e[1], bytes)):
            raise SchemaError("sync: expected [kind, data]")
        return e[0], e[1]

    async def apply(self, peer: bytes, kind: str, data: bytes, final: bool) -> bool:
        """Apply one fetched entry; False if it should be retried later (a prerequisite may still come)."""
        try:
            if kind == "order":
                new = self.payments.accept(data) != "duplicate"
            elif kind == "checkpoint":
                new = self.epochs.accept(data) != "duplicate"
            elif kind == "evidence":
                new = self.epochs.authority.add_evidence(Evidence.decode(data), self.ctx.now_ms())
            else:
                new = await self.certificates.on_certificate(decode_certificate(data), peer, b"", publish=False)
        except ProtocolError as e:
            if not final and isinstance(e, StateError) and not isinstance(e, FutureCertificate):
                return False
            self.state["rejected"] += 1
            self.ctx.reject(peer, e, f"sync/{kind}")
            return True
        finally:
            await trio.lowlevel.checkpoint()  # a page is hundreds of entries: let the node's other tasks run
        self.state["applied" if new else "duplicates"] += 1
        return True
