"""Shared helpers for the networking tests: real libp2p hosts in one process (imported as `netkit`)."""

import contextlib
import hashlib
import importlib
import inspect
import socket
from collections.abc import AsyncIterator, Callable

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.identity.identify_push.identify_push import ID_PUSH
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as Noise
from libp2p.tools.anyio_service import background_trio_service

from moenode.core.codec import canonical
from moenode.core.crypto import H, ed25519_verify
from moenode.core.errors import ProtocolError
from moenode.core.messages import Certificate, Report, body_of, decode_certificate
from moenode.net import NetConfig, NetHost, open_host
from moenode.net.framing import encode_frame, encode_uvarint

NET = H("network", b"tests/net")
LOOPBACK = "/ip4/127.0.0.1/tcp/0"
MULTISTREAM = b"/multistream/1.0.0\n"


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


@contextlib.asynccontextmanager
async def attacker_of(victim: NetHost | str) -> AsyncIterator[tuple[object, ID]]:
    """A standard py-libp2p host (Noise, Yamux, a fresh key) connected to `victim` (a NetHost, or the multiaddr
    of any node): (host, the victim's libp2p peer id)."""
    evil = vanilla_host()
    async with run_vanilla(evil):
        info = info_from_p2p_addr(multiaddr.Multiaddr(victim if isinstance(victim, str) else victim.addrs()[0]))
        await evil.connect(info)
        yield evil, info.peer_id


async def send_raw(evil, pid: ID, proto: str, raw: bytes, *, close: bool = True):
    """Negotiate `proto` on a new stream from `evil`, write `raw` as is, and return the stream (None if it could
    not be opened). The victim may refuse or reset the stream at any point, so errors are ignored."""
    stream = None
    with contextlib.suppress(Exception):
        stream = await evil.new_stream(pid, [proto])
        await stream.write(raw)
        if close:
            await stream.close()
    return stream


def line(text: bytes) -> bytes:
    """One multistream-select line: uvarint length, the text, a newline."""
    return encode_uvarint(len(text) + 1) + text + b"\n"


async def send_unnegotiated(evil, pid: ID, raw: bytes) -> None:
    """Open a Yamux stream and write `raw` with no protocol negotiated first."""
    stream = await evil.get_network().connections[pid][0].new_stream()
    try:
        await stream.write(raw)
        await stream.close()
    except Exception:  # the victim may reset first
        pass


def publish_rpc(topic: str, **message) -> bytes:
    rpc = rpc_pb2.RPC(publish=[rpc_pb2.Message(topicIDs=[topic], **message)])
    return encode_frame(rpc.SerializeToString())


def envelope_head(length: int) -> bytes:
    """A well-formed message header declaring `length` bytes (whose hash nothing will match)."""
    return encode_frame(canonical({"len": length, "hash": H("transfer", b"never sent")}))


def malformed_frames(topic: str) -> list[tuple[str, bytes]]:
    """(protocol, bytes) that py-libp2p's own handlers fail on; each of the first four made a node exit before its
    handlers were contained. `topic` is a gossip topic the victim serves."""
    rsa_style_origin = b"\x12\x20" + b"\x07" * 32  # a sha256 peer id: its key must come in `key`
    return [
        (PROTOCOL_ID_V11, b"\x02\x0a\xff"),  # field 1, length-delimited, length 255: truncated
        (PROTOCOL_ID_V11, encode_frame(b"\xff" * 9)),  # not protobuf at all
        (PROTOCOL_ID_V11, encode_uvarint(1 << 40)),  # a frame claiming a terabyte
        (PROTOCOL_ID_V11, publish_rpc(topic, from_id=rsa_style_origin, data=b"x", seqno=b"\0" * 8,
                                      signature=b"s", key=b"\x08\x01\x12\x03abc")),  # garbage key
        (ID_PUSH, encode_frame(b"\x0a\xff")),  # identify push: a truncated field
        (ID_PUSH, encode_uvarint(1 << 30)),  # identify push claiming a gigabyte
    ]


async def send_malformed_frames(evil, pid: ID, topic: str) -> int:
    """Send every `malformed_frames` on a stream of its own, then a multistream line that is not UTF-8 before any
    protocol. Returns how many refusals the victim should count against `evil`."""
    frames = malformed_frames(topic)
    for proto, raw in frames:
        await send_raw(evil, pid, proto, raw)
    await send_unnegotiated(evil, pid, line(MULTISTREAM[:-1]) + line(b"\xff\xfe"))
    return len(frames) + 1


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
