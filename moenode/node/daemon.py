"""The daemon: one `Node` wires identity, genesis, ledger, network, encoders, winner index and shard rounds.

Theory of operation: `Node(home)` reads the home directory (config.toml, key, genesis.toml; see moenode.node.config)
and opens the ledger store (replayed and re-checked) and the certificate archive. A home whose key or archive
exists but whose ledger is missing, empty or unusable is refused with one line that names the way out (`moenode
resync`): the ledger holds the vote locks, and a node that started afresh could vote twice. `Node.run()` then, in order: loads the encoder and the
router model on a worker thread, opens the winner index snapshot, starts the libp2p host (`moenode.net`) with the
round driver as its envelope handler, registers the RPCs (`order` and `checkpoint` for the authority, `proxy` for the
expert, `sync` for late joiners) and the gossip topics (`certs`, `orders`, `adverts`, `checkpoints`), starts the control
API on 127.0.0.1 (every request carries HOME/control.token: moenode.node.control_server), the advert and housekeeping loops and the catch-up sync, writes `run.json`, and serves until
`stop()`. Leaving `run()` cancels the node's tasks, saves the winner index, removes run.json and closes the
stores; the net layer disconnects every peer before the libp2p services stop (py-libp2p needs that order).

Everything that mutates protocol state runs on the trio thread; ONNX and FAISS calls go through
`trio.to_thread.run_sync`. Certificates, ours or gossiped, go through one door, `on_certificate`: verified against
the recomputed shard, archived, added to the winner index, gossiped once if ours, and settled if we won.

Rejections of peers' messages are counted by reason in the net layer's counters and logged with the peer id.
`run_node(home)` is what `moenode run` calls: it claims the home (HOME/node.lock: a second daemon on one home stops in
one line), logs to HOME/node.log, and SIGINT/SIGTERM stop the node cleanly.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import trio

from moenode.core.checkpoint import Checkpoint, CheckpointCert
from moenode.core.crypto import Ed25519Signer, ed25519_verify
from moenode.core.errors import ProtocolError, SignatureError
from moenode.core.genesis import Genesis, parse_genesis
from moenode.core.messages import Advert, Certificate, Evidence, ProxyRequest, decode_certificate, open_signed, seal
from moenode.core.orders import CertifiedOrder, OrderAnswer, OrderRequest
from moenode.node.config import LOCK_FILE, Config, atomic_write, load_config
from moenode.node.epochs import Epochs
from moenode.node.logs import event
from moenode.node.payments import ORDERS_TOPIC_CAP, Payments
from moenode.node.rounds import PROXY_RESPONSE_CAP, Rounds
from moenode.node.stages import STAGES
from moenode.node.sync import PAGE_LIMIT, Sync
from moenode.store.archive import Archive
from moenode.store.keys import load_or_create_key, load_or_create_token
from moenode.store.ledger_db import StoreError, require_ledger

log = logging.getLogger("moenode.node")

HOUSEKEEPING_S = 1.0
NEWCOMER_CHECK_S = 1.0  # how often the advert loop looks for peers it has not advertised to
NEWCOMER_DELAY_S = 2.0
INDEX_SAVE_S = 30.0
PEERS_SAVE_S = 5.0  # how often the connected peers' addresses are written to HOME/peers.json
REASON_ALIASES = {"schema": "malformed"}  # the node reports schema violations as malformed messages


class Metrics:
    """The node's own event counters (the net layer keeps its own; /metrics exports both)."""

    def __init__(self) -> None:
        self.c: Counter[str] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        self.c[name] += n

    def get(self, name: str) -> int:
        return self.c[name]


class Node:
    def __init__(self, home: str | os.PathLike, *, config: Config | None = None, genesis: Genesis | None = None):
        self.home = Path(home)
        self.config = config or load_config(self.home)
        if genesis is None:
            gpath = self.config.path("genesis")
            try:
                genesis = parse_genesis(gpath.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise FileNotFoundError(f"{gpath}: no genesis; copy the network's genesis.toml there") from None
        self.genesis = genesis
        self.params = genesis.params
        self.net_id = genesis.network_id
        ledger = self.config.path("ledger")
        try:  # before the key or the archive could be created: they are what shows this home has run
            require_ledger(ledger, [p for p in (self.config.key_path, self.config.path("certs")) if p.exists()])
        except StoreError as e:
            raise self._resync_hint(e) from None
        self.seed, _ = load_or_create_key(self.config.key_path)
        self.control_token, _ = load_or_create_token(self.config.token_path)
        self.signer = Ed25519Signer(self.seed)
        self.metrics = Metrics()
        self.archive = Archive(self.config.path("certs"))
        try:
            self.payments = Payments(self)
        except StoreError as e:
            self.archive.close()
            raise self._resync_hint(e) from None
        except BaseException:
            self.archive.close()
            raise
        abstain = self.payments.authority.votes_from_epoch
        if abstain > max(0, genesis.epoch(self.now_ms())):
            log.warning("this node's vote locks were lost (its ledger was fetched again): it votes on no order or "
                        "checkpoint before epoch %d", abstain)
        self.sync = Sync(self)
        self.epochs = Epochs(self)
        self.adverts: dict[bytes, Advert] = {}
        self.certs_done: set[bytes] = set()
        self.settling: set[bytes] = set()
        self.started_at = time.time()
        self.control_url = ""
        self.compute: Any = None
        self.index: Any = None
        self.net: Any = None
        self.rounds: Rounds | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._last_save = 0.0
        self._last_peers_save = 0.0

    @property
    def account(self) -> bytes:
        return self.signer.public_key

    def _resync_hint(self, e: StoreError) -> StoreError:
        if not e.resyncable:
            return e
        return StoreError(f"{e}. To set it aside and fetch the ledger again from peers, keeping the key (the node "
                          f"then abstains from voting for two epochs): moenode resync --home {self.home}")

    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)

    def spawn(self, fn: Callable, *args: Any) -> None:
        assert self._nursery is not None, "the node is not running"
        self._nursery.start_soon(fn, *args)

    def reject(self, peer: bytes | None, e: ProtocolError, where: str) -> None:
        reason = REASON_ALIASES.get(e.reason, e.reason)
        if self.net is not None:
            self.net.counters.reject(reason, peer, str(e), where=where)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    # lifecycle ---------------------------------------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from moenode.net import NetConfig, open_host
        from moenode.net.gossip import DEFAULT_TOPIC_CAPS, GossipConfig
        from moenode.node import control_server
        from moenode.node.compute import Compute
        from moenode.node.winner_index import WinnerIndex

        cfg, p = self.config, self.params
        self._stop = trio.Event()
        try:
            self.compute = await trio.to_thread.run_sync(Compute, cfg.model, p.router_model, p)
            for sp in (self.genesis.space_book.space(s) for s in self.served_spaces()):
                if sp.dim and sp.dim != self.compute.encoder.dim:  # its candidates would never pass the space check
                    log.warning("model %s has %d dimensions but this account serves space %s of %d: it cannot win "
                                "rounds there", cfg.model, self.compute.encoder.dim, sp.id, sp.dim)
            self.index = await trio.to_thread.run_sync(
                lambda: WinnerIndex.open(cfg.path("index"), self.compute.routing_dim, epochs=p.index_epochs,
                                         max_entries=p.index_max_entries))
            self.certs_done = await trio.to_thread.run_sync(self.archive.idents)
            await trio.to_thread.run_sync(self._reindex)
            self.rounds = Rounds(self)
            caps = dict(DEFAULT_TOPIC_CAPS, orders=ORDERS_TOPIC_CAP, checkpoints=CheckpointCert.MAX_BYTES + 1024)
            netcfg = NetConfig(seed=self.seed, net_id=self.net_id, listen=cfg.listen, bootstrap=cfg.bootstrap,
                               gossip=GossipConfig(topic_caps=caps))
            async with open_host(netcfg, on_message=self.rounds.on_envelope) as net:
                self.net = net
                self._register(net)
                await self._subscribe(net)
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self.payments.run)
                    nursery.start_soon(self.rounds.run_local_queue)
                    self.control_url = await nursery.start(control_server.serve, self, cfg.control_port)
                    nursery.start_soon(self._advert_loop)
                    nursery.start_soon(self._housekeeping)
                    nursery.start_soon(self.sync.run)
                    self._write_run_json()
                    log.info("node %s up: %s, control %s", self.account.hex()[:16], net.addrs(), self.control_url)
                    task_status.started(self)
                    await self._stop.wait()
                    log.info("node %s stopping", self.account.hex()[:16])
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self.config.run_path.unlink(missing_ok=True)
            try:
                if self.index is not None:
                    self.index.save()
            finally:
                self.archive.close()
                self.payments.close()

    def _register(self, net: Any) -> None:
        net.set_request_handler("order", self.payments.serve_order, max_request=OrderRequest.MAX_BYTES,
                                max_response=OrderAnswer.MAX_BYTES)
        net.set_request_handler("proxy", self.rounds.serve_proxy, max_request=ProxyRequest.MAX_BYTES,  # type: ignore
                                max_response=PROXY_RESPONSE_CAP)
        net.set_request_handler("checkpoint", self.epochs.serve_checkpoint, max_request=Checkpoint.MAX_BYTES,
                                max_response=1024)
        net.set_page_handler("sync", self.sync.serve_page, max_limit=PAGE_LIMIT)

    async def _subscribe(self, net: Any) -> None:
        """Gossip topics; each validator decodes and checks signatures before a message is delivered or relayed
        (a ProtocolError it raises names the rejection's reason)."""
        await net.gossip.subscribe("certs", self._on_cert_gossip, check=_shape(decode_certificate))
        await net.gossip.subscribe("orders", self.payments.on_gossip, check=_shape(
            lambda d: CertifiedOrder.decode(d, self.net_id, ed25519_verify)))
        await net.gossip.subscribe("adverts", self._on_advert, check=_shape(
            lambda d: open_signed(d, self.net_id, ed25519_verify, (Advert,))))
        await net.gossip.subscribe("checkpoints", self.epochs.on_gossip, check=_shape(self.epochs.decode))

    def _write_run_json(self) -> None:
        info = {"peer_id": str(self.net.peer_id), "addrs": self.net.addrs(), "account": self.account.hex(),
                "control_url": self.control_url, "pid": os.getpid(), "network": self.net_id.hex()}
        atomic_write(self.config.run_path, json.dumps(info, indent=1).encode(), mode=0o600)  # it names the port

    # certificates -------------------------------------------------------------------------------------------------------
    async def on_certificate(self, cert: Certificate, origin: bytes | None, pay_cert: bytes = b"",
                             publish: bool | None = None) -> bool:
        """Verify, archive, index, gossip once (ours) and settle (if we won). False if seen before or invalid."""
        cid = cert.id
        fresh = cid not in self.certs_done
        if fresh:
            try:
                self.payments.ledger.check_shard_certificate(cert)
            except ProtocolError as e:
                self.reject(origin, e, "certificate")
                return False
            self.certs_done.add(cid)
            await self._learn(cert, origin, publish if publish is not None else origin is None)
        r = cert.report
        if r.winner == self.account and pay_cert and cid not in self.settling:
            self.settling.add(cid)  # once per certificate, whichever path saw it first
            try:
                await self.payments.settle(cert, pay_cert)
                self.metrics.inc("settled")
            except Exception as e:
                self.metrics.inc("settle_failed")
                log.warning("settle of shard %s failed: %s", r.shard_id.hex()[:16], e)
        return fresh

    async def _learn(self, cert: Certificate, origin: bytes | None, publish: bool) -> None:
        cid, data, r = cert.id, cert.encode(), cert.report
        self.archive.append(cid, data)
        self.metrics.inc("certificates")
        try:
            vecs = self.rounds.routing_vectors_of(r)  # type: ignore[union-attr]
            if vecs.shape[1] == self.index.dim:
                await trio.to_thread.run_sync(self.index.add, cid, vecs, r.producer, r.item_losses, r.epoch, r.space)
        except ValueError as e:
            log.warning("certificate %s: routing vectors not indexable: %s", cid.hex()[:16], e)
        if r.winner == self.account:
            self.metrics.inc("wins")
            event(log, "win", shard=r.shard_id, fee=r.fee, loss_micro=r.loss_micro, producer=r.producer,
                  producer_share_bps=r.producer_share_bps, epoch=r.epoch)
        if self.account in r.strikes:
            event(log, "strike", account=self.account, shard=r.shard_id, kind="latency", epoch=r.epoch)
        if r.producer == self.account and r.winner != self.account:
            self.metrics.inc("proxy_wins")
        if publish:
            try:
                await self.net.gossip.publish("certs", data)
            except Exception as e:  # best effort: members and sync carry it too
                log.warning("could not gossip certificate %s: %r", cid.hex()[:16], e)

    def _reindex(self) -> None:
        """Certificates archived but missing from the index snapshot (a crash before the last save): add them."""
        after, added = 0, 0
        while True:
            rows = self.archive.page(after, 256)
            if not rows:
                break
            for seq, cid, data in rows:
                after = seq
                if not self.index.has(cid):
                    r = decode_certificate(data).report
                    vecs = np.frombuffer(r.routing, "<f2").reshape(len(r.item_losses), -1)
                    if vecs.shape[1] == self.index.dim:
                        added += self.index.add(cid, vecs, r.producer, r.item_losses, r.epoch, r.space)
        if added:
            log.info("winner index: %d entries restored from the certificate archive", added)
            self.index.trim(max(0, self.genesis.epoch(self.now_ms())))

    async def _on_cert_gossip(self, origin: bytes, data: bytes) -> None:
        await self.on_certificate(decode_certificate(data), origin)

    def on_evidence(self, ev: Evidence) -> None:
        self.metrics.inc("evidence")
        event(log, "strike", account=ev.offender, shard=ev.shard_id, kind=ev.kind, by=self.account)
        try:
            fresh = self.payments.authority.add_evidence(ev, self.now_ms())
        except ProtocolError as e:
            log.warning("evidence not accepted by the ledger: %s", e)
            return
        if fresh:
            self.spawn(self.epochs.publish_evidence, ev)

    # adverts ------------------------------------------------------------------------------------------------------------
    async def _on_advert(self, origin: bytes, data: bytes) -> None:
        env = open_signed(data, self.net_id, ed25519_verify, (Advert,))
        if env.signer != origin:
            raise SignatureError("Advert: signed by another account than its gossip origin")
        adv: Advert = env.msg  # type: ignore[assignment]
        old = self.adverts.get(env.signer)
        if old is not None and old.time_ms >= adv.time_ms:
            return
        self.adverts[env.signer] = adv
        for addr in adv.addrs:
            try:
                self.net.add_address(env.signer, addr)
            except Exception:  # an unparsable address in a valid advert: ignore that address
                continue

    def prices(self) -> dict[bytes, int]:
        return {pk: a.price for pk, a in self.adverts.items() if a.price <= 10_000}

    async def _advert_loop(self) -> None:
        """Advertise at start, every `advert_interval_s`, and soon after a peer we have not told connects: a late
        joiner learns every expert within seconds without the whole network re-advertising every few seconds (at
        one advert a second network-wide, adverts were most of a testnet's idle CPU)."""
        delays = [0.5, 1.0, 2.0]
        told: set[bytes] = set()
        while True:
            if delays:
                await trio.sleep(delays.pop(0))
            else:
                with trio.move_on_after(self.config.advert_interval_s):
                    while set(self.net.connected()) <= told:
                        await trio.sleep(NEWCOMER_CHECK_S)
                    await trio.sleep(NEWCOMER_DELAY_S)  # until the newcomer has joined the adverts mesh
            told = set(self.net.connected())
            adv = Advert(model_id=self.compute.model_id, model_name=self.compute.encoder.name[:64],
                         price=self.config.price_bps, addrs=tuple(self.net.addrs()[:8]), time_ms=self.now_ms())
            try:
                await self.net.gossip.publish("adverts", seal(adv, self.signer, self.net_id).encode())
            except Exception as e:
                log.debug("advert not published: %r", e)

    # housekeeping ---------------------------------------------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        while True:
            await trio.sleep(HOUSEKEEPING_S)
            assert self.rounds is not None
            self.rounds.prune()
            self.epochs.carry_over()
            self.spawn(self.epochs.tick)
            if time.monotonic() - self._last_peers_save > PEERS_SAVE_S:
                self._last_peers_save = time.monotonic()
                await self._remember_peers()
            if self.index.dirty and time.monotonic() - self._last_save > INDEX_SAVE_S:
                self._last_save = time.monotonic()
                epoch = max(0, self.genesis.epoch(self.now_ms()))
                await trio.to_thread.run_sync(self.index.trim, epoch)
                await trio.to_thread.run_sync(self.index.save)

    async def _remember_peers(self) -> None:
        from moenode.node.peers import remember

        connected = set(self.net.connected())
        addrs = [a.addrs[0] for pk, a in self.adverts.items() if pk in connected and a.addrs]
        try:  # reads and maybe rewrites (fsync) a file: not on the event loop
            await trio.to_thread.run_sync(remember, self.home, addrs)
        except OSError as e:  # a full disk must not stop the node; the file is only a hint for the next start
            log.warning("could not save peers.json: %s", e)

    # status -------------------------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        led, me, m = self.payments.ledger, self.account, self.metrics
        epoch = self.genesis.epoch(self.now_ms())
        lat = sorted(self.rounds.latencies) if self.rounds else []
        try:
            power = led.power_at(max(0, epoch)).get(me, 0)
        except KeyError:
            power = 0
        return {
            "peer_id": str(self.net.peer_id) if self.net else "",
            "account": me.hex(),
            "network": self.net_id.hex(),
            "addrs": self.net.addrs() if self.net else [],
            "peers": len(self.net.connected()) if self.net else 0,
            "peer_accounts": sorted(p.hex() for p in self.net.connected()) if self.net else [],
            "epoch": epoch,
            "model": self.compute.encoder.name if self.compute else self.config.model,
            "model_id": self.compute.model_id.hex() if self.compute else "",
            "spaces": list(self.served_spaces(epoch)),
            "stake": led.stake(me),
            "voting_power": power,
            **self._stake_view(epoch),
            "balance": led.balance(me),
            "sequence": led.sequence(me),
            "orders_open": len(self.payments.outgoing),  # signed by us, not yet certified and out (the outbox)
            "rounds": {k.removeprefix("rounds_"): v for k, v in sorted(m.c.items()) if k.startswith("rounds_")}
            | (self.rounds.counts() if self.rounds else {}),
            "submissions": m.get("submissions"),
            "wins": m.get("wins"),
            "certificates": m.get("certificates"),
            "proxies": {"sent": m.get("proxies_sent"), "served": m.get("proxies_served"),
                        "refused": m.get("proxies_refused"), "fallbacks": m.get("proxy_fallbacks"),
                        "wins": m.get("proxy_wins")},
            "strikes": self.payments.strikes(me),
            # two nodes hold the same ledger iff their digests match; supply must equal the genesis supply
            "ledger": {"digest": led.state_digest().hex(), "supply": led.total(), "genesis_supply": led.supply,
                       "stake_tables_through": led.known_through},
            "rejections": self.net.counters.rejections() if self.net else {},
            "sync": dict(self.sync.state),
            "index": {"entries": len(self.index) if self.index is not None else 0,
                      "producers": len(self.index.producers()) if self.index is not None else 0},
            "latency_ms": {"rounds": len(lat), "p50": lat[len(lat) // 2] if lat else None,
                           "max": lat[-1] if lat else None},
            "adverts": len(self.adverts),
            "uptime_s": int(time.time() - self.started_at),
            "cpu_stages": STAGES.snapshot(),  # thread CPU seconds by stage of round work, this process
            # rounds, wins, proxies, submissions, certificates and rejections count from this start
            "counters_since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
        }

    def served_spaces(self, epoch: int | None = None) -> tuple[str, ...]:
        """The spaces this node's account serves in `epoch` (default: the newest fixed one), by the ledger: its
        genesis declaration, or the one its last checkpointed Stake made (protocol/spaces.md 3.2)."""
        led = self.payments.ledger
        e = led.known_through if epoch is None else min(max(0, epoch), led.known_through)
        return led.space_book_at(e).serves(self.account)

    def model_spaces(self) -> tuple[str, ...]:
        """The spaces of this network that the node's model belongs to (its zoo family; a model file: the default
        space), which a Stake declares; () if the genesis lists none of them."""
        from moenode.encoders import zoo

        space = zoo.space_of(self.config.model)
        return (space,) if space in self.genesis.space_book.ids() else ()

    def _stake_view(self, epoch: int) -> dict[str, Any]:
        """Where this node's stake is on its way: `bonding` (placed, not yet in a stake table), the stake of every
        table already fixed from this epoch on, and the first epoch in which it is a member."""
        led, me = self.payments.ledger, self.account
        ahead = {e: led.stakes_at(e).get(me, 0) for e in range(max(0, epoch), led.known_through + 1)}
        member_from = next((e for e, v in ahead.items() if v > 0), None)
        return {"bonding": led.bonding.get(me, 0), "stake_by_epoch": {str(e): v for e, v in ahead.items()},
                "member_from_epoch": member_from}

    def counters(self) -> dict[str, int]:
        out = {f"node_{k}": v for k, v in self.metrics.c.items()}
        if self.net is not None:
            out |= {f"net_{k.replace('.', '_')}": v for k, v in self.net.metrics().items()}
        return out


def _shape(decoder: Callable[[bytes], Any]) -> Callable[[bytes], bool]:
    """A gossip validator from a decoder: True if it decodes; its ProtocolError names the rejection's reason."""
    def check(data: bytes) -> bool:
        decoder(data)
        return True
    return check


# the command's entry point ----------------------------------------------------------------------------------------------
def setup_logging(config: Config) -> None:
    from moenode.node.logs import log_to_file

    log_to_file(config.path("log"), config.log_level, config.log_format)


def hold_home(home: Path) -> IO[bytes]:
    """Claim `home` for this process: an exclusive lock on HOME/node.lock, which the kernel releases when the
    process ends, however it ends. Keep the returned file open for as long as the node runs.

    Two daemons on one home share its ledger and outbox but each keeps its own view in memory: each could sign a
    different order of the node's account at one sequence (which can lock that sequence for good), and both speak
    on the network as one peer. Raises StoreError (one line) if another process holds the home."""
    f = (home / LOCK_FILE).open("ab")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        run = home / "run.json"
        raise StoreError(f"another node is running in {home} (see {run}); stop it before starting this one",
                         resyncable=False) from None
    return f


async def run_node(home: str | os.PathLike, *, config: Config | None = None, log_to_file: bool = True,
                   task_status: Any = trio.TASK_STATUS_IGNORED, **overrides: Any) -> None:
    """Run the node of `home` until SIGINT/SIGTERM (or cancellation); shut down cleanly. A home another process is
    running is refused (`hold_home`)."""
    cfg = config or load_config(home)
    if overrides:
        cfg = replace(cfg, **overrides)
    from moenode.node.peers import bootstrap_with_peers
    from moenode.node.ports import check_ports_free

    with hold_home(Path(home)):  # released when the node stops, or by the kernel if the process dies
        check_ports_free(cfg.listen, cfg.control_port)
        cfg = replace(cfg, bootstrap=bootstrap_with_peers(Path(home), cfg.bootstrap))
        if log_to_file:
            setup_logging(cfg)
        node = Node(home, config=cfg)
        async with trio.open_nursery() as n:
            async def on_signals() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for sig in signals:
                        log.info("signal %s: stopping", signal.Signals(sig).name)
                        node.stop()
                        return

            n.start_soon(on_signals)
            await node.run(task_status=task_status)  # returns once stopped, after a clean shutdown
            n.cancel_scope.cancel()
