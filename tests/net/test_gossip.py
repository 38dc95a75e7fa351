"""Gossip between real hosts: delivery, validators (schema, size), per-peer rate limits, network isolation."""

import contextlib

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub

from moenode.core.crypto import Ed25519Signer, H
from moenode.net import Rate, topic_name
from moenode.net.host import default_limits
from netkit import NET, Inbox, certificate_ok, hosts, make_certificate, run_vanilla, seed, vanilla_host, wait_until


def vanilla_pubsub(host, cls=Pubsub):
    gs = GossipSub(protocols=[PROTOCOL_ID_V11, PROTOCOL_ID], degree=6, degree_low=4, degree_high=12,
                   heartbeat_interval=1, spam_protection_enabled=False)
    return cls(host, gs), gs


@contextlib.asynccontextmanager
async def vanilla_peer(net, kind: str, cls=Pubsub):
    """A standard libp2p peer (plain py-libp2p pubsub) in the mesh of `net`'s topic `kind`: (pubsub, topic)."""
    host = vanilla_host()
    ps, gs = vanilla_pubsub(host, cls)
    async with run_vanilla(host, ps, gs):
        await ps.wait_until_ready()
        topic = topic_name(NET, kind)
        await ps.subscribe(topic)
        await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(net.addrs()[0])))
        await wait_until(lambda: net.peer_id in gs.mesh.get(topic, set()))
        yield ps, topic


class Forger(Pubsub):
    """A standard pubsub that sends its messages starting with b"forged" with a broken origin signature."""

    async def push_msg(self, msg_forwarder, msg):
        if msg_forwarder == self.my_id and msg.data.startswith(b"forged"):
            msg.signature = bytes(len(msg.signature))
            await self.router.publish(msg_forwarder, msg)
            return
        await super().push_msg(msg_forwarder, msg)


async def test_certs_flow_and_validators_reject_bad_and_oversized():
    names = ["g0", "g1", "g2", "g3"]
    members = [Ed25519Signer(seed(n)) for n in names]
    check = certificate_ok(NET, [m.public_key for m in members])
    got = {n: Inbox() for n in names}
    with trio.fail_after(40):
        async with hosts(*names) as nets:
            for i in range(len(nets) - 1):  # a line: g0 - g1 - g2 - g3, so messages must be relayed
                await nets[i].connect(nets[i + 1].addrs()[0])
            for n, net in zip(names, nets):
                await net.gossip.subscribe("certs", got[n], check=check)
            await wait_until(lambda: all(len(net.gossip.mesh_peers("certs")) >= 1 for net in nets))

            cert = make_certificate(NET, [members[3]], tag=b"first")
            await nets[3].gossip.publish("certs", cert)
            for n in names[:3]:
                await got[n].wait_for(1)
                assert got[n].items == [(nets[3].account_id, cert)]
            assert got["g3"].items == []  # our own publish is not handed back

            # a standard peer attached to g0 publishes garbage, an oversized blob, a forged quorum, then a good cert
            async with vanilla_peer(nets[0], "certs") as (ps, topic):
                outsider = Ed25519Signer(seed("outsider"))
                await ps.publish(topic, b"\x93not a certificate")
                await ps.publish(topic, b"\0" * (nets[0].config.gossip.topic_caps["certs"] + 1))
                await ps.publish(topic, make_certificate(NET, [outsider], tag=b"forged"))
                await wait_until(lambda: nets[0].counters.rejected("malformed") == 2)
                await wait_until(lambda: nets[0].counters.rejected("oversized") == 1)
                good = make_certificate(NET, [members[0]], tag=b"second")
                await ps.publish(topic, good)
                for n in names:
                    await got[n].wait_for(2 if n != "g3" else 1)
                # only the good ones arrived, everywhere; the bad ones were not relayed past g0
                for n in names:
                    datas = [d for _, d in got[n].items]
                    assert good in datas and all(check(d) for d in datas)
                for net in nets[1:]:
                    assert net.counters.rejections() == {}


async def test_gossip_rate_limit_per_forwarder():
    limits = default_limits() | {"gossip": Rate(1.0, 3.0)}
    inbox = Inbox()
    with trio.fail_after(30):
        async with hosts("gl", limits=limits) as (net,):
            await net.gossip.subscribe("adverts", inbox)
            async with vanilla_peer(net, "adverts") as (ps, topic):
                for i in range(20):
                    await ps.publish(topic, b"advert %d" % i)
                await wait_until(lambda: len(inbox.items) + net.counters.rejected("rate_limited") == 20)
                assert 3 <= len(inbox.items) < 20
                assert net.counters.rejected("rate_limited") >= 1


async def test_topics_are_namespaced_by_network():
    other = H("network", b"another testnet")
    assert topic_name(NET, "certs") != topic_name(other, "certs")
    assert topic_name(NET, "certs").startswith(f"moenode/{NET.hex()[:16]}/")
    a_in, b_in = Inbox(), Inbox()
    with trio.fail_after(20):
        async with hosts("n1") as (a,), hosts("n2", net_id=other) as (b,):
            await a.gossip.subscribe("orders", a_in)
            await b.gossip.subscribe("orders", b_in)
            await a.connect(b.addrs()[0])
            await trio.sleep(1.5)  # give a mesh the chance to form, were the topics the same
            await a.gossip.publish("orders", b"order")
            await trio.sleep(0.5)
            assert b_in.items == [] and a.gossip.topic_peers("orders") == []


async def test_bad_origin_signatures_are_counted_and_dropped():
    inbox = Inbox()
    with trio.fail_after(30):
        async with hosts("gs") as (net,):
            await net.gossip.subscribe("adverts", inbox)
            async with vanilla_peer(net, "adverts", Forger) as (ps, topic):
                await ps.publish(topic, b"forged advert")
                await ps.publish(topic, b"honest advert")
                await inbox.wait_for(1)
                await wait_until(lambda: net.counters.rejected("bad_signature") == 1)
                assert [d for _, d in inbox.items] == [b"honest advert"]


async def test_a_refused_message_costs_its_check_and_every_copy_is_counted():
    """py-libp2p put the whole message, as protobuf text (about four characters a byte), into the error of every
    refusal: on a live node, one 1.2 MB gossip message our validator refused held the event loop for 1.3 s, and a
    copy sent again skipped our validator (and its rate limit) through the library's cache of refusals, yet paid
    the formatting again. Now refusing a message allocates nothing of its size, and each copy is checked and
    counted."""
    import tracemalloc

    from libp2p.exceptions import ValidationError
    from libp2p.pubsub.pb import rpc_pb2

    with trio.fail_after(20):
        async with hosts("refuser", "origin") as (net, origin):
            await net.gossip.subscribe("adverts", Inbox())
            big = rpc_pb2.Message(from_id=origin.peer_id.to_bytes(), data=b"\x07" * (3 << 19), seqno=b"\0" * 8,
                                  topicIDs=[topic_name(NET, "adverts")])
            tracemalloc.start()
            try:
                for _ in range(2):
                    with contextlib.suppress(ValidationError):
                        await net.gossip.pubsub.validate_msg(origin.peer_id, big)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert net.counters.rejected("oversized") == 2
            assert peak < 2 * len(big.data), peak  # reading the data copies it once; quoting it took 4x
