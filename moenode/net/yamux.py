"""Yamux with its receive window enforced, and a local close of a stream's read side.

Theory of operation. Yamux gives each stream a receive window: the peer may send only as many bytes as we have
granted (256 KiB at first, more as the reader consumes them). py-libp2p 0.8.1 counts the window but does not
enforce it: a frame over it is logged ("peer exceeded receive window") and buffered anyway, without limit, so a
peer that ignores the window can make us hold anything it sends on a stream nobody reads (200 MiB on an identify
stream were all held). `BoundedYamux` checks each DATA frame against the stream's remaining window before it is
buffered. A frame over the window breaks the protocol: it is dropped, reported through `on_violation(peer_id,
stream_id, excess)`, and the connection is closed, as go-yamux does.

A stream whose handler has returned is never read again, yet py-libp2p keeps buffering what the peer sends on it
until the peer closes its side. `discard_reads(stream_id)` drops that stream's buffer and everything that arrives
for it later (go-libp2p's CloseRead); the window still bounds how much the peer may send.

The hook is py-libp2p's own data structure: each stream's receive buffer is a `bytearray` in `stream_buffers` that
the muxer `extend`s with every DATA frame, under `streams_lock`, before it updates the window. `BoundedYamux` makes
those buffers a subclass that checks first. To close the connection from there (inside the read loop, where
nothing can be awaited) it raises `WindowExceeded`, a `trio.TooSlowError`: py-libp2p's read loop treats that one
exception as fatal in every frame branch and tears the connection down on its normal error path (waking every
reader, then telling the swarm); it logs it as a timed-out DATA frame. py-libp2p's muxer negotiation builds Yamux by its module-level name
(it ignores `muxer_opt` for Yamux), so importing this module points that name at `BoundedYamux`, for every host in
the process. `tests/net/test_yamux.py` pins the library code this relies on.
"""

import logging
from collections.abc import Callable
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.stream_muxer import muxer_multistream
from libp2p.stream_muxer.yamux.yamux import Yamux

log = logging.getLogger("moenode.net")

ViolationHook = Callable[[ID, int, int], None]  # (peer id, stream id, bytes over the window)


class WindowExceeded(trio.TooSlowError):
    """A peer sent more than a stream's receive window (raised inside py-libp2p's read loop, which then closes)."""


class _ReceiveBuffer(bytearray):
    """One stream's receive buffer: takes a frame only if it fits the stream's remaining window."""

    def __init__(self, conn: "BoundedYamux", stream_id: int, initial: bytes = b"") -> None:
        super().__init__(initial)
        self.conn, self.stream_id = conn, stream_id
        self.discarding = False

    def extend(self, data: Any) -> None:
        stream = self.conn.streams.get(self.stream_id)
        if stream is not None and len(data) > stream.recv_window:
            self.conn.refuse(self.stream_id, len(data) - stream.recv_window)
            return
        if not self.discarding:
            super().extend(data)


class _ReceiveBuffers(dict):
    """`Yamux.stream_buffers`: every buffer stored in it becomes a `_ReceiveBuffer`."""

    def __init__(self, conn: "BoundedYamux") -> None:
        super().__init__()
        self.conn = conn

    def __setitem__(self, stream_id: int, buf: bytearray) -> None:
        if not isinstance(buf, _ReceiveBuffer):
            buf = _ReceiveBuffer(self.conn, stream_id, buf)
        super().__setitem__(stream_id, buf)


class BoundedYamux(Yamux):
    """py-libp2p's Yamux, with each stream's receive window enforced."""

    on_violation: ViolationHook | None = None  # set per connection by the host's guard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream_buffers = _ReceiveBuffers(self)
        self.violated = False

    def discard_reads(self, stream_id: int) -> None:
        """Nobody will read this stream again: drop what is buffered and what still arrives."""
        buf = self.stream_buffers.get(stream_id)
        if isinstance(buf, _ReceiveBuffer):
            buf.discarding = True
            buf.clear()

    def refuse(self, stream_id: int, excess: int) -> None:
        """A DATA frame exceeded its stream's window: drop the stream's data, report, and close the connection."""
        self.discard_reads(stream_id)
        if not self.violated:
            self.violated = True
            if self.on_violation is not None:
                self.on_violation(self.peer_id, stream_id, excess)
            else:
                log.warning("peer %s exceeded the receive window of stream %d by %d bytes", self.peer_id,
                            stream_id, excess)
        raise WindowExceeded(f"stream {stream_id}: {excess} bytes over the receive window")


# py-libp2p 0.8.1's MuxerMultistream.new_conn calls `Yamux(...)` by this module-level name.
muxer_multistream.Yamux = BoundedYamux  # type: ignore[misc]
