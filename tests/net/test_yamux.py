"""Yamux receive windows are enforced, and a stream nobody reads any more holds nothing.

py-libp2p 0.8.1 only logged a peer that ignored a stream's receive window, and buffered all it sent: 200 MiB sent
on an identify stream (which the host never reads) were all held.
"""

import trio
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.stream_muxer import muxer_multistream

from moenode.net import account_id_of
from moenode.net.yamux import BoundedYamux
from netkit import Inbox, attacker_of, hosts, send_raw, source_digest, wait_until

KiB = 1 << 10


def buffered(victim, evil) -> int:
    """Bytes the victim's muxer holds for streams of `evil`'s connection (0 once the connection is gone)."""
    conns = victim.host.get_network().connections.get(evil.get_id(), [])
    return sum(len(b) for c in conns for b in c.muxed_conn.stream_buffers.values())


async def test_a_peer_that_ignores_the_receive_window_is_cut_off():
    inboxes: dict[str, Inbox] = {}
    with trio.fail_after(30):
        async with hosts("window-victim", "window-friend", inboxes=inboxes) as (victim, friend):
            await friend.connect(victim.addrs()[0])
            async with attacker_of(victim) as (evil, pid):
                attacker = account_id_of(evil.get_id())
                conn = victim.host.get_network().connections[evil.get_id()][0].muxed_conn
                assert isinstance(conn, BoundedYamux)
                stream = await evil.new_stream(pid, [IDENTIFY])
                stream.muxed_stream.send_window = 1 << 40  # ignore what the victim granted (at most 16 MiB)
                try:
                    for _ in range(80):
                        await stream.write(b"x" * (256 * KiB))
                except Exception:  # the victim closes the connection
                    pass
                await wait_until(lambda: victim.counters.rejected("flow_control") == 1)
                await wait_until(lambda: not victim.is_connected(attacker))
                assert victim.counters.peer_rejections(attacker) == 1
                assert sum(len(b) for b in conn.stream_buffers.values()) == 0
            await friend.send(victim.account_id, b"x" * (3 << 20))  # honest peers respect the window
            await inboxes["window-victim"].wait_for(1)
            assert victim.counters.rejections() == {"flow_control": 1}


async def test_input_on_a_stream_whose_handler_returned_is_discarded():
    with trio.fail_after(30):
        async with hosts("discard-victim") as (victim,):
            async with attacker_of(victim) as (evil, pid):
                for _ in range(10):  # identify answers and closes its side; the peer keeps writing
                    await send_raw(evil, pid, IDENTIFY, b"z" * (200 * KiB), close=False)
                await trio.sleep(0.3)
                assert buffered(victim, evil) == 0
                assert victim.counters.rejections() == {}


def test_py_libp2p_builds_yamux_connections_as_bounded():
    assert muxer_multistream.Yamux is BoundedYamux


# What yamux.py relies on, as audited in py-libp2p 0.8.1: Yamux built by name in new_conn, `stream_buffers` created
# in __init__ and extended before the window is charged, and trio.TooSlowError fatal in every frame branch.
PINNED = {
    "libp2p.stream_muxer.muxer_multistream:MuxerMultistream.new_conn": "91d21f40f524ad99",
    "libp2p.stream_muxer.yamux.yamux:Yamux.__init__": "3b11a2a71ca444ca",
    "libp2p.stream_muxer.yamux.yamux:Yamux.handle_incoming": "ad15ff6943feac20",
}


def test_library_code_the_bounded_muxer_relies_on_is_unchanged():
    changed = [path for path, digest in PINNED.items() if source_digest(path) != digest]
    assert changed == [], f"py-libp2p changed {changed}: re-audit moenode/net/yamux.py against it"
