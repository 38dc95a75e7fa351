"""Frames and chunked messages on a byte stream, with hard caps.

Theory of operation: two layers, both pure functions over a `Reader` (`async read(n) -> bytes`) and a `Writer`
(`async write(data)`), so they run on libp2p streams and on in-memory buffers alike.

* A **frame** is `uvarint(len) || bytes`. `read_frame(r, cap)` reads the varint one byte at a time and rejects a
  length above `cap` *before* reading the body, so a peer cannot make us allocate what it claims. A clean end of
  stream exactly at a frame boundary returns `None`; anything else that ends early is a truncation.
* A **message** is one header frame, `canonical({"len": n, "hash": H("transfer", data)})`, followed by
  ceil(n / CHUNK) data frames of at most CHUNK (1 MiB) each. The reader checks the declared length against the
  message cap before reading any data, bounds every chunk, and compares the BLAKE2b hash of the reassembled bytes.
  Small messages are written with a single `write` call (header and data together).

Readers wrap a stream in `BufferedReader`, which reads ahead in 256 KiB pieces: a varint and a header would
otherwise cost several stream reads each, which made small messages 4x slower than a raw frame. `readable()` waits
for the first byte of the next message, so a caller can time an idle stream apart from a message in progress;
`read_header` and `read_body` split `read_message` where a caller needs the declared length before the data
arrives (to reserve memory for it and to set its deadline).

`FrameTracker` follows uvarint-prefixed frames through bytes that someone else parses (py-libp2p's pubsub reader):
it says when a frame is in progress and how long it declared, so that its deadline and memory can be bounded from
outside the parser.

Everything a peer can get wrong raises a `ProtocolError`: `TooLarge` (reason "oversized") for caps,
`DecodeError` for a malformed varint or header ("malformed"), a truncated stream ("truncated") or a hash mismatch
("hash_mismatch"). Transport failures (reset, connection lost) pass through as the transport's own exceptions.
"""

from dataclasses import dataclass
from typing import Protocol

from moenode.core.codec import canonical, decode
from moenode.core.crypto import DIGEST_SIZE, H
from moenode.core.errors import DecodeError, TooLarge

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 1 * MiB
HEADER_CAP = 128  # canonical {"hash": 32 B, "len": u64} is about 50 bytes
MAX_VARINT_BYTES = 10  # a uvarint of up to 64 bits


class Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class Writer(Protocol):
    async def write(self, data: bytes) -> None: ...


class BufferedReader:
    """Reads ahead in large pieces so that the small reads of a varint and a header cost no stream round trips.

    Owned by the one task that reads the stream; wrap a stream once and keep the wrapper for its lifetime."""

    def __init__(self, stream: Reader, size: int = 256 * 1024):
        self.stream, self.size = stream, size
        self._buf = b""
        self._pos = 0

    async def readable(self) -> bool:
        """Wait until at least one byte can be read without waiting; False at the end of the stream."""
        if self._pos < len(self._buf):
            return True
        self._buf, self._pos = await _read_some(self.stream, self.size), 0
        return bool(self._buf)

    async def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._buf):
            if n >= self.size:  # large reads go straight through
                return await self.stream.read(n)
            self._buf, self._pos = await self.stream.read(self.size), 0
            if not self._buf:
                return b""
        end = len(self._buf) if n < 0 else min(len(self._buf), self._pos + n)
        out = self._buf[self._pos : end]
        self._pos = end
        return out


def encode_uvarint(n: int) -> bytes:
    if n < 0:
        raise ValueError("uvarint must be non-negative")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_frame(data: bytes) -> bytes:
    return encode_uvarint(len(data)) + data


async def _read_some(r: Reader, n: int) -> bytes:
    """One read of at most n bytes; b"" means end of stream (EOF exceptions are folded into that)."""
    try:
        return await r.read(n)
    except EOFError:  # libp2p's StreamEOF / MuxedStreamEOF derive from EOFError
        return b""


async def _read_exactly(r: Reader, n: int, what: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = await _read_some(r, n - len(buf))
        if not part:
            raise DecodeError(f"{what}: stream ended after {len(buf)} of {n} bytes", reason="truncated")
        buf += part
    return bytes(buf)


async def read_frame(r: Reader, cap: int) -> bytes | None:
    """Read one frame of at most `cap` bytes; None on a clean end of stream before the frame starts."""
    value = shift = 0
    for i in range(MAX_VARINT_BYTES):
        b = await _read_some(r, 1)
        if not b:
            if i == 0:
                return None
            raise DecodeError("frame length: stream ended inside the varint", reason="truncated")
        value |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            if i > 0 and b[0] == 0:
                raise DecodeError("frame length: varint is not minimally encoded")
            break
    else:
        raise DecodeError(f"frame length: varint longer than {MAX_VARINT_BYTES} bytes")
    if value > cap:
        raise TooLarge(f"frame of {value} bytes exceeds the cap of {cap}")
    return await _read_exactly(r, value, "frame body")


def _header(data: bytes) -> bytes:
    return encode_frame(canonical({"len": len(data), "hash": H("transfer", data)}))


async def write_message(w: Writer, data: bytes, *, chunk: int = CHUNK) -> None:
    """Write `data` as a header frame plus chunks of at most `chunk` bytes."""
    head = _header(data)
    if len(data) <= chunk:
        await w.write(head + (encode_frame(data) if data else b""))
        return
    await w.write(head)
    view = memoryview(data)
    for off in range(0, len(data), chunk):
        await w.write(encode_frame(bytes(view[off : off + chunk])))


@dataclass(frozen=True)
class Header:
    """A message's header: how many bytes follow and their hash."""

    length: int
    digest: bytes


async def read_header(r: Reader, cap: int) -> Header | None:
    """Read a message header declaring at most `cap` bytes; None on a clean end of stream before it starts."""
    raw = await read_frame(r, HEADER_CAP)
    if raw is None:
        return None
    head = decode(raw, max_bytes=HEADER_CAP)
    if (
        not isinstance(head, dict)
        or set(head) != {"len", "hash"}
        or not isinstance(head["len"], int)
        or isinstance(head["len"], bool)
        or head["len"] < 0
        or not isinstance(head["hash"], bytes)
        or len(head["hash"]) != DIGEST_SIZE
    ):
        raise DecodeError("message header: expected {len: uint, hash: 32 bytes}")
    if head["len"] > cap:
        raise TooLarge(f"message of {head['len']} bytes exceeds the cap of {cap}")
    return Header(head["len"], head["hash"])


async def read_body(r: Reader, head: Header, *, chunk: int = CHUNK) -> bytes:
    """Read the chunks that follow `head` and check their hash."""
    buf = bytearray()
    while len(buf) < head.length:
        part = await read_frame(r, min(chunk, head.length - len(buf)))
        if part is None:
            raise DecodeError(f"message: stream ended after {len(buf)} of {head.length} bytes", reason="truncated")
        if not part:
            raise DecodeError("message: empty chunk")
        buf += part
    data = bytes(buf)
    if H("transfer", data) != head.digest:
        raise DecodeError("message: reassembled bytes do not match the declared hash", reason="hash_mismatch")
    return data


async def read_message(r: Reader, cap: int, *, chunk: int = CHUNK) -> bytes | None:
    """Read one chunked message of at most `cap` bytes; None on a clean end of stream before it starts."""
    head = await read_header(r, cap)
    return None if head is None else await read_body(r, head, chunk=chunk)


class FrameTracker:
    """Follows uvarint-length-prefixed frames through a byte stream that another reader parses.

    `feed(data)` takes the bytes as they are read and returns what they completed, in order: `("head", n)` when a
    length prefix is complete (the frame declares n bytes) and `("end", n)` when that frame's body is complete.
    `in_frame` is true from a frame's first byte to its last. A length above `cap`, or a prefix longer than a
    10-byte uvarint, raises the same errors as `read_frame`."""

    __slots__ = ("cap", "_value", "_shift", "_prefix", "_left")

    def __init__(self, cap: int):
        self.cap = cap
        self._value = self._shift = self._prefix = 0  # the length prefix read so far (`_prefix` bytes of it)
        self._left = -1  # body bytes still to come; -1 while no complete prefix

    @property
    def in_frame(self) -> bool:
        return self._prefix > 0 or self._left > 0

    @property
    def declared(self) -> int:
        """The length the frame in progress declared (0 while its prefix is incomplete)."""
        return self._value if self._left > 0 else 0

    def feed(self, data: bytes) -> list[tuple[str, int]]:
        events: list[tuple[str, int]] = []
        i = 0
        while i < len(data):
            if self._left > 0:
                take = min(self._left, len(data) - i)
                self._left -= take
                i += take
            else:
                if self._left == 0:  # the previous frame is complete: this byte starts a new prefix
                    self._value = self._shift = self._prefix = 0
                    self._left = -1
                byte = data[i]
                i += 1
                self._prefix += 1
                self._value |= (byte & 0x7F) << self._shift
                self._shift += 7
                if byte & 0x80:
                    if self._prefix >= MAX_VARINT_BYTES:
                        raise DecodeError(f"frame length: varint longer than {MAX_VARINT_BYTES} bytes")
                    continue
                if self._value > self.cap:
                    raise TooLarge(f"frame of {self._value} bytes exceeds the cap of {self.cap}")
                events.append(("head", self._value))
                self._prefix = 0
                self._left = self._value
            if self._left == 0:
                events.append(("end", self._value))
        return events
