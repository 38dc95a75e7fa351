"""Frame and chunked-message caps over an in-memory byte pipe (the libp2p-stream versions are in test_direct)."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moenode.core.codec import canonical
from moenode.core.crypto import H
from moenode.core.errors import DecodeError, ProtocolError, TooLarge
from moenode.net.framing import (
    CHUNK,
    BufferedReader,
    FrameTracker,
    Header,
    encode_frame,
    encode_uvarint,
    read_body,
    read_frame,
    read_header,
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


async def test_readable_waits_for_a_byte_and_reports_the_end():
    r = BufferedReader(Pipe(b"ab"))
    assert await r.readable() and await r.read(1) == b"a"
    assert await r.readable() and await r.read(5) == b"b"
    assert not await r.readable()


async def test_header_then_body():
    p = Pipe()
    await write_message(p, b"d" * 3000)
    head = await read_header(p, 4096)
    assert head == Header(3000, H("transfer", b"d" * 3000))
    assert await read_body(p, head) == b"d" * 3000
    assert await read_header(p, 4096) is None


def test_frame_tracker_follows_frames_across_any_split():
    frames = [b"", b"a", b"b" * 200, b"c" * 70000]
    stream = b"".join(encode_frame(f) for f in frames)
    boundaries = {sum(len(encode_frame(f)) for f in frames[:k]) for k in range(len(frames) + 1)}
    expected = [e for f in frames for e in (("head", len(f)), ("end", len(f)))]
    for step in (1, 2, 3, 7, 128, len(stream)):
        t = FrameTracker(cap=1 << 20)
        events = []
        for i in range(0, len(stream), step):
            events += t.feed(stream[i : i + step])
            assert t.in_frame == (min(i + step, len(stream)) not in boundaries)
        assert events == expected
    with pytest.raises(TooLarge):
        FrameTracker(cap=100).feed(encode_uvarint(101))
    with pytest.raises(DecodeError):
        FrameTracker(cap=1 << 80).feed(b"\xff" * 11)
    t = FrameTracker(cap=100)
    t.feed(encode_uvarint(50) + b"x" * 10)
    assert t.in_frame and t.declared == 50


# Fuzzing: whatever bytes a peer sends, the readers return messages or raise a ProtocolError with a known reason.
REASONS = {"malformed", "oversized", "truncated", "hash_mismatch"}
FUZZ_CHUNK = 64  # small chunks, so short inputs exercise multi-chunk messages


def run_now(coro):
    """Run a coroutine that never has to wait (the readers over a Pipe) to its end, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the coroutine waited for something")


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three random edits of `data`: flip, overwrite, insert, delete, truncate, or splice a huge varint."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif op == 2:
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            del buf[at : at + rng.randint(1, 16)]
        elif op == 4:
            del buf[at:]
        else:
            buf[at:at] = encode_uvarint(rng.choice([1 << 20, 1 << 40, (1 << 64) - 1]))
    return bytes(buf)


async def drain(p, cap: int) -> list[bytes]:
    out = []
    while (m := await read_message(p, cap, chunk=FUZZ_CHUNK)) is not None:
        out.append(m)
    return out


async def test_fuzz_read_message_rejects_only_cleanly():
    rng = random.Random(20240611)
    seen: dict[str, int] = {}
    inputs = 0
    for _ in range(4000):
        msgs = [rng.randbytes(rng.choice([0, 1, 5, 63, 64, 65, 200])) for _ in range(rng.randint(1, 3))]
        valid = Pipe()
        for m in msgs:
            await write_message(valid, m, chunk=FUZZ_CHUNK)
        raw = bytes(valid.buf)
        assert await drain(Pipe(raw, step=rng.randint(1, 40)), 256) == msgs
        for bad in (mutate(rng, raw), rng.randbytes(rng.randint(0, 40))):
            inputs += 1
            try:
                await drain(Pipe(bad, step=rng.randint(1, 40)), 256)
            except ProtocolError as e:
                assert e.reason in REASONS, e
                seen[e.reason] = seen.get(e.reason, 0) + 1
    assert inputs == 8000 and set(seen) == REASONS, seen


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=64), st.lists(st.integers(1, 16), max_size=8))
def test_fuzz_frame_tracker_agrees_with_read_frame(data, splits):
    async def frames() -> list[bytes]:
        p, out = Pipe(data), []
        while (f := await read_frame(p, 40)) is not None:
            out.append(f)
        return out

    t = FrameTracker(cap=40)
    events, at = [], 0
    try:
        for size in [*splits, len(data)]:
            events += t.feed(data[at : at + size])
            at += size
    except ProtocolError as e:
        assert e.reason in REASONS
        return
    try:
        parsed = run_now(frames())
    except ProtocolError:  # read_frame also refuses non-minimal varints, which the tracker only follows
        return
    assert events == [e for f in parsed for e in (("head", len(f)), ("end", len(f)))]
