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

from moenode.core.crypto import H
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


def vanilla_host(sec_opt=None):
    """A standard py-libp2p host built without moenode's helpers: Noise + Yamux (or the given security)."""
    kp = create_new_key_pair()
    if sec_opt is None:
        sec_opt = {NOISE_ID: Noise(kp, noise_privkey=x25519_key_pair().private_key)}
    return new_host(key_pair=kp, sec_opt=sec_opt, muxer_preference="YAMUX",
                    listen_addrs=[multiaddr.Multiaddr(LOOPBACK)])


@contextlib.asynccontextmanager
async def run_vanilla(host) -> AsyncIterator[None]:
    async with host.run(listen_addrs=[multiaddr.Multiaddr(LOOPBACK)]):
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                for p in list(host.get_connected_peers()):
                    with contextlib.suppress(Exception):
                        await host.disconnect(p)
                await trio.sleep(0.2)
