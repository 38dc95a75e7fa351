"""Shared helpers for the networking tests: real libp2p hosts in one process (imported as `netkit`)."""

import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as Noise
from libp2p.tools.anyio_service import background_trio_service

from moenode.core.codec import canonical
from moenode.core.crypto import H, ed25519_verify
from moenode.core.errors import ProtocolError
from moenode.core.messages import Certificate, Report, body_of, decode_certificate
from moenode.net import NetConfig, NetHost, open_host

NET = H("network", b"tests/net")
LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def seed(name: str) -> bytes:
    return H("key", name.encode())


def config(name: str, **kw) -> NetConfig:
    return NetConfig(seed=seed(name), net_id=kw.pop("net_id", NET), **kw)


class Inbox:
    """Collects (peer, data) pairs delivered to a handler and lets a test wait for a count."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, bytes]] = []
        self._changed = trio.Event()

    async def __call__(self, peer: bytes, data: bytes) -> None:
        self.items.append((peer, data))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, n: int) -> None:
        while len(self.items) < n:
            await self._changed.wait()


async def wait_until(pred: Callable[[], bool], step: float = 0.02) -> None:
    """Poll `pred`; the caller bounds the wait with trio.fail_after."""
    while not pred():
        await trio.sleep(step)


@contextlib.asynccontextmanager
async def hosts(*names: str, inboxes: dict[str, Inbox] | None = None, **kw) -> AsyncIterator[list[NetHost]]:
    """Open one NetHost per name (in order), each with an Inbox as on_message if `inboxes` is given."""
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for name in names:
            handler = None
            if inboxes is not None:
                handler = inboxes.setdefault(name, Inbox())
            out.append(await stack.enter_async_context(open_host(config(name, **kw), handler)))
        yield out


async def connect_all(nets: list[NetHost]) -> None:
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            await a.connect(b.addrs()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vanilla_host(security=None):
    """A standard py-libp2p host built without moenode's helpers: Noise + Yamux, or `security(key_pair)`."""
    kp = create_new_key_pair()
    if security is None:
        sec_opt = {NOISE_ID: Noise(kp, noise_privkey=x25519_key_pair().private_key)}
    else:
        sec_opt = security(kp)
    return new_host(key_pair=kp, sec_opt=sec_opt, muxer_preference="YAMUX",
                    listen_addrs=[multiaddr.Multiaddr(LOOPBACK)])


@contextlib.asynccontextmanager
async def run_vanilla(host, *services) -> AsyncIterator[None]:
    """Run a vanilla host (and libp2p services such as Pubsub/GossipSub); disconnect before leaving them."""
    async with host.run(listen_addrs=[multiaddr.Multiaddr(LOOPBACK)]), contextlib.AsyncExitStack() as stack:
        for service in services:
            await stack.enter_async_context(background_trio_service(service))
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                for p in list(host.get_connected_peers()):
                    with contextlib.suppress(Exception):
                        await host.disconnect(p)
                await trio.sleep(0.2)


def make_certificate(net_id: bytes, signers: list, tag: bytes = b"r") -> bytes:
    """A real Certificate (one Report signed by every signer), encoded as it travels on the certs topic."""
    pk = signers[0].public_key
    report = Report(
        shard_id=H("shard", tag), epoch=1, submitter=pk, data_hash=H("data", tag), nonce=H("nonce", tag),
        pay_id=H("pay", tag), fee=1000, winner=pk, producer=pk, producer_share_bps=500, model_id=H("model", tag),
        winner_digest=H("digest", tag), loss_micro=1234, item_losses=(1, 2, 3), routing=b"", strikes=(), faulty=(),
    )
    digest = H("msg", canonical(body_of(report, net_id)))
    sigs = tuple(sorted((s.public_key, s.sign(digest)) for s in signers))
    cert = Certificate(report=report, signatures=sigs)
    cert.validate()
    return cert.encode()


def certificate_ok(net_id: bytes, members: list[bytes]) -> Callable[[bytes], bool]:
    """The schema check a node would pass for the certs topic: decode and verify the quorum."""

    def check(data: bytes) -> bool:
        try:
            decode_certificate(data).check(net_id, ed25519_verify, members, 1)
            return True
        except ProtocolError:
            return False

    return check
