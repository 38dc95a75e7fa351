"""A standard py-libp2p peer (Noise + Yamux, none of moenode's helpers) talks to a moenode host; plaintext does not."""

import multiaddr
import pytest
import trio
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.host.ping import PingService
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.identity.identify.identify import parse_identify_response
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from moenode.core.crypto import Ed25519Signer
from moenode.net import PeerUnreachable, account_id_of, topic_name
from moenode.net.direct import envelope_protocol
from netkit import NET, certificate_ok, hosts, make_certificate, run_vanilla, seed, vanilla_host, wait_until


async def read_all(stream) -> bytes:
    out = b""
    while True:
        try:
            part = await stream.read(65536)
        except EOFError:
            return out
        if not part:
            return out
        out += part


async def test_standard_peer_identify_ping_and_certs():
    member = Ed25519Signer(seed("interop"))
    with trio.fail_after(30):
        async with hosts("interop") as (net,):
            std = vanilla_host()
            gs = GossipSub(protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID], degree=6, degree_low=4,
                           degree_high=12)
            ps = Pubsub(std, gs)
            async with run_vanilla(std, ps, gs):
                await ps.wait_until_ready()
                info = info_from_p2p_addr(multiaddr.Multiaddr(net.addrs()[0]))
                await std.connect(info)
                assert net.is_connected(account_id_of(std.get_id()))

                s = await std.new_stream(info.peer_id, [IDENTIFY])
                ident = parse_identify_response(await read_all(s))
                assert deserialize_public_key(ident.public_key).to_bytes() == net.account_id
                assert envelope_protocol(NET) in ident.protocols
                assert "/meshsub/1.1.0" in ident.protocols and "/meshsub/1.2.0" not in ident.protocols

                rtts = await PingService(std).ping(info.peer_id, ping_amt=3)
                assert len(rtts) == 3

                topic = topic_name(NET, "certs")
                sub = await ps.subscribe(topic)
                await wait_until(lambda: account_id_of(std.get_id()) in net.gossip.topic_peers("certs"))
                cert = make_certificate(NET, [member])
                await net.gossip.publish("certs", cert)
                with trio.fail_after(10):
                    msg = await sub.get()
                assert msg.data == cert and ID(msg.from_id) == net.peer_id
                assert certificate_ok(NET, [member.public_key])(msg.data)


async def test_plaintext_peer_is_refused_both_ways():
    with trio.fail_after(20):
        async with hosts("noise-only") as (net,):
            plain = vanilla_host(lambda kp: {PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)})
            async with run_vanilla(plain):
                info = info_from_p2p_addr(multiaddr.Multiaddr(net.addrs()[0]))
                with pytest.raises(Exception):  # libp2p's SwarmDialAllFailedError: no common security protocol
                    with trio.fail_after(5):
                        await plain.connect(info)
                assert plain.get_connected_peers() == []
                assert not net.is_connected(account_id_of(plain.get_id()))
                addr = f"{plain.get_addrs()[0]}"
                with pytest.raises(PeerUnreachable):
                    await net.connect(addr)
                assert net.connected() == []
