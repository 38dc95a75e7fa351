"""Epoch checkpoints on the network: collecting authority votes, and carrying a table over when none formed.

Theory of operation (SPEC section 6; the rules are in `moenode.core.checkpoint` and `moenode.core.ledger`): the
stake table of epoch E+2 is fixed by a certified checkpoint of epoch E, signed during epoch E+1. Each authority of
E+1 runs `tick` once a second. A quarter into E+1 (so that the Settles and stake orders of E have spread), plus a
stagger by its rank among the authorities (so that usually one collector does the work and the others find the
checkpoint already applied), it proposes its view's checkpoint, votes for it itself and asks every other authority
over the `checkpoint` RPC; the answers are counted by `CheckpointCollector`. A quorum makes a `CheckpointCert`,
applied locally and gossiped on `checkpoints`. An authority signs at most one checkpoint per epoch (its lock) and
only one identical to its own view, so two collectors with different views cannot both succeed.

Evidence (two signed envelopes that cannot both be honest) found in a round travels on the same `checkpoints`
topic as a sealed `Evidence` envelope, so that every authority's view, and so its checkpoint, includes it.

If epoch E+2 starts and its table is still open, the node waits a short grace (a certificate may be in flight) and
then carries the last table over (`skip_checkpoint`); the items wait for the next checkpoint. The daemon does not
ask for a carry-over while its catch-up sync runs. A carry-over is provisional: if a certificate for that epoch arrives later
(gossip, sync, a node back from a crash), it wins, and the ledger is rebuilt from the log with the certificate in
the skip's place, so every node converges on the same checkpoint history.
"""

from __future__ import annotations

import logging
from moenode.core.authority import Authority
from moenode.core.checkpoint import Checkpoint, CheckpointCert, CheckpointCollector, slash_bps
from moenode.core.codec import decode
from moenode.core.crypto import ed25519_verify
from moenode.core.errors import ProtocolError
from moenode.core.messages import Evidence, Signed, open_signed, seal
from moenode.node.context import Context, NetLink
from moenode.node.decoding import decode_off_loop
from moenode.node.logs import event
from moenode.node.payments import ask_authorities
from moenode.node.writer import StoreWriter

log = logging.getLogger("moenode.node")

VOTE_TIMEOUT = 10.0
SKIP_GRACE_MS = 5_000


class Epochs:
    """Checkpoints and evidence. Collaborators: the context, the authority (and the writer its store writes go
    through: a checkpoint vote leaves only once its lock is on disk), and the net link."""

    def __init__(self, ctx: Context, authority: Authority, store: StoreWriter, link: NetLink):
        self.ctx, self.authority, self.store, self.link = ctx, authority, store, link
        self.tried: set[int] = set()

    async def sign(self, cp: Checkpoint) -> bytes:
        """Our vote for `cp` (`Authority.sign_checkpoint`), returned once its lock is durable."""
        sig = self.authority.sign_checkpoint(cp, self.ctx.now_ms())
        await self.store.flush()
        return sig

    async def serve_checkpoint(self, peer: bytes, req: bytes) -> bytes:
        cp = await decode_off_loop(Checkpoint.decode, req)
        return await self.sign(cp)

    def decode(self, data: bytes) -> CheckpointCert | Signed:
        """A message of the `checkpoints` topic: a checkpoint certificate or a sealed Evidence envelope."""
        wire = decode(data, max_bytes=CheckpointCert.MAX_BYTES, max_values=CheckpointCert.MAX_VALUES)
        if isinstance(wire, dict) and set(wire) == {"body", "signer", "sig"}:
            return open_signed(data, self.ctx.net_id, ed25519_verify, (Evidence,))
        return CheckpointCert.decode(data)

    async def on_gossip(self, origin: bytes, data: bytes) -> None:
        msg = self.decode(data)
        if isinstance(msg, Signed):
            fresh = self.authority.add_evidence(msg.msg, self.ctx.now_ms())
            self.ctx.metrics.inc("evidence_received" if fresh else "evidence_duplicate")
            return
        self.accept(data)

    def accept(self, data: bytes) -> str:
        """Apply a checkpoint certificate from gossip or sync, counting it; say so when it replaced a carry-over."""
        stakes = dict(self.authority.ledger.table)
        status = self.authority.accept_checkpoint(data)
        self.ctx.metrics.inc(f"checkpoints_{status}")
        if status == "applied":
            self._log_stake_changes(CheckpointCert.decode(data).checkpoint, stakes)
        if status == "adopted":
            log.warning("a checkpoint certificate arrived for an epoch carried over here: adopted it and rebuilt the "
                        "ledger from its log (%d entries dropped)", len(self.authority.dropped))
            for kind, why in self.authority.dropped:
                log.warning("dropped %s on rebuild: %s", kind, why)
        return status

    def _log_stake_changes(self, cp: Checkpoint, stakes: dict[bytes, int]) -> None:
        """An event per strike or fault the checkpoint carries and per stake it slashes (`stakes`: the table
        before it)."""
        for it in cp.items:
            if it.kind == "serve":
                event(log, "serve", account=it.account, spaces=list(self.ctx.genesis.space_book.unmask(it.value)),
                      checkpoint=cp.epoch)
            elif it.kind not in ("stake", "unstake"):
                event(log, "strike", account=it.account, kind=it.kind, epoch=it.epoch, checkpoint=cp.epoch)
        for acct, bps in slash_bps(cp.items, self.ctx.params).items():
            amount = stakes.get(acct, 0) * min(bps, 10_000) // 10_000
            if amount:
                event(log, "slash", account=acct, amount=amount, bps=min(bps, 10_000), checkpoint=cp.epoch)

    def file_evidence(self, ev: Evidence) -> None:
        """Evidence a round of ours found: into our ledger view, and gossiped if it is news."""
        self.ctx.metrics.inc("evidence")
        event(log, "strike", account=ev.offender, shard=ev.shard_id, kind=ev.kind, by=self.ctx.account)
        try:
            fresh = self.authority.add_evidence(ev, self.ctx.now_ms())
        except ProtocolError as e:
            log.warning("evidence not accepted by the ledger: %s", e)
            return
        if fresh:
            self.ctx.spawn(self.publish_evidence, ev)

    async def publish_evidence(self, ev: Evidence) -> None:
        data = seal(ev, self.ctx.signer, self.ctx.net_id).encode()
        if len(data) > CheckpointCert.MAX_BYTES:
            log.warning("evidence %s is too large to gossip (%d bytes); it stays local", ev.kind, len(data))
            return
        try:
            await self.link.host.gossip.publish("checkpoints", data)
        except Exception as e:
            log.warning("could not gossip evidence: %r", e)

    def carry_over(self) -> None:
        """The current epoch's table is still open after the grace: carry the last one over."""
        led, genesis = self.authority.ledger, self.ctx.genesis
        now = self.ctx.now_ms()
        cur = genesis.epoch(now)
        grace = min(SKIP_GRACE_MS, genesis.epoch_ms // 4)
        while led.known_through < cur and now - genesis.epoch_start(led.known_through + 1) >= grace:
            epoch = led.next_checkpoint_epoch()
            log.info("no checkpoint of epoch %d arrived: its stake table carries over", epoch)
            self.authority.skip_checkpoint(epoch)
            self.ctx.metrics.inc("checkpoints_skipped")

    async def tick(self) -> None:
        led, genesis, me = self.authority.ledger, self.ctx.genesis, self.ctx.account
        now = self.ctx.now_ms()
        epoch = led.next_checkpoint_epoch()
        if epoch < 0 or epoch in self.tried or genesis.epoch(now) != epoch + 1:
            return
        try:
            power = led.power_at(epoch + 1)
        except KeyError:
            return
        authorities = sorted(pk for pk, vp in power.items() if vp > 0)
        if me not in authorities:
            return
        rank = authorities.index(me)
        start = genesis.epoch_start(epoch + 1) + genesis.epoch_ms // 4
        if now < start + rank * genesis.epoch_ms // (4 * len(authorities)):
            return
        self.tried.add(epoch)
        try:
            await self.collect(epoch, power)
        except ProtocolError as e:
            log.warning("checkpoint %d: %s", epoch, e)

    async def collect(self, epoch: int, power: dict[bytes, int]) -> bool:
        cp = self.authority.ledger.propose_checkpoint(epoch)
        collector = CheckpointCollector(cp, self.ctx.net_id, power, ed25519_verify)
        req = cp.encode()
        result: list = []

        async def ask(pk: bytes) -> bool:
            try:
                if pk == self.ctx.account:
                    sig = await self.sign(cp)
                else:
                    sig = await self.link.host.request(pk, "checkpoint", req, timeout=VOTE_TIMEOUT)
            except Exception as e:  # a refusal (other view, already signed) or an unreachable authority
                log.info("checkpoint %d: no vote from %s: %s", epoch, pk.hex()[:16], e)
                return False
            cert = collector.add(pk, sig)
            if cert is not None and not result:
                result.append(cert)
            return bool(result)

        await ask_authorities(power, self.ctx.account, ask)
        if not result:
            log.info("checkpoint %d: no quorum (%d votes)", epoch, len(collector.votes))
            return False
        data = result[0].encode()
        status = self.accept(data)
        log.info("checkpoint %d certified with %d items: %s", epoch, len(cp.items), status)
        try:
            await self.link.host.gossip.publish("checkpoints", data)
        except Exception as e:
            log.warning("could not gossip checkpoint %d: %r", epoch, e)
        return True
