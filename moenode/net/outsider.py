"""An outside peer: a stock py-libp2p host (Noise, Yamux, a fresh key, no stake) that writes raw bytes on any
protocol a node serves.

The network tests and the attack suite (`moenode.testing.attacks`, `bench/attacks.py`) use it to send a node what a
hostile or broken peer could: frames py-libp2p's own handlers fail on, streams with nothing negotiated, declared
lengths that never arrive. It lives in `moenode.net` because only this package speaks libp2p; the daemon never
imports it.
"""

import contextlib
from collections.abc import AsyncIterator

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
from moenode.core.crypto import H
from moenode.net.framing import encode_frame, encode_uvarint
from moenode.net.host import NetHost

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
MULTISTREAM = b"/multistream/1.0.0\n"


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
