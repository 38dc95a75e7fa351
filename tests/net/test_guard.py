"""A peer's malformed bytes end its stream, are counted against it, and never end the node; streams, connections,
partial messages and time are bounded per peer.

Each attack comes from a real py-libp2p peer that speaks Noise and Yamux but writes raw bytes where a protocol
expects a well-formed message. A 3-byte pubsub frame (`02 0a ff`, a truncated protobuf field) used to raise a
protobuf DecodeError out of py-libp2p's pubsub handler, through the swarm, and out of `open_host`: the node exited.
Deadlines are shortened through `GuardConfig` (py-libp2p's own timers need real time).
"""

import importlib.metadata
from dataclasses import replace

import pytest
import trio
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.tools.anyio_service import Service, background_trio_service

from moenode.net import account_id_of, topic_name
from moenode.net.direct import DirectConfig, envelope_protocol, rpc_protocol
from moenode.net.framing import MiB, encode_frame, encode_uvarint
from moenode.net.guard import (
    DEFAULT_PROTOCOL_STREAMS,
    LIBP2P_VERSION,
    ContainedTasks,
    GuardConfig,
    protocol_group,
    reason_of,
)
from netkit import (
    NET,
    Inbox,
    attacker_of,
    echo,
    envelope_head,
    hosts,
    send_malformed_frames,
    send_raw,
    source_digest,
    wait_until,
)

FAST = GuardConfig(idle_timeout=0.4, read_timeout=0.4, min_read_rate=64 * MiB)


async def test_malformed_library_protocol_frames_are_contained_and_counted():
    inboxes: dict[str, Inbox] = {}
    gossip = Inbox()
    with trio.fail_after(60):
        async with hosts("victim", "friend", inboxes=inboxes) as (victim, friend):
            victim.set_request_handler("echo", echo)
            await victim.gossip.subscribe("adverts", gossip)
            await friend.gossip.subscribe("adverts", Inbox())
            async with attacker_of(victim) as (evil, pid):
                attacker = account_id_of(evil.get_id())
                sent = await send_malformed_frames(evil, pid, topic_name(NET, "adverts"))
                await wait_until(lambda: victim.counters.peer_rejections(attacker) >= sent)

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


async def test_slow_loris_streams_are_capped_and_closed_while_honest_peers_are_served():
    caps = dict(DEFAULT_PROTOCOL_STREAMS, envelopes=4)
    guard = replace(FAST, protocol_streams=caps, streams_per_peer=24)
    inboxes: dict[str, Inbox] = {}
    with trio.fail_after(60):
        async with hosts("loris-victim", "loris-friend", inboxes=inboxes, guard=guard) as (victim, friend):
            victim.set_request_handler("echo", echo)
            await friend.connect(victim.addrs()[0])
            async with attacker_of(victim) as (evil, pid):
                attacker = account_id_of(evil.get_id())
                proto = envelope_protocol(NET)
                quiet = [await send_raw(evil, pid, proto, b"", close=False) for _ in range(4)]
                refused = [await send_raw(evil, pid, proto, b"", close=False) for _ in range(3)]
                await wait_until(lambda: victim.counters.rejected("too_many_streams") == 3)
                # meanwhile an honest peer is served
                await friend.send(victim.account_id, b"hello")
                assert await friend.request(victim.account_id, "echo", b"q") == b"q"
                # the quiet streams are reset once idle; one byte into a header and silence is a read timeout
                await wait_until(lambda: victim.counters.get("streams_idle_closed") >= 4)
                await send_raw(evil, pid, proto, b"\x05", close=False)
                await wait_until(lambda: victim.counters.rejected("read_timeout") == 1)
                assert len(quiet + refused) == 7
                # over all protocols: identify streams left half-open count until the peer closes them
                for _ in range(guard.streams_per_peer + 4):
                    await send_raw(evil, pid, IDENTIFY, b"", close=False)
                await wait_until(lambda: victim.counters.rejected("too_many_streams") >= 3 + 4)
                assert victim.counters.peer_rejections(attacker) >= 3 + 1 + 4
            await friend.send(victim.account_id, b"after")
            await inboxes["loris-victim"].wait_for(2)
            assert [d for _, d in inboxes["loris-victim"].items] == [b"hello", b"after"]
            assert victim.counters.peer_rejections(friend.account_id) == 0


async def test_partial_messages_hold_budgeted_memory_until_their_deadline():
    guard = replace(FAST, read_timeout=0.6, partial_bytes=8 * MiB, partial_bytes_per_peer=6 * MiB)
    direct = DirectConfig(envelope_cap=4 * MiB)
    inboxes: dict[str, Inbox] = {}
    with trio.fail_after(60):
        async with hosts("budget-victim", "budget-friend", inboxes=inboxes, guard=guard, direct=direct) as nets:
            victim, friend = nets
            await friend.connect(victim.addrs()[0])
            async with attacker_of(victim) as (evil, pid):
                attacker = account_id_of(evil.get_id())
                proto = envelope_protocol(NET)
                # a 4 MiB message, 1 MiB of it sent, then silence: its 4 MiB are held from the budget
                await send_raw(evil, pid, proto, envelope_head(4 * MiB) + encode_frame(b"a" * MiB), close=False)
                await wait_until(lambda: victim.guard.budget.held_by(attacker) == 4 * MiB)
                # a second one does not fit this peer's 6 MiB: it waits
                await send_raw(evil, pid, proto, envelope_head(4 * MiB), close=False)
                await wait_until(lambda: victim.counters.get("partial_waits") == 1)
                # an honest peer's message fits the rest of the budget meanwhile
                await friend.send(victim.account_id, b"f" * (3 * MiB))
                await inboxes["budget-victim"].wait_for(1)
                # both stalled messages are refused at their deadlines, and their memory is given back
                await wait_until(lambda: victim.counters.rejected("read_timeout") == 2)
                await wait_until(lambda: victim.guard.budget.held == 0)
                conn = victim.host.get_network().connections[evil.get_id()][0].muxed_conn
                assert sum(len(b) for b in conn.stream_buffers.values()) == 0
            assert inboxes["budget-victim"].items == [(friend.account_id, b"f" * (3 * MiB))]


async def test_stalled_pubsub_frame_is_refused_at_its_deadline():
    with trio.fail_after(30):
        async with hosts("ps-victim", guard=FAST) as (victim,):
            await victim.gossip.subscribe("adverts", Inbox())
            async with attacker_of(victim) as (evil, pid):
                attacker = account_id_of(evil.get_id())
                await send_raw(evil, pid, PROTOCOL_ID_V11, encode_uvarint(MiB) + b"\0" * 1000, close=False)
                await wait_until(lambda: victim.guard.budget.held_by(attacker) == MiB)
                await wait_until(lambda: victim.counters.rejected("read_timeout") == 1)
                await wait_until(lambda: victim.guard.budget.held == 0)


async def test_connections_per_ip_are_capped_and_slots_come_back():
    guard = replace(FAST, conns_per_ip=2, conns_exempt=())
    with trio.fail_after(60):
        async with hosts("ip-victim", guard=guard) as (victim,):
            async with attacker_of(victim) as (first, _), attacker_of(victim) as (second, _):
                with pytest.raises(Exception):  # the third from 127.0.0.1 is closed before the handshake
                    async with attacker_of(victim):
                        pass
                assert victim.counters.rejected("too_many_connections") >= 1
                assert len(victim.connected()) == 2
            await wait_until(lambda: victim.connected() == [])
            async with attacker_of(victim) as (third, _):  # closed connections gave their slots back
                assert account_id_of(third.get_id()) in victim.connected()


async def test_inbound_connections_beyond_the_librarys_lifetime_limit():
    """py-libp2p 0.8.1 kept one slot of its inbound limit per connection until the swarm stopped."""
    with trio.fail_after(60):
        async with hosts("churn-victim") as (victim,):
            limiter = victim.host.get_network()._inbound_limiter
            limiter.total_tokens = 2  # 250 by default: the same leak, reached sooner
            for _ in range(5):
                async with attacker_of(victim) as (evil, _):
                    assert account_id_of(evil.get_id()) in victim.connected()
                await wait_until(lambda: limiter.borrowed_tokens == 0)


class Flaky(ContainedTasks, Service):
    """A real py-libp2p service whose tasks fail the way a peer's input can make them fail."""

    def __init__(self) -> None:
        self.failures: list[tuple[ID | None, str, str]] = []
        self.daemon_runs = 0
        self.done = trio.Event()

    def on_task_failure(self, peer, exc, task) -> None:  # type: ignore[override]
        self.failures.append((peer, type(exc).__name__, task))

    async def run(self) -> None:
        self.manager.run_daemon_task(self.daemon)
        self.manager.run_task(self.handle, ID(b"\x00\x24" + b"\x01" * 36), b"\x0a\xff")
        self.manager.run_task(self.finish)
        await self.manager.wait_finished()

    async def handle(self, peer: ID, data: bytes) -> None:
        rpc_pb2.RPC().ParseFromString(data)

    async def daemon(self) -> None:
        self.daemon_runs += 1
        if self.daemon_runs == 1:
            raise KeyError("peer state a bug trips over")
        await trio.sleep_forever()

    async def finish(self) -> None:
        self.done.set()


async def test_libp2p_service_tasks_are_contained():
    service = Flaky()
    with trio.fail_after(10):
        async with background_trio_service(service) as manager:
            await service.done.wait()
            await wait_until(lambda: service.daemon_runs == 2)  # restarted after its failure
            assert manager.is_running
    assert sorted(service.failures, key=str) == sorted(
        [(ID(b"\x00\x24" + b"\x01" * 36), "DecodeError", "handle"), (None, "KeyError", "daemon")], key=str)


def test_reasons_and_groups():
    from google.protobuf.message import DecodeError as ProtobufDecodeError
    from libp2p.io.exceptions import MessageTooLarge
    from libp2p.network.stream.exceptions import StreamReset

    assert reason_of(ProtobufDecodeError("x")) == "malformed"
    assert reason_of(MessageTooLarge("x")) == "oversized"
    assert reason_of(StreamReset()) is None and reason_of(EOFError()) is None
    assert reason_of(trio.TooSlowError()) == "read_timeout"
    assert reason_of(KeyError("x")) == "handler_failed"
    assert protocol_group("/meshsub/1.0.0") == protocol_group("/meshsub/1.1.0") == "pubsub"
    assert protocol_group(str(rpc_protocol(NET, "sync"))) == "rpc"
    assert protocol_group(str(envelope_protocol(NET))) == "envelopes"
    assert FAST.read_deadline(64 * MiB) == pytest.approx(1.4)


# What the hooks in guard.py rely on, as audited in py-libp2p 0.8.1. If one of these changes, re-read it against
# guard.py (and gossip.py) before updating its digest here.
PINNED = {
    "libp2p.host.basic_host:BasicHost._swarm_stream_handler": "cec985884b1ba269",
    "libp2p.protocol_muxer.multiselect:Multiselect.add_handler": "615a12a5ed331842",
    "libp2p.protocol_muxer.multiselect:Multiselect.negotiate": "e870e3fe41c87e3c",
    "libp2p.network.swarm:Swarm._handle_inbound_connection": "0800fdf9770ed8e6",
    "libp2p.network.swarm:Swarm._do_handle_inbound_connection": "c22fdfd5289f671c",
    "libp2p.network.connection.swarm_connection:SwarmConn._handle_muxed_stream": "fb51f8a3e37c9800",
    "libp2p.network.connection.swarm_connection:SwarmConn._cleanup": "84470a285af6c287",
    "libp2p.pubsub.pubsub:Pubsub.stream_handler": "4be06aba2f448b7b",
    "libp2p.pubsub.pubsub:Pubsub.continuously_read_stream": "ac0c4ad87ca39288",
    "libp2p.pubsub.pubsub:Pubsub.push_msg": "1531483ab4d77674",  # calls validate_msg, which gossip.py replaces
    "libp2p.pubsub.pubsub:Pubsub.get_msg_validators": "cde25937d750f574",
    "libp2p.pubsub.pubsub:Pubsub.validate_msg": "9bc61633d2338dc5",
    "libp2p.pubsub.validators:signature_validator": "4ef201cd300c8e3e",
    "libp2p.tools.anyio_service.context:background_trio_service": "8eba8aeea610bcb6",
    "libp2p.tools.anyio_service.api:Service.manager": "2afb425eeeb6ffc5",
    "libp2p.tools.anyio_service.trio_manager:TrioManager.run_task": "ee6be8e98338d107",
    "libp2p.tools.anyio_service.trio_manager:TrioManager.run_daemon_task": "073ca1dd61e9a902",
    "libp2p.identity.identify_push.identify_push:identify_push_handler_for": "d7fee29230fa505d",
}


def test_library_code_the_guard_relies_on_is_unchanged():
    assert importlib.metadata.version("libp2p") == LIBP2P_VERSION
    changed = [path for path, digest in PINNED.items() if source_digest(path) != digest]
    assert changed == [], f"py-libp2p changed {changed}: re-audit moenode/net/guard.py against it"
