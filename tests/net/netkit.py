"""Shared helpers for the networking tests: real libp2p hosts in one process (imported as `netkit`)."""

import contextlib
import hashlib
import importlib
import inspect
import socket
from collections.abc import AsyncIterator, Callable

import trio

from moenode.core.codec import canonical
from moenode.core.crypto import H, ed25519_verify
from moenode.core.errors import ProtocolError
from moenode.core.messages import Certificate, Report, body_of, decode_certificate
from moenode.net import NetConfig, NetHost, open_host
from moenode.net.outsider import (  # noqa: F401 - the network tests import them from here
    attacker_of, envelope_head, run_vanilla, send_malformed_frames, send_raw, vanilla_host)

NET = H("network", b"tests/net")


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


async def echo(peer: bytes, data: bytes) -> bytes:
    """A request handler that answers with the request."""
    return data


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


@contextlib.asynccontextmanager
async def echo_pair(name: str, **kw) -> AsyncIterator[tuple[NetHost, NetHost, Inbox]]:
    """Hosts `<name>-a` and `<name>-b`, connected; b answers RPC "echo" and collects envelopes in the Inbox."""
    inboxes: dict[str, Inbox] = {}
    async with hosts(f"{name}-a", f"{name}-b", inboxes=inboxes, **kw) as (a, b):
        b.set_request_handler("echo", echo)
        await a.connect(b.addrs()[0])
        yield a, b, inboxes[f"{name}-b"]


async def connect_all(nets: list[NetHost]) -> None:
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            await a.connect(b.addrs()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def source_digest(path: str) -> str:
    """First 16 hex digits of sha256 over the source of `module:qualified.name` (a property's getter)."""
    module, _, qualname = path.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, property):
        obj = obj.fget
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


class MemoryStream:
    """The parts of a libp2p stream that moenode's readers use, over bytes in memory: for fuzzing the stream layer
    fast. Reads return at most `step` bytes; after the data, a read returns b"" (end) or, if `hang`, waits forever
    (a peer that went quiet). The real-stream versions of every path run in test_direct and test_guard."""

    class _Conn:
        def __init__(self, peer_id):
            self.peer_id = peer_id

    def __init__(self, data: bytes, peer_id, *, step: int = 1 << 30, hang: bool = False):
        self.data, self.step, self.hang = bytearray(data), step, hang
        self.muxed_conn = self._Conn(peer_id)
        self.written = bytearray()
        self.was_reset = self.closed = False

    async def read(self, n: int = -1) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.data and self.hang:
            await trio.sleep_forever()
        n = len(self.data) if n is None or n < 0 else n
        out = bytes(self.data[: min(n, self.step)])
        del self.data[: len(out)]
        return out

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.written += data

    async def reset(self) -> None:
        self.was_reset = True

    async def close(self) -> None:
        self.closed = True
