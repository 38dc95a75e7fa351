"""Direct stream protocols: one-way envelope delivery, request/response, and paged fetches.

Theory of operation. Every protocol id carries the network id, so two networks never talk:
`/moenode/<net hex16>/shard/1.0.0` for envelopes and `/moenode/<net hex16>/rpc/<name>/1.0.0` for each RPC.
All payloads travel as chunked messages (`framing.py`): a header with length and hash, then 1 MiB chunks.

* **Envelopes** (`send`): one long-lived outbound stream per peer, opened on first use and reused (a new stream
  costs about 4x a write on an open one). Sends to one peer are serialised by a lock. A broken cached stream is
  dropped and the send is retried once on a fresh stream. The receiver reads messages in a loop and awaits the
  node's `on_message(peer_account_id, data)` for each, in order: a slow handler slows that peer only. Delivery is
  best effort (no acknowledgement); the round protocol tolerates loss.
* **Requests** (`request`): a small pool of idle streams per (peer, rpc), each checked to be on a live connection
  before reuse; a failed request is not retried (at most once: the caller decides). The response is one status byte
  (0 ok, 1 error) and the body; an error comes back as `RemoteError`. A handler that raises `ProtocolError`
  tells the caller the reason; any other exception is logged here and reported as "internal".
* **Pages** (`iter_pages`): a request/response convention for catch-up sync. The request is
  `canonical({"query", "cursor", "limit"})`, the answer `canonical({"items": [bytes], "next": cursor})`, where an
  empty `next` ends the walk. What a query and a cursor mean is the node's business.

Everything inbound is capped (per protocol), rate-limited per peer (`limits.py`) and, when rejected, counted and
logged with the peer id. A malformed message ends its stream (the framing is lost) but never the node.

Time and memory on an inbound stream are bounded by the host's guard (`guard.py`, `GuardConfig`): a stream on which
no message starts for `idle_timeout` is reset (counted as `streams_idle_closed`); a message must be complete within
`read_deadline(length)` of its first byte, else it is refused as `read_timeout`; and its declared length is held
from the partial-message budget while it arrives. So that an idle reset never meets a send, this side reuses a
cached stream only while it has been idle for less than half of `idle_timeout`, and closes it otherwise.
"""

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError

from moenode.core.codec import canonical, decode
from moenode.core.errors import DecodeError, ProtocolError, SchemaError
from moenode.net.framing import BufferedReader, KiB, MiB, read_body, read_header, read_message, write_message
from moenode.net.guard import Guard, reset_quietly
from moenode.net.identity import account_id_of, peer_id_of
from moenode.net.limits import Counters, RateLimiter, short

log = logging.getLogger("moenode.net")

MessageHandler = Callable[[bytes, bytes], Awaitable[None]]  # (peer account id, envelope bytes)
RequestHandler = Callable[[bytes, bytes], Awaitable[bytes]]  # (peer account id, request) -> response
PageHandler = Callable[[bytes, bytes, bytes, int], Awaitable[tuple[list[bytes], bytes]]]
# (peer, query, cursor, limit) -> (items, next cursor; b"" when done)

OK, ERR = 0, 1
POOL_PER_PEER = 4
PAGE_HEADER = 4 * KiB
# Transport failures: libp2p's own errors, trio's broken/closed resources, and OS-level socket errors.
TRANSPORT_ERRORS = (BaseLibp2pError, trio.BrokenResourceError, trio.ClosedResourceError, OSError, EOFError)


class NetError(Exception):
    """A transport-level failure seen locally (no route, stream broken, timed out). Not a peer's misbehaviour."""


class PeerUnreachable(NetError):
    pass


class RequestTimeout(NetError):
    pass


class RemoteError(NetError):
    """The peer answered a request with an error (it rejected our request, or failed itself)."""


class StreamIdle(Exception):
    """No message started on an inbound stream within the idle timeout."""


def proto_prefix(net_id: bytes) -> str:
    return f"/moenode/{net_id.hex()[:16]}"


def envelope_protocol(net_id: bytes) -> TProtocol:
    return TProtocol(f"{proto_prefix(net_id)}/shard/1.0.0")


def rpc_protocol(net_id: bytes, name: str) -> TProtocol:
    if not name or "/" in name:
        raise ValueError(f"bad rpc name {name!r}")
    return TProtocol(f"{proto_prefix(net_id)}/rpc/{name}/1.0.0")


@dataclass(frozen=True)
class DirectConfig:
    envelope_cap: int = 16 * MiB  # messages.MAX_ENVELOPE: the largest signed envelope (a Payload batch)
    request_cap: int = 1 * MiB
    response_cap: int = 16 * MiB
    request_timeout: float = 30.0
    dial_timeout: float = 5.0


async def read_inbound(reader: BufferedReader, cap: int, guard: Guard, peer: bytes) -> bytes | None:
    """The next message of at most `cap` bytes on an inbound stream from `peer`; None at its clean end.

    Raises StreamIdle if no message starts within `idle_timeout`, and ProtocolError for what the peer got wrong,
    including a message not complete within `read_deadline(length)` of its first byte (`read_timeout`). While the
    message arrives, its declared length is held from the guard's partial-message budget."""
    limits = guard.config
    data = head = None
    started = False
    with trio.move_on_after(limits.idle_timeout) as scope:  # one scope, its deadline moved as the message goes
        if not await reader.readable():
            return None
        started = True
        scope.deadline = trio.current_time() + limits.read_timeout
        head = await read_header(reader, cap)
        if head is None:
            return None
        scope.deadline += head.length / limits.min_read_rate
        await guard.reserve(peer, head.length)
        try:
            data = await read_body(reader, head)
        finally:
            guard.release(peer, head.length)
    if data is None:
        if not started:
            raise StreamIdle
        declared = head.length if head is not None else 0
        raise ProtocolError(f"a message of {declared} bytes was not complete {limits.read_deadline(declared):.0f} s "
                            "after its first byte", reason="read_timeout")
    return data


def parse_response(resp: bytes, name: str) -> bytes:
    """A request's answer: the body after an OK status byte. Raises RemoteError for an error answer and
    DecodeError for an answer without a status byte."""
    if not resp or resp[0] not in (OK, ERR):
        raise DecodeError(f"rpc/{name}: response without a status byte")
    if resp[0] == ERR:
        raise RemoteError(resp[1:].decode("utf-8", "replace"))
    return resp[1:]


def parse_page_request(req: bytes, max_limit: int) -> tuple[bytes, bytes, int]:
    """`(query, cursor, limit)` of a page request; ProtocolError unless it is exactly that with 1 <= limit <=
    max_limit."""
    q = decode(req, max_bytes=PAGE_HEADER)
    if not (
        isinstance(q, dict)
        and set(q) == {"query", "cursor", "limit"}
        and isinstance(q["query"], bytes)
        and isinstance(q["cursor"], bytes)
        and isinstance(q["limit"], int)
        and not isinstance(q["limit"], bool)
        and 1 <= q["limit"] <= max_limit
    ):
        raise SchemaError(f"page request: expected {{query, cursor, limit<={max_limit}}}")
    return q["query"], q["cursor"], q["limit"]


def parse_page(raw: bytes, cap: int, limit: int) -> tuple[list[bytes], bytes]:
    """`(items, next_cursor)` of a page; ProtocolError unless it has at most `limit` items, all bytes."""
    page = decode(raw, max_bytes=cap)
    if not (
        isinstance(page, dict)
        and set(page) == {"items", "next"}
        and isinstance(page["items"], list)
        and len(page["items"]) <= limit
        and all(isinstance(i, bytes) for i in page["items"])
        and isinstance(page["next"], bytes)
    ):
        raise SchemaError(f"expected {{items: [bytes] <= {limit}, next: bytes}}")
    return page["items"], page["next"]


async def _close(stream: INetStream) -> None:
    try:
        with trio.move_on_after(1):
            await stream.close()
    except Exception:  # already gone; nothing more to release
        pass


class Direct:
    """Envelope, request and page protocols over one libp2p host."""

    def __init__(
        self,
        host: IHost,
        net_id: bytes,
        counters: Counters,
        limiter: RateLimiter,
        config: DirectConfig,
        on_message: MessageHandler | None,
        guard: Guard,
    ):
        self.host, self.net_id, self.counters, self.limiter, self.config = host, net_id, counters, limiter, config
        self.on_message = on_message
        self.guard = guard
        self.envelope_proto = envelope_protocol(net_id)
        self._fits_budget(config.envelope_cap)
        self._out: dict[bytes, INetStream] = {}
        self._out_used: dict[bytes, float] = {}  # when each cached envelope stream last carried one
        self._locks: dict[bytes, trio.Lock] = {}
        self._pool: dict[tuple[bytes, str], list[tuple[INetStream, BufferedReader, float]]] = {}
        self._caps: dict[str, tuple[int, int]] = {}
        host.set_stream_handler(self.envelope_proto, self._serve_envelopes)

    # helpers ------------------------------------------------------------------------------------------------------
    def _peer_of(self, stream: INetStream) -> bytes | None:
        try:
            return account_id_of(stream.muxed_conn.peer_id)
        except ProtocolError as e:
            self.counters.reject(e.reason, None, str(e))
            return None

    async def _open(self, peer: bytes, proto: TProtocol) -> INetStream:
        pid = peer_id_of(peer)  # a malformed account id is our own bug: let ValueError through
        try:
            with trio.fail_after(self.config.dial_timeout):
                return await self.host.new_stream(pid, [proto])
        except (trio.TooSlowError, *TRANSPORT_ERRORS, Exception) as e:  # new_stream raises many unrelated types
            raise PeerUnreachable(f"cannot open {proto} to {short(peer)}: {e!r:.200}") from e

    def _fits_budget(self, cap: int) -> None:
        """An inbound message cap above the partial-message budget per peer could never be read: a local bug."""
        if cap > self.guard.config.partial_bytes_per_peer:
            raise ValueError(f"a message cap of {cap} bytes exceeds the partial-message budget of "
                             f"{self.guard.config.partial_bytes_per_peer} bytes per peer")

    def _live(self, stream: INetStream) -> bool:
        """Is a cached stream still on a live connection? (A restarted peer leaves dead streams behind.)"""
        muxed = stream.muxed_conn
        if getattr(muxed, "is_closed", False):
            return False
        conns = self.host.get_network().connections.get(muxed.peer_id, [])
        return any(getattr(c, "muxed_conn", None) is muxed for c in conns)

    def _recent(self, used: float) -> bool:
        """Was a cached stream used recently enough that the peer has not closed it as idle?"""
        return trio.current_time() - used < self.guard.config.idle_timeout / 2

    def forget(self, peer: bytes) -> None:
        """Drop cached streams to a peer (it disconnected)."""
        self._out.pop(peer, None)
        self._out_used.pop(peer, None)
        for key in [k for k in self._pool if k[0] == peer]:
            del self._pool[key]

    # envelopes ----------------------------------------------------------------------------------------------------
    async def send(self, peer: bytes, data: bytes) -> None:
        """Deliver one envelope to `peer`'s `on_message`. Raises PeerUnreachable if no stream can carry it."""
        if len(data) > self.config.envelope_cap:
            raise ValueError(f"envelope of {len(data)} bytes exceeds the cap of {self.config.envelope_cap}")
        lock = self._locks.setdefault(peer, trio.Lock())
        async with lock:
            for attempt in range(2):
                stream = self._out.get(peer)
                if stream is not None and not self._live(stream):
                    self._out.pop(peer, None)
                    await reset_quietly(stream)
                    stream = None
                elif stream is not None and not self._recent(self._out_used.get(peer, -math.inf)):
                    self._out.pop(peer, None)
                    await _close(stream)
                    stream = None
                fresh = stream is None
                if stream is None:
                    stream = self._out[peer] = await self._open(peer, self.envelope_proto)
                try:
                    await write_message(stream, data)
                except TRANSPORT_ERRORS as e:
                    self._out.pop(peer, None)
                    await reset_quietly(stream)
                    if fresh or attempt:
                        raise PeerUnreachable(f"envelope to {short(peer)} failed: {e!r:.200}") from e
                    log.debug("cached stream to %s broke, reopening", short(peer), extra={"peer": peer.hex()})
                    continue
                except BaseException:  # cancelled mid-write: the stream's framing is unknown
                    self._out.pop(peer, None)
                    await reset_quietly(stream)
                    raise
                self._out_used[peer] = trio.current_time()
                self.counters.incr("sent.envelope")
                return

    async def _serve_envelopes(self, stream: INetStream) -> None:
        await self._serve(stream, "envelope", self.config.envelope_cap, self._one_envelope)

    async def _one_envelope(self, stream: INetStream, peer: bytes, data: bytes) -> None:
        if not self.limiter.allow(peer, "envelope", trio.current_time()):
            self.counters.reject("rate_limited", peer, f"{len(data)} bytes dropped", where="envelope")
            return
        self.counters.incr("received.envelope")
        if self.on_message is None:
            return
        try:
            await self.on_message(peer, data)
        except ProtocolError as e:
            self.counters.reject(e.reason, peer, str(e), where="envelope")
        except Exception:
            self.counters.incr("handler_error")
            log.exception("envelope handler failed for %s", short(peer), extra={"peer": peer.hex()})

    async def _serve(
        self,
        stream: INetStream,
        where: str,
        cap: int,
        serve_one: Callable[[INetStream, bytes, bytes], Awaitable[None]],
    ) -> None:
        """Read messages of at most `cap` bytes from an inbound stream and hand each to `serve_one(stream, peer,
        message)`, until the stream ends, idles out, or the peer gets something wrong (counted; the stream is
        reset, since its framing is lost)."""
        peer = self._peer_of(stream)
        if peer is None:
            await reset_quietly(stream)
            return
        reader = BufferedReader(stream)
        try:
            while True:
                try:
                    data = await read_inbound(reader, cap, self.guard, peer)
                except ProtocolError as e:
                    self.counters.reject(e.reason, peer, str(e), where=where)
                    await reset_quietly(stream)
                    return
                except StreamIdle:
                    self.counters.incr("streams_idle_closed")
                    log.debug("reset a stream from %s idle for %.0f s", short(peer), self.guard.config.idle_timeout,
                              extra={"peer": peer.hex()})
                    await reset_quietly(stream)
                    return
                if data is None:
                    break
                await serve_one(stream, peer, data)
        except TRANSPORT_ERRORS as e:
            log.debug("%s stream from %s ended: %r", where, short(peer), e, extra={"peer": peer.hex()})
        finally:
            await _close(stream)

    # requests -----------------------------------------------------------------------------------------------------
    def set_handler(
        self, name: str, handler: RequestHandler, *, max_request: int | None = None, max_response: int | None = None
    ) -> None:
        """Serve RPC `name`. Caps default to the config's; `max_response` also applies to our own requests."""
        proto = rpc_protocol(self.net_id, name)
        caps = (max_request or self.config.request_cap, max_response or self.config.response_cap)
        self._fits_budget(caps[0])
        self._caps[name] = caps
        where = f"rpc/{name}"

        async def serve_one(stream: INetStream, peer: bytes, req: bytes) -> None:
            if not self.limiter.allow(peer, "request", trio.current_time()):
                self.counters.reject("rate_limited", peer, "request refused", where=where)
                await write_message(stream, bytes([ERR]) + b"rate_limited")
                return
            self.counters.incr("received.request")
            try:
                out = bytes([OK]) + await handler(peer, req)
            except ProtocolError as e:
                self.counters.reject(e.reason, peer, str(e), where=where)
                out = bytes([ERR]) + f"{e.reason}: {e}".encode()[:1024]
            except Exception:
                self.counters.incr("handler_error")
                log.exception("%s handler failed for %s", where, short(peer), extra={"peer": peer.hex()})
                out = bytes([ERR]) + b"internal"
            await write_message(stream, out)

        async def serve(stream: INetStream) -> None:
            await self._serve(stream, where, caps[0], serve_one)

        self.host.set_stream_handler(proto, serve)

    async def request(self, peer: bytes, name: str, data: bytes, *, timeout: float | None = None) -> bytes:
        """Send one request and return the response body. Raises RemoteError, RequestTimeout, PeerUnreachable,
        or a ProtocolError if the response itself is malformed or oversized."""
        proto = rpc_protocol(self.net_id, name)
        cap = self._caps.get(name, (self.config.request_cap, self.config.response_cap))[1] + 1
        key = (peer, name)
        try:
            with trio.fail_after(timeout if timeout is not None else self.config.request_timeout):
                pool = self._pool.get(key, [])
                while pool and not (self._live(pool[-1][0]) and self._recent(pool[-1][2])):
                    await _close(pool.pop()[0])
                if pool:
                    stream, reader, _ = pool.pop()
                else:
                    stream = await self._open(peer, proto)
                    reader = BufferedReader(stream)
                try:
                    await write_message(stream, data)
                    resp = await read_message(reader, cap)
                    if resp is None:
                        raise EOFError("stream closed before the response")
                except TRANSPORT_ERRORS as e:
                    # No retry: the request may have reached the handler (at most once; the caller decides).
                    await reset_quietly(stream)
                    raise PeerUnreachable(f"{name} to {short(peer)} failed: {e!r:.200}") from e
                except ProtocolError as e:
                    await reset_quietly(stream)
                    self.counters.reject(e.reason, peer, str(e), where=f"rpc/{name} response")
                    raise
                except BaseException:  # cancelled mid-exchange: the stream's framing is unknown
                    await reset_quietly(stream)
                    raise
                pool = self._pool.setdefault(key, [])
                if len(pool) < POOL_PER_PEER:
                    pool.append((stream, reader, trio.current_time()))
                else:
                    await reset_quietly(stream)
                self.counters.incr("sent.request")
                return parse_response(resp, name)
        except trio.TooSlowError:
            raise RequestTimeout(f"{name} to {short(peer)} timed out") from None

    # pages ----------------------------------------------------------------------------------------------------------
    def set_page_handler(self, name: str, handler: PageHandler, *, max_limit: int = 256, max_response: int = 16 * MiB):
        """Serve paged RPC `name`: `handler(peer, query, cursor, limit) -> (items, next_cursor or b"")`."""

        async def serve(peer: bytes, req: bytes) -> bytes:
            query, cursor, limit = parse_page_request(req, max_limit)
            items, nxt = await handler(peer, query, cursor, limit)
            return canonical({"items": list(items)[:limit], "next": nxt})

        self.set_handler(name, serve, max_request=PAGE_HEADER, max_response=max_response)

    async def iter_pages(
        self, peer: bytes, name: str, query: bytes, *, cursor: bytes = b"", limit: int = 256, max_pages: int = 10_000
    ) -> AsyncIterator[tuple[list[bytes], bytes]]:
        """Yield `(items, next_cursor)` pages until the peer returns an empty cursor. A cursor that does not move
        is a ProtocolError (a peer could otherwise keep us looping)."""
        cap = self._caps.get(name, (0, self.config.response_cap))[1]
        for _ in range(max_pages):
            raw = await self.request(peer, name, canonical({"query": query, "cursor": cursor, "limit": limit}))
            try:
                items, nxt = parse_page(raw, cap, limit)
            except ProtocolError as err:
                self.counters.reject(err.reason, peer, f"page from {short(peer)}: {err}", where=f"rpc/{name} page")
                raise
            yield items, nxt
            if not nxt:
                return
            if nxt == cursor:
                stuck = SchemaError(f"page from {short(peer)}: cursor did not advance")
                self.counters.reject(stuck.reason, peer, str(stuck), where=f"rpc/{name} page")
                raise stuck
            cursor = nxt
