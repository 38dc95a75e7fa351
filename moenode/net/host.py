"""The node's network: one libp2p host with direct protocols, gossip, bootstrap and counters.

Theory of operation: `open_host(config, on_message)` is an async context manager that builds the host from the
node's 32-byte seed (`identity.py`), starts it listening, runs the Pubsub and GossipSub services, and starts a
bootstrap task; it yields a `NetHost`, the one object the node drives:

    async with open_host(NetConfig(seed=..., net_id=...), on_message=node.on_envelope) as net:
        await net.gossip.subscribe("certs", node.on_cert, check=node.cert_shape_ok)
        await net.send(peer_account_id, envelope_bytes)
        reply = await net.request(peer_account_id, "sync", query)

Peers are named by account id (the raw 32-byte Ed25519 key) everywhere in this API; libp2p peer ids stay inside.

Before anything is registered on it, the host is guarded (`guard.py`, `NetConfig.guard`): every stream handler's
failures stay in its stream and are counted against the peer, and streams per peer, connections per IP, partial
messages and reading time are bounded.

Bootstrap: each configured multiaddr (`/ip4/../tcp/../p2p/12D3KooW..`) is dialled in the background with
exponential backoff (0.25 s doubling to 10 s) and redialled whenever it is not connected, so a restarted bootstrap
peer is found again without the node doing anything.

Shutdown order matters in py-libp2p (leaving the service contexts with live connections raises from inside its
nurseries): on exit we stop our own tasks, close the listeners (so nobody redials us meanwhile), disconnect every
peer, sleep briefly, and only then leave the Pubsub, GossipSub and host contexts.

Logging goes to the `moenode.net` logger with a `peer` field on each record; the `libp2p` logger is set to
propagate so that the node's logging configuration captures it as well.
"""

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.network.swarm import Swarm
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service

from moenode.core.errors import ProtocolError
from moenode.net.direct import (
    Direct,
    DirectConfig,
    MessageHandler,
    PageHandler,
    PeerUnreachable,
    RequestHandler,
)
from moenode.net.gossip import Gossip, GossipConfig
from moenode.net.guard import Guard, GuardConfig
from moenode.net.identity import DEFAULT_LISTEN, account_id_of, key_pair_from_seed, make_libp2p_host, peer_id_of
from moenode.net.limits import Counters, Rate, RateLimiter, short

log = logging.getLogger("moenode.net")
logging.getLogger("libp2p").propagate = True  # py-libp2p turns propagation off on import
# py-libp2p pins this one logger to INFO and it reports an idle dial loop every few seconds.
logging.getLogger("libp2p.network.auto_connector").setLevel(logging.WARNING)

SHUTDOWN_GRACE = 0.3  # seconds between disconnecting peers and leaving libp2p's service contexts


def default_limits() -> dict[str, Rate]:
    # Generous for honest peers (a shard round is a few dozen envelopes), tight enough to blunt a flood.
    return {"envelope": Rate(200.0, 400.0), "request": Rate(50.0, 100.0), "gossip": Rate(100.0, 200.0)}


@dataclass(frozen=True)
class NetConfig:
    seed: bytes
    net_id: bytes
    listen: Sequence[str] = DEFAULT_LISTEN
    bootstrap: Sequence[str] = ()
    limits: dict[str, Rate] = field(default_factory=default_limits)
    direct: DirectConfig = field(default_factory=DirectConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    backoff_min: float = 0.25
    backoff_max: float = 10.0
    bootstrap_tick: float = 0.5


class NetHost:
    """What the node uses. Built and run by `open_host`."""

    def __init__(self, config: NetConfig, host: IHost, on_message: MessageHandler | None):
        if len(config.net_id) != 32:
            raise ValueError("net_id is the 32-byte network id")
        self.config = config
        self.host = host
        self.net_id = config.net_id
        self.account_id: bytes = key_pair_from_seed(config.seed).public_key.to_bytes()
        self.peer_id = host.get_id()
        self.counters = Counters()
        self.limiter = RateLimiter(config.limits)
        self.guard = Guard(host, self.counters, config.guard)
        self.guard.install()
        self.direct = Direct(host, config.net_id, self.counters, self.limiter, config.direct, on_message, self.guard)
        self.gossip = Gossip(host, config.net_id, self.counters, self.limiter, config.gossip, self.guard)
        self._bootstrap_peers: list[tuple[bytes, str]] = []
        for addr in config.bootstrap:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            self._bootstrap_peers.append((account_id_of(info.peer_id), addr))

    # peers ----------------------------------------------------------------------------------------------------------
    def addrs(self) -> list[str]:
        """Our dialable multiaddrs, each ending in /p2p/<peer id>."""
        return [str(a) for a in self.host.get_addrs()]

    async def connect(self, addr: str, *, timeout: float = 5.0) -> bytes:
        """Dial a `/.../p2p/<id>` multiaddr; return the peer's account id. Raises PeerUnreachable."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        peer = account_id_of(info.peer_id)
        # libp2p refuses to redial a peer for 60 s after all its addresses failed; an explicit connect (and the
        # bootstrap loop, which keeps its own backoff) should try now.
        cast(Swarm, self.host.get_network()).unblock_peer(info.peer_id)  # the interface lacks it; our hosts' has it
        try:
            with trio.fail_after(timeout):
                await self.host.connect(info)
        except Exception as e:  # dial errors come in many libp2p types (and TooSlowError)
            raise PeerUnreachable(f"cannot connect to {addr}: {e!r:.200}") from e
        self.counters.incr("connected")
        return peer

    def add_address(self, account_id: bytes, addr: str, ttl: int = 3600) -> None:
        """Tell the peerstore where an account can be dialled (e.g. from its Advert); `send` dials on demand."""
        self.host.get_peerstore().add_addrs(peer_id_of(account_id), [multiaddr.Multiaddr(addr)], ttl)

    async def disconnect(self, account_id: bytes) -> None:
        self.direct.forget(account_id)
        await self.host.disconnect(peer_id_of(account_id))

    def connected(self) -> list[bytes]:
        out = []
        for pid in self.host.get_connected_peers():
            with contextlib.suppress(ProtocolError):  # a non-Ed25519 peer has no account
                out.append(account_id_of(pid))
        return out

    @property
    def bootstrap_accounts(self) -> list[bytes]:
        """Account ids of the configured bootstrap peers."""
        return [peer for peer, _ in self._bootstrap_peers]

    def is_connected(self, account_id: bytes) -> bool:
        return peer_id_of(account_id) in self.host.get_connected_peers()

    # direct protocols -------------------------------------------------------------------------------------------------
    async def send(self, peer: bytes, data: bytes) -> None:
        """Deliver one envelope (bytes) to the peer's `on_message`; reuses one open stream per peer."""
        await self.direct.send(peer, data)

    async def request(self, peer: bytes, name: str, data: bytes, *, timeout: float | None = None) -> bytes:
        return await self.direct.request(peer, name, data, timeout=timeout)

    def set_request_handler(
        self, name: str, handler: RequestHandler, *, max_request: int | None = None, max_response: int | None = None
    ) -> None:
        self.direct.set_handler(name, handler, max_request=max_request, max_response=max_response)

    def set_page_handler(self, name: str, handler: PageHandler, *, max_limit: int = 256) -> None:
        self.direct.set_page_handler(name, handler, max_limit=max_limit)

    def iter_pages(self, peer: bytes, name: str, query: bytes, *, cursor: bytes = b"", limit: int = 256):
        return self.direct.iter_pages(peer, name, query, cursor=cursor, limit=limit)

    # counters -------------------------------------------------------------------------------------------------------
    def report(self, peer: bytes | None, error: ProtocolError, *, where: str = "node") -> None:
        """Count and log a peer's bad message found by the node (bad_signature, wrong_network, schema, ...)."""
        self.counters.reject(error.reason, peer, str(error), where=where)

    def metrics(self) -> dict[str, int]:
        m = self.counters.snapshot()
        m["peers"] = len(self.host.get_connected_peers())
        return m

    # background -----------------------------------------------------------------------------------------------------
    async def _bootstrap_loop(self) -> None:
        """Keep every bootstrap peer connected, with per-address exponential backoff. A peer that stays away is
        logged once when it is first missed and once when it is back, not at every retry."""
        cfg = self.config
        state = {addr: (0.0, cfg.backoff_min) for _, addr in self._bootstrap_peers}  # next try, next backoff
        missing: set[bytes] = set()
        while True:
            now = trio.current_time()
            for peer, addr in self._bootstrap_peers:
                due, backoff = state[addr]
                if peer == self.account_id or self.is_connected(peer) or now < due:
                    continue
                try:
                    await self.connect(addr)
                    state[addr] = (0.0, cfg.backoff_min)
                    log.info("bootstrap peer %s connected", short(peer), extra={"peer": peer.hex(), "addr": addr})
                    missing.discard(peer)
                except PeerUnreachable as e:
                    self.counters.incr("bootstrap.failed")
                    state[addr] = (trio.current_time() + backoff, min(cfg.backoff_max, backoff * 2))
                    if peer not in missing:
                        missing.add(peer)
                        log.info("bootstrap peer %s unreachable, retrying with backoff up to %.0fs: %s", short(peer),
                                 cfg.backoff_max, e, extra={"peer": peer.hex(), "addr": addr})
            await trio.sleep(cfg.bootstrap_tick)

    async def _disconnect_all(self) -> None:
        # Stop accepting first: a peer redialling us during the grace period would race the teardown.
        network = self.host.get_network()
        for listener in list(getattr(network, "listeners", {}).values()):
            with contextlib.suppress(Exception):  # closing twice is fine; libp2p closes them again later
                await listener.close()
        for pid in list(self.host.get_connected_peers()):
            with contextlib.suppress(Exception):  # a peer that is already going away
                await self.host.disconnect(pid)
        self.direct._out.clear()
        self.direct._pool.clear()


@contextlib.asynccontextmanager
async def open_host(config: NetConfig, on_message: MessageHandler | None = None) -> AsyncIterator[NetHost]:
    """Run a host with Pubsub/GossipSub and bootstrap; on exit disconnect, wait, then stop in order."""
    host = make_libp2p_host(config.seed, config.listen)
    net = NetHost(config, host, on_message)
    body_error: BaseException | None = None
    try:
        async with host.run(listen_addrs=[multiaddr.Multiaddr(a) for a in config.listen]):
            async with background_trio_service(net.gossip.pubsub), background_trio_service(net.gossip.router):
                await net.gossip.pubsub.wait_until_ready()
                try:
                    async with trio.open_nursery() as nursery:
                        net.gossip._nursery = nursery
                        if net._bootstrap_peers:
                            nursery.start_soon(net._bootstrap_loop)
                        try:
                            yield net
                        except BaseException as e:
                            body_error = e
                            raise
                        finally:
                            nursery.cancel_scope.cancel()
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        await net._disconnect_all()
                        await trio.sleep(SHUTDOWN_GRACE)
                    log.debug("host %s stopped", short(net.account_id))
    except BaseExceptionGroup as group:
        # libp2p's nested nurseries wrap the caller's own exception in groups: hand it back unwrapped.
        leaves = _leaves(group)
        if body_error is not None and all(leaf is body_error for leaf in leaves):
            raise body_error from None
        raise


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out
