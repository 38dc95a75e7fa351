"""The daemon: `Node` is the composition root that builds the node's parts and wires them together.

Theory of operation: `Node(home)` reads the home directory (config.toml, key, genesis.toml; see moenode.node.config)
and opens the ledger store (replayed and re-checked) and the certificate archive. A home whose key or archive
exists but whose ledger is missing, empty or unusable is refused with one line that names the way out (`moenode
resync`): the ledger holds the vote locks, and a node that started afresh could vote twice. It then builds one
`Context` (`moenode.node.context`: signer, genesis, clock, counters, reject, spawn) and the parts, each given the
context and only the collaborators it uses: `Payments` (ledger, authority, order desk, outbox), `Certificates`
(the door every shard certificate goes through), `Epochs` (checkpoints, evidence), `Sync` (catch-up) and
`Adverts`; no part holds the node. `Node.run()` then, in order: loads the encoder and the router model on a worker
thread, opens the winner index snapshot, builds `Rounds` (the round driver) around them and `Submitter` (our own
submissions) on it, starts the libp2p host
(`moenode.net`) with the round driver as its envelope handler, registers the RPCs (`order` and `checkpoint` for
the authority, `proxy` for the expert, `sync` for late joiners) and the gossip topics (`certs`, `orders`, `adverts`,
`checkpoints`), starts the control API on 127.0.0.1 (every request carries HOME/control.token:
moenode.node.control_server, which sees the node through `control_server.Operations`), the advert and
housekeeping loops and the catch-up sync, writes `run.json`, and serves until `stop()`. Leaving `run()` cancels
the node's tasks, saves the winner index, removes run.json and closes the stores; the net layer disconnects every
peer before the libp2p services stop (py-libp2p needs that order).

Everything that mutates protocol state runs on the trio thread; ONNX and FAISS calls, and the ledger store's
writes (`moenode.node.writer`), go through `trio.to_thread.run_sync`. Time comes from one `Clock` (wall time for
the protocol; trio's clock for every timer), so a test can run the node's parts on virtual time.

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
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Callable

import trio

from moenode.core.checkpoint import Checkpoint, CheckpointCert
from moenode.core.crypto import Ed25519Signer, ed25519_verify
from moenode.core.genesis import Genesis, parse_genesis
from moenode.core.messages import ProxyRequest, decode_certificate
from moenode.core.orders import CertifiedOrder, OrderAnswer, OrderRequest
from moenode.node.adverts import Adverts
from moenode.node.certificates import Certificates
from moenode.node.config import LOCK_FILE, Config, atomic_write, load_config
from moenode.node.context import Clock, Context, Metrics, NetLink, Tasks
from moenode.node.epochs import Epochs
from moenode.node.payments import ORDERS_TOPIC_CAP, Payments
from moenode.node.rounds import PROXY_RESPONSE_CAP, Rounds
from moenode.node.stages import STAGES
from moenode.node.submitter import Submitter
from moenode.node.sync import PAGE_LIMIT, Sync
from moenode.node.winner_index import WinnerIndex
from moenode.store.archive import Archive
from moenode.store.keys import load_or_create_key, load_or_create_token
from moenode.store.ledger_db import StoreError, require_ledger

__all__ = ["Metrics", "Node", "hold_home", "run_node", "setup_logging"]

log = logging.getLogger("moenode.node")

HOUSEKEEPING_S = 1.0
INDEX_SAVE_S = 30.0
PEERS_SAVE_S = 5.0  # how often the connected peers' addresses are written to HOME/peers.json


class Node:
    def __init__(self, home: str | os.PathLike, *, config: Config | None = None, genesis: Genesis | None = None,
                 clock: Clock | None = None):
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
        self.clock = clock or Clock()
        ledger = self.config.path("ledger")
        try:  # before the key or the archive could be created: they are what shows this home has run
            require_ledger(ledger, [p for p in (self.config.key_path, self.config.path("certs")) if p.exists()])
        except StoreError as e:
            raise self._resync_hint(e) from None
        self.seed, _ = load_or_create_key(self.config.key_path)
        self.control_token, _ = load_or_create_token(self.config.token_path)
        self.signer = Ed25519Signer(self.seed)
        self.metrics = Metrics()
        self.link = NetLink()
        self.tasks = Tasks()
        self.ctx = Context(self.signer, genesis, self.clock, self.metrics, self.link.reject, self.tasks.spawn)
        self.archive = Archive(self.config.path("certs"))
        try:
            self.payments = Payments(self.ctx, ledger, self.link)
        except StoreError as e:
            self.archive.close()
            raise self._resync_hint(e) from None
        except BaseException:
            self.archive.close()
            raise
        abstain = self.payments.authority.votes_from_epoch
        if abstain > self.ctx.epoch():
            log.warning("this node's vote locks were lost (its ledger was fetched again): it votes on no order or "
                        "checkpoint before epoch %d", abstain)
        self.certificates = Certificates(self.ctx, self.archive, self.payments, self.link)
        self.epochs = Epochs(self.ctx, self.payments.authority, self.payments.store, self.link)
        self.sync = Sync(self.ctx, self.link, self.payments, self.epochs, self.certificates)
        self.adverts = Adverts(self.ctx, self.link, self.config.price_bps, self.config.advert_interval_s)
        self.started_at = self.clock.now_ms()
        self.control_url = ""
        self.compute: Any = None
        self.rounds: Rounds | None = None
        self.submitter: Submitter | None = None
        self._stop: trio.Event | None = None

    # the parts' shared pieces, as the node's own attributes ---------------------------------------------------------
    @property
    def account(self) -> bytes:
        return self.signer.public_key

    @property
    def net(self) -> Any:
        """The libp2p host while the node runs (a test may attach one of its own)."""
        return self.link.host

    @net.setter
    def net(self, host: Any) -> None:
        self.link.host = host

    @property
    def index(self) -> WinnerIndex | None:
        return self.certificates.index

    @index.setter
    def index(self, index: WinnerIndex | None) -> None:
        self.certificates.index = index

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def _resync_hint(self, e: StoreError) -> StoreError:
        if not e.resyncable:
            return e
        return StoreError(f"{e}. To set it aside and fetch the ledger again from peers, keeping the key (the node "
                          f"then abstains from voting for two epochs): moenode resync --home {self.home}")

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    # lifecycle ---------------------------------------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from moenode.net import NetConfig, open_host
        from moenode.net.gossip import DEFAULT_TOPIC_CAPS, GossipConfig
        from moenode.node import control_server
        from moenode.node.compute import Compute

        cfg, p = self.config, self.params
        self._stop = trio.Event()
        try:
            self.compute = compute = await trio.to_thread.run_sync(Compute, cfg.model, p.router_model, p)
            for sp in (self.genesis.space_book.space(s) for s in self.payments.served_spaces()):
                if sp.dim and sp.dim != compute.encoder.dim:  # its candidates would never pass the space check
                    log.warning("model %s has %d dimensions but this account serves space %s of %d: it cannot win "
                                "rounds there", cfg.model, compute.encoder.dim, sp.id, sp.dim)
            self.index = index = await trio.to_thread.run_sync(
                lambda: WinnerIndex.open(cfg.path("index"), compute.routing_dim, epochs=p.index_epochs,
                                         max_entries=p.index_max_entries))
            self.certificates.done = await trio.to_thread.run_sync(self.archive.idents)
            await trio.to_thread.run_sync(self.certificates.reindex)
            self.rounds = rounds = Rounds(
                self.ctx, self.link, payments=self.payments, compute=compute, index=index, config=cfg,
                prices=self.adverts.prices, on_certificate=self.certificates.on_certificate,
                on_evidence=self.epochs.file_evidence)
            self.submitter = Submitter(self.ctx, rounds, self.payments, cfg.submit_space,
                                       self.certificates.on_certificate)
            caps = dict(DEFAULT_TOPIC_CAPS, orders=ORDERS_TOPIC_CAP, checkpoints=CheckpointCert.MAX_BYTES + 1024)
            netcfg = NetConfig(seed=self.seed, net_id=self.net_id, listen=cfg.listen, bootstrap=cfg.bootstrap,
                               gossip=GossipConfig(topic_caps=caps))
            async with open_host(netcfg, on_message=rounds.on_envelope) as net:
                self.net = net
                self._register(net, rounds)
                await self._subscribe(net)
                ops = control_server.Operations(self.control_token, self.metrics, self.status, self.counters,
                                                cfg, self.submitter, self.payments)
                async with trio.open_nursery() as nursery:
                    self.tasks.nursery = nursery
                    nursery.start_soon(self.payments.run)
                    nursery.start_soon(rounds.run_local_queue)
                    self.control_url = await nursery.start(control_server.serve, ops, cfg.control_port)
                    nursery.start_soon(self.adverts.run, compute)
                    nursery.start_soon(self._housekeeping, rounds, index)
                    nursery.start_soon(self.sync.run)
                    await trio.to_thread.run_sync(self._write_run_json)  # an fsync: off the event loop
                    log.info("node %s up: %s, control %s", self.account.hex()[:16], net.addrs(), self.control_url)
                    task_status.started(self)
                    await self._stop.wait()
                    log.info("node %s stopping", self.account.hex()[:16])
                    nursery.cancel_scope.cancel()
        finally:
            self.tasks.nursery = None
            self.config.run_path.unlink(missing_ok=True)
            try:
                if self.index is not None:
                    self.index.save()
            finally:
                self.archive.close()
                self.payments.close()

    def _register(self, net: Any, rounds: Rounds) -> None:
        net.set_request_handler("order", self.payments.serve_order, max_request=OrderRequest.MAX_BYTES,
                                max_response=OrderAnswer.MAX_BYTES)
        net.set_request_handler("proxy", rounds.serve_proxy, max_request=ProxyRequest.MAX_BYTES,
                                max_response=PROXY_RESPONSE_CAP)
        net.set_request_handler("checkpoint", self.epochs.serve_checkpoint, max_request=Checkpoint.MAX_BYTES,
                                max_response=1024)
        net.set_page_handler("sync", self.sync.serve_page, max_limit=PAGE_LIMIT)

    async def _subscribe(self, net: Any) -> None:
        """Gossip topics; each validator decodes and checks signatures before a message is delivered or relayed
        (a ProtocolError it raises names the rejection's reason)."""
        await net.gossip.subscribe("certs", self.certificates.on_gossip, check=_shape(decode_certificate))
        await net.gossip.subscribe("orders", self.payments.on_gossip, check=_shape(
            lambda d: CertifiedOrder.decode(d, self.net_id, ed25519_verify)))
        await net.gossip.subscribe("adverts", self.adverts.on_gossip, check=_shape(self.adverts.decode))
        await net.gossip.subscribe("checkpoints", self.epochs.on_gossip, check=_shape(self.epochs.decode))

    def _write_run_json(self) -> None:
        info = {"peer_id": str(self.net.peer_id), "addrs": self.net.addrs(), "account": self.account.hex(),
                "control_url": self.control_url, "pid": os.getpid(), "network": self.net_id.hex()}
        atomic_write(self.config.run_path, json.dumps(info, indent=1).encode(), mode=0o600)  # it names the port

    # housekeeping ---------------------------------------------------------------------------------------------------------
    async def _housekeeping(self, rounds: Rounds, index: WinnerIndex) -> None:
        last_save = last_peers_save = float("-inf")  # the first tick saves both
        while True:
            await trio.sleep(HOUSEKEEPING_S)
            rounds.prune()
            if not self.sync.busy:  # the history being fetched may hold the checkpoint
                self.epochs.carry_over()
            self.tasks.spawn(self.epochs.tick)
            now = self.clock.timer()
            if now - last_peers_save > PEERS_SAVE_S:
                last_peers_save = now
                await self._remember_peers()
            if index.dirty and now - last_save > INDEX_SAVE_S:
                last_save = now
                await trio.to_thread.run_sync(index.trim, self.ctx.epoch())
                await trio.to_thread.run_sync(index.save)

    async def _remember_peers(self) -> None:
        from moenode.node.peers import remember

        connected = set(self.link.connected())
        addrs = [a.addrs[0] for pk, a in self.adverts.known.items() if pk in connected and a.addrs]
        try:  # reads and maybe rewrites (fsync) a file: not on the event loop
            await trio.to_thread.run_sync(remember, self.home, addrs)
        except OSError as e:  # a full disk must not stop the node; the file is only a hint for the next start
            log.warning("could not save peers.json: %s", e)

    # status -------------------------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        led, me, m = self.payments.ledger, self.account, self.metrics
        epoch = self.genesis.epoch(self.now_ms())
        lat = sorted(self.rounds.latencies) if self.rounds else []
        net, index = self.net, self.index
        try:
            power = led.power_at(max(0, epoch)).get(me, 0)
        except KeyError:
            power = 0
        return {
            "peer_id": str(net.peer_id) if net else "",
            "account": me.hex(),
            "network": self.net_id.hex(),
            "addrs": net.addrs() if net else [],
            "peers": len(net.connected()) if net else 0,
            "peer_accounts": sorted(p.hex() for p in net.connected()) if net else [],
            "epoch": epoch,
            "model": self.compute.encoder.name if self.compute else self.config.model,
            "model_id": self.compute.model_id.hex() if self.compute else "",
            "spaces": list(self.payments.served_spaces(epoch)),
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
            "rejections": net.counters.rejections() if net else {},
            "sync": dict(self.sync.state),
            "index": {"entries": len(index) if index is not None else 0,
                      "producers": len(index.producers()) if index is not None else 0},
            "latency_ms": {"rounds": len(lat), "p50": lat[len(lat) // 2] if lat else None,
                           "max": lat[-1] if lat else None},
            "adverts": len(self.adverts.known),
            "uptime_s": (self.now_ms() - self.started_at) // 1000,
            "cpu_stages": STAGES.snapshot(),  # thread CPU seconds by stage of round work, this process
            # rounds, wins, proxies, submissions, certificates and rejections count from this start
            "counters_since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at / 1000)),
        }

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
