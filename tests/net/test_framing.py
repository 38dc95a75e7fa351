"""Frame and chunked-message caps over an in-memory byte pipe (the libp2p-stream versions are in test_direct)."""

import pytest

from moenode.core.codec import canonical
from moenode.core.crypto import H
from moenode.core.errors import DecodeError, TooLarge
from moenode.net.framing import (
    BufferedReader,
    CHUNK,
    encode_frame,
    encode_uvarint,
    read_frame,
    read_message,
    write_message,
)


class Pipe:
    """A byte buffer with the Reader/Writer shape; each read returns at most `step` bytes (partial reads)."""

    def __init__(self, data: bytes = b"", step: int = 1 << 30):
        self.buf, self.step, self.writes = bytearray(data), step, 0

    async def read(self, n: int = -1) -> bytes:
        n = len(self.buf) if n < 0 else n
        out = bytes(self.buf[: min(n, self.step)])
        del self.buf[: len(out)]
        return out

    async def write(self, data: bytes) -> None:
        self.writes += 1
        self.buf += data


async def test_frame_round_trip_and_clean_eof():
    p = Pipe(encode_frame(b"abc") + encode_frame(b"") + encode_frame(b"x" * 300), step=2)
    assert await read_frame(p, 1000) == b"abc"
    assert await read_frame(p, 1000) == b""
    assert await read_frame(p, 1000) == b"x" * 300
    assert await read_frame(p, 1000) is None  # end of stream at a boundary


async def test_oversized_frame_rejected_before_the_body():
    p = Pipe(encode_uvarint(10_000_000))  # claims 10 MB and sends nothing more
    with pytest.raises(TooLarge) as e:
        await read_frame(p, 1024)
    assert e.value.reason == "oversized"


@pytest.mark.parametrize(
    "raw",
    [b"\xff" * 11, b"\x80\x00"],  # longer than 10 bytes; not minimally encoded
)
async def test_malformed_varint(raw):
    with pytest.raises(DecodeError) as e:
        await read_frame(Pipe(raw + b"x" * 20), 1 << 20)
    assert e.value.reason == "malformed"


@pytest.mark.parametrize("raw", [b"\x85", encode_uvarint(10) + b"short"])
async def test_truncated_frame(raw):
    with pytest.raises(DecodeError) as e:
        await read_frame(Pipe(raw), 1 << 20)
    assert e.value.reason == "truncated"


@pytest.mark.parametrize("size", [0, 1, 1000, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
async def test_message_round_trip(size):
    data = bytes(i % 251 for i in range(size))
    p = Pipe()
    await write_message(p, data)
    assert p.writes == (1 if size <= CHUNK else 1 + -(-size // CHUNK))
    assert await read_message(p, 4 * CHUNK) == data
    assert await read_message(p, 4 * CHUNK) is None


async def test_message_cap_checked_from_the_header():
    p = Pipe()
    await write_message(p, b"y" * 5000)
    with pytest.raises(TooLarge):
        await read_message(p, 4096)


async def test_corrupted_chunk_rejected():
    data = b"z" * (2 * CHUNK + 5)
    p = Pipe()
    await write_message(p, data)
    raw = bytearray(p.buf)
    raw[-3] ^= 0x01  # flip one bit in the last chunk
    with pytest.raises(DecodeError) as e:
        await read_message(Pipe(bytes(raw)), 4 * CHUNK)
    assert e.value.reason == "hash_mismatch"


async def test_chunk_larger_than_chunk_size_rejected():
    data = b"q" * (CHUNK + 10)
    head = encode_frame(canonical({"len": len(data), "hash": H("transfer", data)}))
    with pytest.raises(TooLarge):  # a single 1 MiB + 10 frame: over the chunk cap
        await read_message(Pipe(head + encode_frame(data)), 4 * CHUNK)


async def test_truncated_message_and_bad_header():
    p = Pipe()
    await write_message(p, b"w" * (CHUNK + 100))
    cut = bytes(p.buf[: CHUNK // 2])
    with pytest.raises(DecodeError) as e:
        await read_message(Pipe(cut), 4 * CHUNK)
    assert e.value.reason == "truncated"
    for head in (canonical({"len": -1, "hash": b"\0" * 32}), canonical({"len": 3}), canonical([1, 2]), b"\xc1"):
        with pytest.raises(DecodeError):
            await read_message(Pipe(encode_frame(head) + encode_frame(b"abc")), 1024)


async def test_buffered_reader_reads_many_messages_from_few_stream_reads():
    p = Pipe()
    msgs = [b"m%d" % i * (i + 1) for i in range(50)] + [b"L" * (CHUNK + 3)]
    for m in msgs:
        await write_message(p, m)
    reads = 0
    inner_read = p.read

    async def counting_read(n: int = -1) -> bytes:
        nonlocal reads
        reads += 1
        return await inner_read(n)

    p.read = counting_read  # type: ignore[method-assign]
    r = BufferedReader(p)
    assert [await read_message(r, 4 * CHUNK) for _ in msgs] == msgs
    assert await read_message(r, 4 * CHUNK) is None
    assert reads < 20  # 50 small messages came out of one read-ahead
