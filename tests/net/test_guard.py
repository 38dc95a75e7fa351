"""A peer's malformed bytes end its stream, are counted against it, and never end the node.

Each attack comes from a real py-libp2p peer that speaks Noise and Yamux but writes raw bytes where a protocol
expects a well-formed message. A 3-byte pubsub frame (`02 0a ff`, a truncated protobuf field) used to raise a
protobuf DecodeError out of py-libp2p's pubsub handler, through the swarm, and out of `open_host`: the node exited.
"""

import contextlib

import multiaddr
import trio
from libp2p.identity.identify_push.identify_push import ID_PUSH
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2

from moenode.net import account_id_of, topic_name
from moenode.net.framing import encode_frame, encode_uvarint
from netkit import NET, Inbox, hosts, run_vanilla, vanilla_host, wait_until

MULTISTREAM = b"/multistream/1.0.0\n"


def line(text: bytes) -> bytes:
    """One multistream-select line: uvarint length, the text, a newline."""
    return encode_uvarint(len(text) + 1) + text + b"\n"


@contextlib.asynccontextmanager
async def attacker_of(victim):
    """A standard py-libp2p host connected to `victim`: (host, victim's libp2p peer id)."""
    evil = vanilla_host()
    async with run_vanilla(evil):
        info = info_from_p2p_addr(multiaddr.Multiaddr(victim.addrs()[0]))
        await evil.connect(info)
        yield evil, info.peer_id


async def send_raw(evil, pid: ID, proto: str, raw: bytes, *, close: bool = True) -> None:
    """Negotiate `proto` on a new stream, then write `raw` as is (the victim may reset first)."""
    stream = await evil.new_stream(pid, [proto])
    with contextlib.suppress(Exception):
        await stream.write(raw)
        if close:
            await stream.close()


async def send_unnegotiated(evil, pid: ID, raw: bytes) -> None:
    """Open a Yamux stream and write `raw` with no protocol negotiated first."""
    conn = evil.get_network().connections[pid][0]
    stream = await conn.new_stream()
    with contextlib.suppress(Exception):
        await stream.write(raw)
        await stream.close()


def publish_rpc(topic: str, **message) -> bytes:
    rpc = rpc_pb2.RPC(publish=[rpc_pb2.Message(topicIDs=[topic], **message)])
    return encode_frame(rpc.SerializeToString())


async def test_malformed_library_protocol_frames_are_contained_and_counted():
    inboxes: dict[str, Inbox] = {}
    gossip = Inbox()
    with trio.fail_after(60):
        async with hosts("victim", "friend", inboxes=inboxes) as (victim, friend):
            async def echo(peer: bytes, data: bytes) -> bytes:
                return data

            victim.set_request_handler("echo", echo)
            await victim.gossip.subscribe("adverts", gossip)
            await friend.gossip.subscribe("adverts", Inbox())
            async with attacker_of(victim) as (evil, pid):
                attacker = account_id_of(evil.get_id())
                topic = topic_name(NET, "adverts")
                rsa_style_origin = b"\x12\x20" + b"\x07" * 32  # a sha256 peer id: its key must come in `key`
                attacks = [
                    (PROTOCOL_ID_V11, b"\x02\x0a\xff"),  # field 1, length-delimited, length 255: truncated
                    (PROTOCOL_ID_V11, encode_frame(b"\xff" * 9)),  # not protobuf at all
                    (PROTOCOL_ID_V11, encode_uvarint(1 << 40)),  # a frame claiming a terabyte
                    (PROTOCOL_ID_V11, publish_rpc(topic, from_id=rsa_style_origin, data=b"x", seqno=b"\0" * 8,
                                                  signature=b"s", key=b"\x08\x01\x12\x03abc")),  # garbage key
                    (ID_PUSH, encode_frame(b"\x0a\xff")),  # identify push: a truncated field
                    (ID_PUSH, encode_uvarint(1 << 30)),  # identify push claiming a gigabyte
                ]
                for proto, raw in attacks:
                    await send_raw(evil, pid, proto, raw)
                # before any protocol: a multistream line that is not UTF-8
                await send_unnegotiated(evil, pid, line(MULTISTREAM[:-1]) + line(b"\xff\xfe"))
                await wait_until(lambda: victim.counters.peer_rejections(attacker) >= len(attacks) + 1)

            # the victim still serves honest peers: direct requests, envelopes and gossip
            await friend.connect(victim.addrs()[0])
            assert await friend.request(victim.account_id, "echo", b"ping") == b"ping"
            await friend.send(victim.account_id, b"still alive")
            await inboxes["victim"].wait_for(1)
            await wait_until(lambda: victim.account_id in friend.gossip.mesh_peers("adverts"))
            await friend.gossip.publish("adverts", b"honest advert")
            await gossip.wait_for(1)
            assert gossip.items == [(friend.account_id, b"honest advert")]
            r = victim.counters.rejections()
            assert r["malformed"] >= 4 and r["oversized"] >= 2 and r["bad_signature"] >= 1
            assert victim.counters.peer_rejections(friend.account_id) == 0
