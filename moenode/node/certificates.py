"""Shard certificates: the one door every certificate goes through, ours, gossiped or synced.

Theory of operation: `on_certificate(cert, origin, pay_cert)` verifies a certificate against the shard recomputed
from our ledger (`Ledger.check_shard_certificate`), archives it (`moenode.store.archive`, on a worker thread),
adds its routing vectors to the winner index, gossips it on `certs` once if it is ours, and, if we won and hold the
round's payment certificate, settles it (`Payments.settle`), once per certificate whichever path saw it first.
A path that meets a certificate another path is still archiving waits for that write, so nothing that follows
(the sync walk saving its cursor past it) gets ahead of the archive. The
round driver hands its outcomes here (an explicit call: `Rounds` is given `on_certificate`), as do the `certs`
topic and the sync walk.

At start, `reindex` adds to the winner index every archived certificate its last snapshot lacks (a crash before
the index was saved).
"""

from __future__ import annotations

import logging

import trio

from moenode.core.errors import ProtocolError
from moenode.core.messages import Certificate, decode_certificate
from moenode.node.context import Context, NetLink
from moenode.node.logs import event
from moenode.node.payments import Payments
from moenode.node.winner_index import WinnerIndex, routing_vectors
from moenode.store.archive import Archive

log = logging.getLogger("moenode.node")


class Certificates:
    """Collaborators: the context, the archive, payments (the ledger that checks a certificate, and `settle`), the
    net link (gossip), and the winner index once the daemon has opened it (None before: nothing is indexed)."""

    def __init__(self, ctx: Context, archive: Archive, payments: Payments, link: NetLink):
        self.ctx, self.archive, self.payments, self.link = ctx, archive, payments, link
        self.index: WinnerIndex | None = None
        self.done: set[bytes] = set()  # certificates verified and archived
        self.settling: set[bytes] = set()
        self._archiving: dict[bytes, trio.Event] = {}  # certificates whose archive write is under way

    async def on_certificate(self, cert: Certificate, origin: bytes | None, pay_cert: bytes = b"",
                             publish: bool | None = None) -> bool:
        """Verify, archive, index, gossip once (ours) and settle (if we won). False if seen before or invalid."""
        ctx, cid = self.ctx, cert.id
        fresh = cid not in self.done
        if fresh:
            try:
                self.payments.ledger.check_shard_certificate(cert)
            except ProtocolError as e:
                ctx.reject(origin, e, "certificate")
                return False
            self.done.add(cid)
            await self._learn(cert, publish if publish is not None else origin is None)
        elif cid in self._archiving:  # another path is archiving it: a sync cursor may pass it once it is on disk
            await self._archiving[cid].wait()
        r = cert.report
        if r.winner == ctx.account and pay_cert and cid not in self.settling:
            self.settling.add(cid)  # once per certificate, whichever path saw it first
            try:
                await self.payments.settle(cert, pay_cert)
                ctx.metrics.inc("settled")
            except Exception as e:
                ctx.metrics.inc("settle_failed")
                log.warning("settle of shard %s failed: %s", r.shard_id.hex()[:16], e)
        return fresh

    async def on_gossip(self, origin: bytes, data: bytes) -> None:
        await self.on_certificate(decode_certificate(data), origin)

    async def _learn(self, cert: Certificate, publish: bool) -> None:
        ctx, me = self.ctx, self.ctx.account
        cid, data, r = cert.id, cert.encode(), cert.report
        written = self._archiving[cid] = trio.Event()
        try:
            await trio.to_thread.run_sync(self.archive.append, cid, data)
        finally:
            del self._archiving[cid]
            written.set()
        ctx.metrics.inc("certificates")
        index = self.index
        try:
            vecs = routing_vectors(r)
            if index is not None and vecs.shape[1] == index.dim:
                await trio.to_thread.run_sync(index.add, cid, vecs, r.producer, r.item_losses, r.epoch, r.space)
        except ValueError as e:
            log.warning("certificate %s: routing vectors not indexable: %s", cid.hex()[:16], e)
        if r.winner == me:
            ctx.metrics.inc("wins")
            event(log, "win", shard=r.shard_id, fee=r.fee, loss_micro=r.loss_micro, producer=r.producer,
                  producer_share_bps=r.producer_share_bps, epoch=r.epoch)
        if me in r.strikes:
            event(log, "strike", account=me, shard=r.shard_id, kind="latency", epoch=r.epoch)
        if r.producer == me and r.winner != me:
            ctx.metrics.inc("proxy_wins")
        if publish:
            try:
                await self.link.host.gossip.publish("certs", data)
            except Exception as e:  # best effort: members and sync carry it too
                log.warning("could not gossip certificate %s: %r", cid.hex()[:16], e)

    def reindex(self) -> None:
        """Certificates archived but missing from the index snapshot (a crash before the last save): add them.
        Blocking: the daemon runs it on a worker thread at start."""
        index = self.index
        assert index is not None
        after, added = 0, 0
        while True:
            rows = self.archive.page(after, 256)
            if not rows:
                break
            for seq, cid, data in rows:
                after = seq
                if not index.has(cid):
                    r = decode_certificate(data).report
                    vecs = routing_vectors(r)
                    if vecs.shape[1] == index.dim:
                        added += index.add(cid, vecs, r.producer, r.item_losses, r.epoch, r.space)
        if added:
            log.info("winner index: %d entries restored from the certificate archive", added)
            index.trim(self.ctx.epoch())
