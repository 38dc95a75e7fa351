"""What a peer can make this host do: every handler contained, streams, connections and memory bounded, all counted.

Theory of operation. py-libp2p runs each inbound stream's handler in a task of its connection, and each
connection's tasks in the swarm's service. In py-libp2p 0.8.1 nothing contains an exception that escapes a
handler: it cancels the swarm, then the host, then `open_host`, so one 3-byte pubsub frame (`02 0a ff`, a
truncated protobuf field) made the node exit, and so did a multistream line that is not UTF-8 and a gossip message
with a malformed key. `Guard.install()` hooks the host, once, where a peer's bytes enter:

* **Handlers.** Every stream handler is wrapped as it is registered (`host.get_mux().handlers` wraps what is
  stored in it), and the swarm's handler is wrapped around protocol negotiation. An exception other than a
  cancellation ends that stream only: it is reset, counted by reason against the peer (`rejected.<reason>`,
  `Counters.peer_rejections`) and logged. A transport error (the peer went away) is logged at debug level only.
  When a handler returns, the stream's unread input is discarded (`yamux.BoundedYamux.discard_reads`).
* **Streams.** At most `streams_per_peer` inbound streams open per peer, counting every Yamux stream the peer opened
  that is not closed on both sides (a stream whose handler has returned counts until then), and at most
  `protocol_streams[group]` running handlers per peer and protocol group. One over a cap is reset and counted as
  `too_many_streams`.
* **Connections.** At most `conns_per_ip` inbound connections per IP address (loopback is exempt by default),
  checked before the Noise handshake; one over it is closed and counted as `too_many_connections`. The same hook
  ends py-libp2p's per-connection task when its connection closes: py-libp2p 0.8.1 keeps that task, and with it one
  slot of its inbound connection limit (max_connections - min_connections = 250), until the swarm stops, so after
  250 inbound connections in a node's life every new one was refused.
* **Partial messages.** `reserve(peer, n)` takes memory for a message still arriving from the partial-message
  budget (`limits.ByteBudget`: `partial_bytes` in all, `partial_bytes_per_peer` for one peer), waiting for room if
  there is none (counted as `partial_waits`), until `release(peer, n)`; direct.py's reader and `watch` use it. `watch(stream, cap)`
  wraps a stream for a varint-framed reader inside py-libp2p (pubsub): each frame declares at most `cap`, holds its
  declared length while it arrives, and must complete within `read_deadline(length)` of its first byte
  (`read_timeout` plus the length at `min_read_rate`), else it is refused as `read_timeout`.
* **identify/push** is served by a handler that reads one capped frame within `read_timeout`, so that a malformed
  push is counted here (py-libp2p's logs each at ERROR and counts nothing).
* **Service tasks.** `ContainedTasks` is a mixin for py-libp2p services (Pubsub, GossipSub) whose background tasks
  handle what peers sent: a task that fails is counted and logged instead of cancelling the service, and a failed
  daemon task starts again after `TASK_RESTART_DELAY`.

Yamux's receive window, which py-libp2p does not enforce, is enforced in `yamux.py`; a violation is counted here as
`flow_control`. These hooks were written against py-libp2p `LIBP2P_VERSION`; `tests/net/test_guard.py` fails if the
library code they rely on changes.
"""

import contextlib
import ipaddress
import logging
import math
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import trio
from google.protobuf.message import DecodeError as ProtobufDecodeError
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.exceptions import ParseError, ValidationError
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.identity.identify_push.identify_push import ID_PUSH
from libp2p.identity.update import update_peerstore_from_identify
from libp2p.io.exceptions import IOException, MessageTooLarge
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectError
from libp2p.stream_muxer.exceptions import MuxedConnError, MuxedStreamError
from libp2p.tools.anyio_service.utils import get_task_name

from moenode.core.errors import DecodeError, ProtocolError, TooLarge
from moenode.net.framing import FrameTracker, KiB, MiB, read_frame
from moenode.net.identity import account_id_of
from moenode.net.limits import ByteBudget, Counters, short
from moenode.net.yamux import BoundedYamux

log = logging.getLogger("moenode.net")

LIBP2P_VERSION = "0.8.1"
IDENTIFY_CAP = 64 * KiB  # one identify message; js-libp2p caps it at 8 KiB, go-libp2p at 64 KiB
TASK_RESTART_DELAY = 1.0  # seconds before a failed daemon task of a libp2p service starts again

# Errors that mean the peer or the connection went away: not the peer's misbehaviour, nothing to count.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    IOException, MuxedStreamError, MuxedConnError, trio.BrokenResourceError, trio.ClosedResourceError, OSError,
    EOFError,
)
# Errors that mean the peer's bytes did not parse.
MALFORMED_ERRORS: tuple[type[BaseException], ...] = (
    ProtobufDecodeError, ParseError, ValidationError, MultiselectError, UnicodeDecodeError, struct.error, ValueError,
)

DEFAULT_PROTOCOL_STREAMS = {
    "pubsub": 4,  # /meshsub/* and /floodsub/*: a peer needs one
    "identify": 4,
    "identify-push": 4,
    "ping": 2,  # py-libp2p's ping handler also allows 2
    "envelopes": 8,  # /moenode/<net>/shard/*: a peer keeps one open
    "rpc": 32,  # per /moenode/<net>/rpc/<name>/*: a pool of 4 idle streams plus requests in flight
    "other": 16,
}


@dataclass(frozen=True)
class GuardConfig:
    """Caps and deadlines for what peers send. The defaults are for production; tests shorten the times."""

    streams_per_peer: int = 128  # inbound streams one peer may have open, over all protocols
    protocol_streams: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PROTOCOL_STREAMS))
    conns_per_ip: int = 8  # inbound connections from one IP address (go-libp2p's default per /32)
    conns_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # networks without a per-IP cap
    idle_timeout: float = 60.0  # an inbound direct stream with no message started is closed after this long
    read_timeout: float = 20.0  # a message (or frame) must complete this long after its first byte ...
    min_read_rate: float = 512 * KiB  # ... plus its declared length at this many bytes per second
    partial_bytes: int = 64 * MiB  # memory for messages still arriving, from all peers
    partial_bytes_per_peer: int = 32 * MiB  # ... and from one peer

    def read_deadline(self, length: int) -> float:
        """Seconds a message of `length` bytes may take from its first byte to its last."""
        return self.read_timeout + length / self.min_read_rate


def protocol_group(protocol: str) -> str:
    """The group whose stream cap applies to `protocol`."""
    if protocol.startswith(("/meshsub/", "/floodsub/")):
        return "pubsub"
    if protocol.startswith("/ipfs/id/push/"):
        return "identify-push"
    if protocol.startswith("/ipfs/id/"):
        return "identify"
    if protocol.startswith("/ipfs/ping/"):
        return "ping"
    if protocol.startswith("/moenode/"):
        return "rpc" if "/rpc/" in protocol else "envelopes"
    return "other"


def reason_of(exc: BaseException) -> str | None:
    """The rejection reason for an exception a peer's input raised; None for a transport error (not counted)."""
    if isinstance(exc, ProtocolError):
        return exc.reason
    if isinstance(exc, MessageTooLarge):
        return "oversized"
    if isinstance(exc, TRANSPORT_ERRORS):
        return None
    if isinstance(exc, trio.TooSlowError):
        return "read_timeout"
    if isinstance(exc, MALFORMED_ERRORS):
        return "malformed"
    return "handler_failed"


async def reset_quietly(stream: Any) -> None:
    """Reset a stream that may already be gone."""
    try:
        with trio.move_on_after(1):
            await stream.reset()
    except Exception:  # already reset or its connection closed: nothing more to release
        pass


def _account(pid: ID | None) -> bytes | None:
    if pid is None:
        return None
    try:
        return account_id_of(pid)
    except ProtocolError:  # a non-Ed25519 peer has no account; it is logged without one
        return None


# The scope of py-libp2p's task for the inbound connection being upgraded in this task (see `Guard._admit`).
_INBOUND_SCOPE: ContextVar[trio.CancelScope | None] = ContextVar("moenode_inbound_scope", default=None)


def _wrap_method(owner: object, name: str, wrap: Callable[[Any], Any]) -> None:
    """Replace `owner.name` (a py-libp2p method, checked to exist) by `wrap` around it, on this instance only."""
    setattr(owner, name, wrap(getattr(owner, name)))


class Guard:
    """Installs the hooks above on one libp2p host, and keeps their counts and state."""

    def __init__(self, host: IHost, counters: Counters, config: GuardConfig):
        self.host, self.counters, self.config = host, counters, config
        self.budget = ByteBudget(config.partial_bytes, config.partial_bytes_per_peer)
        self._budget_freed = trio.Event()
        self._budget_waiters = 0
        self._running: Counter[tuple[ID, str]] = Counter()  # handlers running per (peer, protocol slot)
        self._inbound_ips: Counter[str] = Counter()  # inbound connections per IP, from accept to close
        self._exempt = [ipaddress.ip_network(n) for n in config.conns_exempt]
        self._inbound_scopes: WeakKeyDictionary[Any, trio.CancelScope] = WeakKeyDictionary()

    def install(self) -> None:
        """Hook the host (before it runs). Raises RuntimeError if py-libp2p lacks a hook point."""
        network = self.host.get_network()
        mux = self.host.get_mux()
        negotiate = getattr(self.host, "_swarm_stream_handler", None)
        for owner, name in ((mux, "handlers"), (network, "upgrade_inbound_raw_conn"),
                            (network, "_handle_inbound_connection"), (network, "connections")):
            if not hasattr(owner, name):
                raise RuntimeError(f"py-libp2p has no {type(owner).__name__}.{name}: the guard was written for "
                                   f"py-libp2p {LIBP2P_VERSION}")
        if negotiate is None:
            raise RuntimeError(f"py-libp2p has no host._swarm_stream_handler (written for {LIBP2P_VERSION})")
        mux.handlers = _GuardedHandlers(self, mux.handlers)
        self.host.set_stream_handler(ID_PUSH, self._identify_push)
        network.set_stream_handler(self._guard_negotiation(negotiate))
        _wrap_method(network, "_handle_inbound_connection", self._admit)
        _wrap_method(network, "upgrade_inbound_raw_conn", self._note_inbound)
        network.register_notifee(_Notifee(self))

    # streams ----------------------------------------------------------------------------------------------------
    def _open_inbound(self, pid: ID) -> int:
        """Yamux streams `pid` opened to us that are not yet closed on both sides."""
        n = 0
        for conn in self.host.get_network().connections.get(pid, []):
            streams = getattr(conn.muxed_conn, "streams", {})
            n += sum(1 for s in list(streams.values()) if not getattr(s, "is_initiator", True))
        return n

    def _guard_negotiation(self, negotiate_and_handle: Callable[[INetStream], Awaitable[None]]):
        async def handle(stream: INetStream) -> None:
            pid = stream.muxed_conn.peer_id
            cap = self.config.streams_per_peer
            if self._open_inbound(pid) > cap:
                self.counters.reject("too_many_streams", _account(pid), f"more than {cap} open streams",
                                     where="streams")
                await reset_quietly(stream)
                return
            try:
                await negotiate_and_handle(stream)
            except Exception as e:  # noqa: BLE001 - whatever a peer's bytes raised ends its stream, not the node
                await self.contain(stream, pid, e, where=str(stream.get_protocol() or "negotiation"))

        return handle

    def wrap(self, protocol: TProtocol | None, handler: Callable[[INetStream], Awaitable[None]] | None):
        """The handler for `protocol` with its per-peer cap and containment."""
        if handler is None or protocol is None or getattr(handler, "__wrapped__", None) is not None:
            return handler
        group = protocol_group(protocol)
        slot = group if group in ("pubsub", "identify", "identify-push", "ping") else str(protocol)
        cap = self.config.protocol_streams.get(group, self.config.protocol_streams.get("other", 16))
        where = str(protocol)

        async def guarded(stream: INetStream) -> None:
            pid = stream.muxed_conn.peer_id
            key = (pid, slot)
            if self._running[key] >= cap:
                self.counters.reject("too_many_streams", _account(pid), f"more than {cap} {slot} streams",
                                     where=where)
                await reset_quietly(stream)
                return
            self._running[key] += 1
            try:
                await handler(stream)
            except Exception as e:  # noqa: BLE001 - see _guard_negotiation
                await self.contain(stream, pid, e, where=where)
            finally:
                self._running[key] -= 1
                if not self._running[key]:
                    del self._running[key]
                muxed = getattr(stream, "muxed_stream", None)
                if isinstance(stream.muxed_conn, BoundedYamux) and muxed is not None:
                    stream.muxed_conn.discard_reads(muxed.stream_id)

        guarded.__wrapped__ = handler  # type: ignore[attr-defined]
        return guarded

    def report(self, exc: Exception, pid: ID | None, *, where: str) -> None:
        """Code handling a peer's input raised `exc`: count it against the peer by reason and log it (a transport
        error only at debug level; an unexpected exception with its traceback)."""
        reason = reason_of(exc)
        peer = _account(pid)
        if reason is None:
            log.debug("%s from %s ended: %r", where, short(peer), exc, extra={"peer": peer.hex() if peer else None})
            return
        self.counters.reject(reason, peer, f"{type(exc).__name__}: {exc}"[:300], where=where,
                             exc=exc if reason == "handler_failed" else None)

    async def contain(self, stream: Any, pid: ID | None, exc: Exception, *, where: str) -> None:
        """A handler failed on a peer's input: report it and reset the stream."""
        self.report(exc, pid, where=where)
        await reset_quietly(stream)

    # connections ------------------------------------------------------------------------------------------------
    def _capped(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return True
        return not any(addr in net for net in self._exempt)

    def _admit(self, handle_inbound: Callable[[Any, Any], Awaitable[None]]):
        """Wrap py-libp2p's per-connection task: per-IP cap first, and end the task when its connection closes."""

        async def admit(read_write_closer: Any, maddr: Any) -> None:
            remote = getattr(read_write_closer, "get_remote_address", lambda: None)()
            ip = str(remote[0]) if remote else None
            if ip is not None and self._capped(ip) and self._inbound_ips[ip] >= self.config.conns_per_ip:
                self.counters.reject("too_many_connections", None,
                                     f"{ip} already has {self._inbound_ips[ip]} inbound connections", where="connect")
                with contextlib.suppress(Exception):
                    await read_write_closer.close()
                return
            if ip is not None:
                self._inbound_ips[ip] += 1
            try:
                with trio.CancelScope() as scope:
                    token = _INBOUND_SCOPE.set(scope)
                    try:
                        await handle_inbound(read_write_closer, maddr)
                    finally:
                        _INBOUND_SCOPE.reset(token)
            finally:
                if ip is not None:
                    self._inbound_ips[ip] -= 1
                    if not self._inbound_ips[ip]:
                        del self._inbound_ips[ip]

        return admit

    def _note_inbound(self, upgrade: Callable[[Any, Any], Awaitable[Any]]):
        """Remember which task's scope to cancel when the upgraded inbound connection closes (see _Notifee)."""

        async def upgrade_inbound(raw_conn: Any, maddr: Any) -> Any:
            muxed = await upgrade(raw_conn, maddr)
            scope = _INBOUND_SCOPE.get()
            if scope is not None:
                if getattr(muxed, "is_closed", False):
                    scope.cancel()
                else:
                    self._inbound_scopes[muxed] = scope
            return muxed

        return upgrade_inbound

    def _closed(self, conn: INetConn) -> None:
        scope = self._inbound_scopes.pop(conn.muxed_conn, None)
        if scope is not None:
            scope.cancel()

    def _flow_violation(self, pid: ID, stream_id: int, excess: int) -> None:
        self.counters.reject("flow_control", _account(pid),
                             f"stream {stream_id} got {excess} bytes over its receive window; connection closed",
                             where="yamux")

    # partial messages -------------------------------------------------------------------------------------------
    async def reserve(self, peer: bytes, n: int) -> None:
        """Take `n` bytes of the partial-message budget for `peer`, waiting for room. The caller bounds the wait."""
        if n > self.budget.per_peer:
            raise TooLarge(f"{n} bytes exceed the partial-message budget of {self.budget.per_peer} per peer")
        if n == 0:
            return
        if self.budget.take(peer, n):
            return
        self.counters.incr("partial_waits")
        self._budget_waiters += 1
        try:
            while not self.budget.take(peer, n):
                await self._budget_freed.wait()
        finally:
            self._budget_waiters -= 1

    def release(self, peer: bytes, n: int) -> None:
        if n == 0:
            return
        self.budget.give(peer, n)
        if self._budget_waiters:
            self._budget_freed.set()
            self._budget_freed = trio.Event()

    @contextlib.asynccontextmanager
    async def watch(self, stream: INetStream, cap: int) -> AsyncIterator["WatchedStream"]:
        """`stream` as a varint-framed reader inside py-libp2p should see it (see the module docstring)."""
        watched = WatchedStream(self, stream, cap)
        try:
            yield watched
        finally:
            watched.done()

    # identify/push ----------------------------------------------------------------------------------------------
    async def _identify_push(self, stream: INetStream) -> None:
        """Serve /ipfs/id/push/1.0.0: one varint-framed Identify message, capped and timed; a bad one raises.

        Replaces py-libp2p 0.8.1's handler, which catches everything, logs each malformed push at ERROR and
        counts nothing."""
        with trio.fail_after(self.config.read_timeout):
            frame = await read_frame(stream, IDENTIFY_CAP)
        if frame is None:
            return
        msg = Identify()
        try:
            msg.ParseFromString(frame)
        except ProtobufDecodeError as e:
            raise DecodeError(f"identify push: {e}") from None
        await update_peerstore_from_identify(self.host.get_peerstore(), stream.muxed_conn.peer_id, msg)
        await stream.close()


class _GuardedHandlers(dict):
    """`Multiselect.handlers`: each handler stored in it is wrapped by the guard (negotiation returns it)."""

    def __init__(self, guard: Guard, handlers: Mapping[Any, Any]):
        super().__init__()
        self.guard = guard
        for protocol, handler in handlers.items():
            self[protocol] = handler

    def __setitem__(self, protocol: Any, handler: Any) -> None:
        super().__setitem__(protocol, self.guard.wrap(protocol, handler))


class _Notifee(INotifee):
    """Connection events the guard needs: a new Yamux connection reports window violations to the guard; a closed
    inbound connection ends its py-libp2p task."""

    def __init__(self, guard: Guard):
        self.guard = guard

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        if isinstance(conn.muxed_conn, BoundedYamux):
            conn.muxed_conn.on_violation = self.guard._flow_violation

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.guard._closed(conn)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Any) -> None:
        pass


class WatchedStream:
    """A libp2p stream as seen by a varint-framed reader inside py-libp2p, with each frame's size, memory and time
    bounded (see `Guard.watch`). Everything but `read` (and `done`) is the stream's own."""

    def __init__(self, guard: Guard, stream: INetStream, cap: int):
        self._guard, self._stream = guard, stream
        self._peer = _account(stream.muxed_conn.peer_id) or bytes(stream.muxed_conn.peer_id.to_bytes())
        self._frames = FrameTracker(cap)
        self._started: float | None = None  # when the frame in progress began
        self._deadline = math.inf  # by when it must be complete
        self._held = 0  # bytes of the budget held for it

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def read(self, n: int | None = -1) -> bytes:
        with trio.move_on_at(self._deadline) as scope:
            data = await self._stream.read(n)
            for event, length in self._frames.feed(data):
                if event == "end":
                    self.done()
                    continue
                if self._started is None:
                    self._started = trio.current_time()
                self._deadline = scope.deadline = self._started + self._guard.config.read_deadline(length)
                await self._guard.reserve(self._peer, length)
                self._held = length
            if self._frames.in_frame and self._started is None:
                self._started = trio.current_time()
                self._deadline = self._started + self._guard.config.read_timeout
        if scope.cancelled_caught:
            raise ProtocolError(f"a frame of {self._frames.declared} bytes did not arrive in time",
                                reason="read_timeout")
        return data

    def done(self) -> None:
        """The frame in progress is complete, or nobody will read the rest: give its memory back."""
        if self._held:
            self._guard.release(self._peer, self._held)
            self._held = 0
        self._started, self._deadline = None, math.inf


class ContainedTasks:
    """Mixin for a py-libp2p Service whose background tasks handle what peers sent (Pubsub, GossipSub).

    py-libp2p 0.8.1 cancels a whole service when one of its tasks raises, and the service's context manager then
    raises out of `open_host`. Here the service's `manager` is seen through `_ContainedManager`: a task that raises
    is reported to `on_task_failure(peer_id_or_None, exc, task_name)` (the peer is the task's first argument when
    that is a peer id) and ends alone; a daemon task that raises is reported and started again."""

    def on_task_failure(self, peer: ID | None, exc: Exception, task: str) -> None:
        log.error("libp2p task %s failed (peer %s)", task, peer, exc_info=exc)

    @property
    def manager(self) -> Any:
        inner = self._manager  # type: ignore[attr-defined]  # set by py-libp2p when the service runs
        contained = self.__dict__.get("_contained_manager")
        if contained is None or contained.inner is not inner:
            contained = self.__dict__["_contained_manager"] = _ContainedManager(inner, self)
        return contained


class _ContainedManager:
    """A py-libp2p service manager whose `run_task` contains failures (see `ContainedTasks`)."""

    def __init__(self, inner: Any, owner: ContainedTasks):
        self.inner, self._owner = inner, owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _report(self, args: tuple[Any, ...], exc: Exception, name: str) -> None:
        if not self.inner.is_running:  # stopping: a task that trips over the teardown is not news
            log.debug("libp2p task %s ended during shutdown: %r", name, exc)
            return
        peer = args[0] if args and isinstance(args[0], ID) else None
        self._owner.on_task_failure(peer, exc, name)

    def run_task(self, async_fn: Callable[..., Awaitable[Any]], *args: Any, daemon: bool = False,
                 name: str | None = None, **kwargs: Any) -> None:
        name = get_task_name(async_fn, name)

        async def contained(*a: Any) -> None:
            while True:
                try:
                    await async_fn(*a)
                    return
                except Exception as e:  # noqa: BLE001 - a peer-triggered failure must not stop the service
                    self._report(a, e, name)
                    if not daemon or not self.inner.is_running:
                        return
                await trio.sleep(TASK_RESTART_DELAY)

        self.inner.run_task(contained, *args, daemon=daemon, name=name, **kwargs)

    def run_daemon_task(self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        self.run_task(async_fn, *args, daemon=True, name=name)
