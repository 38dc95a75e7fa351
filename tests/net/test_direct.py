"""Envelopes, requests and pages between real hosts; caps and rate limits against a raw libp2p attacker."""

import random

import multiaddr
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.peer.peerinfo import info_from_p2p_addr

from moenode.core.codec import canonical
from moenode.core.crypto import Ed25519Signer, H, ed25519_verify
from moenode.core.errors import ProtocolError, SchemaError
from moenode.core.messages import Advert, open_signed, seal
from moenode.net import PeerUnreachable, Rate, RemoteError, RequestTimeout, open_host, peer_id_of
from moenode.net.direct import (
    Direct,
    DirectConfig,
    StreamIdle,
    envelope_protocol,
    parse_page,
    parse_page_request,
    parse_response,
    read_inbound,
)
from moenode.net.framing import CHUNK, BufferedReader, MiB, encode_frame, encode_uvarint, write_message
from moenode.net.guard import Guard, GuardConfig
from moenode.net.host import default_limits
from moenode.net.identity import make_libp2p_host
from moenode.net.limits import Counters, RateLimiter
from netkit import (
    NET,
    Inbox,
    MemoryStream,
    config,
    connect_all,
    echo_pair,
    hosts,
    run_vanilla,
    seed,
    vanilla_host,
    wait_until,
)

MiB = 1 << 20


async def test_envelopes_between_three_hosts():
    inboxes: dict[str, Inbox] = {}
    with trio.fail_after(20):
        async with hosts("a", "b", "c", inboxes=inboxes) as nets:
            await connect_all(nets)
            for src in nets:
                for dst in nets:
                    if src is not dst:
                        for i in range(3):
                            await src.send(dst.account_id, b"%s->%s #%d" % (src.account_id[:2], dst.account_id[:2], i))
            for name, net in zip("abc", nets):
                await inboxes[name].wait_for(6)
                got = inboxes[name].items
                for src in nets:
                    if src is not net:  # in order, attributed to the right sender
                        mine = [d for p, d in got if p == src.account_id]
                        assert mine == [b"%s->%s #%d" % (src.account_id[:2], net.account_id[:2], i) for i in range(3)]
            # one outbound stream per peer, reused
            a = nets[0]
            stream = a.direct._out[nets[1].account_id]
            await a.send(nets[1].account_id, b"again")
            assert a.direct._out[nets[1].account_id] is stream
            assert a.metrics()["sent.envelope"] == 7


async def test_large_envelope_is_chunked_and_reassembled():
    inboxes: dict[str, Inbox] = {}
    data = H("x", b"seed") * (5 * MiB // 32) + b"tail"
    with trio.fail_after(20):
        async with hosts("big1", "big2", inboxes=inboxes) as (a, b):
            await a.connect(b.addrs()[0])
            await a.send(b.account_id, data)
            await inboxes["big2"].wait_for(1)
            assert inboxes["big2"].items == [(a.account_id, data)]
            assert b.counters.rejections() == {}  # an honest sender keeps within every receive window
            with pytest.raises(ValueError):  # over the envelope cap is our own bug
                await a.send(b.account_id, b"\0" * (a.config.direct.envelope_cap + 1))


async def test_send_dials_on_demand_and_unknown_peer_is_unreachable():
    inboxes: dict[str, Inbox] = {}
    with trio.fail_after(20):
        async with hosts("d1", "d2", inboxes=inboxes) as (a, b):
            a.add_address(b.account_id, b.addrs()[0].split("/p2p/")[0])
            await a.send(b.account_id, b"hi")  # no explicit connect
            await inboxes["d2"].wait_for(1)
            with pytest.raises(PeerUnreachable):
                await a.send(H("key", b"nobody")[:32], b"x")


async def test_request_response_errors_and_pages():
    with trio.fail_after(20):
        async with hosts("r1", "r2") as (a, b):
            calls = []

            async def echo(peer: bytes, data: bytes) -> bytes:
                calls.append(peer)
                if data == b"bad":
                    raise SchemaError("not a valid query")
                if data == b"bug":
                    raise RuntimeError("handler bug")
                return data[::-1]

            b.set_request_handler("echo", echo, max_request=1024)
            await a.connect(b.addrs()[0])
            for i in range(5):
                assert await a.request(b.account_id, "echo", b"abc%d" % i) == b"%dcba" % i
            assert calls == [a.account_id] * 5
            assert len(a.direct._pool[(b.account_id, "echo")]) == 1  # one stream, reused
            with pytest.raises(RemoteError, match="schema"):
                await a.request(b.account_id, "echo", b"bad")
            with pytest.raises(RemoteError, match="internal"):
                await a.request(b.account_id, "echo", b"bug")
            assert b.counters.rejected("schema") == 1 and b.counters.get("handler_error") == 1
            # the stream survives an error answer
            assert await a.request(b.account_id, "echo", b"ok") == b"ko"
            # an oversized request is cut off by the server and counted
            with pytest.raises(PeerUnreachable):
                await a.request(b.account_id, "echo", b"x" * 2000)
            assert b.counters.rejected("oversized") == 1
            with pytest.raises(PeerUnreachable):  # no such protocol
                await a.request(b.account_id, "nothing", b"")

            async def slow(peer: bytes, data: bytes) -> bytes:
                await trio.sleep(5)
                return b""

            b.set_request_handler("slow", slow)
            with pytest.raises(RequestTimeout):
                await a.request(b.account_id, "slow", b"", timeout=0.2)

            # pages: items 0..9 by cursor, 4 per page
            items = [b"item%d" % i for i in range(10)]

            async def page(peer: bytes, query: bytes, cursor: bytes, limit: int):
                assert query == b"certs"
                start = int(cursor or b"0")
                end = min(len(items), start + limit)
                return items[start:end], (b"%d" % end if end < len(items) else b"")

            b.set_page_handler("sync", page)
            pages = [p async for p in a.iter_pages(b.account_id, "sync", b"certs", limit=4)]
            assert [len(p[0]) for p in pages] == [4, 4, 2]
            assert [i for p, _ in pages for i in p] == items
            assert pages[-1][1] == b""
            resumed = [p async for p in a.iter_pages(b.account_id, "sync", b"certs", cursor=b"8", limit=4)]
            assert resumed == [(items[8:], b"")]

            async def stuck(peer, query, cursor, limit):
                return [b"same"], b"c"  # never advances

            b.set_page_handler("stuck", stuck)
            with pytest.raises(SchemaError, match="did not advance"):
                async for _ in a.iter_pages(b.account_id, "stuck", b"", cursor=b"c"):
                    pass
            with pytest.raises(RemoteError, match="schema"):  # over the server's limit
                async for _ in a.iter_pages(b.account_id, "sync", b"certs", limit=10_000):
                    pass


async def test_raw_attacker_is_rejected_counted_and_harmless():
    """A peer writing raw bytes on the envelope protocol: oversized, malformed, truncated, corrupted."""
    inboxes: dict[str, Inbox] = {}
    with trio.fail_after(30):
        async with hosts("victim", "friend", inboxes=inboxes) as (victim, friend):
            evil = vanilla_host()
            async with run_vanilla(evil):
                info = info_from_p2p_addr(multiaddr.Multiaddr(victim.addrs()[0]))
                await evil.connect(info)
                proto = envelope_protocol(NET)

                async def attack(raw: bytes, reason: str) -> None:
                    before = victim.counters.rejected(reason)
                    s = await evil.new_stream(info.peer_id, [proto])
                    try:
                        await s.write(raw)
                        await s.close()
                    except Exception:
                        pass  # the victim may reset first
                    await wait_until(lambda: victim.counters.rejected(reason) == before + 1)

                cap = victim.config.direct.envelope_cap
                await attack(encode_uvarint(1 << 40), "oversized")  # header frame claiming a terabyte
                huge = encode_frame(canonical({"len": cap + 1, "hash": b"\0" * 32}))
                await attack(huge, "oversized")  # a well-formed header over the envelope cap
                await attack(b"\xff" * 12, "malformed")  # varint too long
                good_head = encode_frame(canonical({"len": 100, "hash": H("transfer", b"a" * 100)}))
                await attack(good_head + encode_frame(b"a" * 40), "truncated")
                data = b"b" * (CHUNK + 10)
                head = encode_frame(canonical({"len": len(data), "hash": H("transfer", data)}))
                await attack(head + encode_frame(b"c" + data[1:CHUNK]) + encode_frame(data[CHUNK:]), "hash_mismatch")
                assert inboxes["victim"].items == []
                # the victim still serves honest peers
                await friend.connect(victim.addrs()[0])
                await friend.send(victim.account_id, b"still alive")
                await inboxes["victim"].wait_for(1)
                assert inboxes["victim"].items == [(friend.account_id, b"still alive")]
                r = victim.counters.rejections()
                assert r["oversized"] == 2 and r["malformed"] == 1 and r["truncated"] == 1
                assert r["hash_mismatch"] == 1


async def test_envelope_and_request_floods_are_rate_limited():
    limits = default_limits() | {"envelope": Rate(1.0, 5.0), "request": Rate(1.0, 3.0)}
    with trio.fail_after(20):
        async with echo_pair("flood", limits=limits) as (a, b, inbox):
            for i in range(30):
                await a.send(b.account_id, b"%d" % i)
            await wait_until(lambda: len(inbox.items) + b.counters.rejected("rate_limited") == 30)
            assert 5 <= len(inbox.items) < 30
            assert b.counters.rejected("rate_limited") >= 1
            refused = 0
            for i in range(20):
                try:
                    await a.request(b.account_id, "echo", b"q")
                except RemoteError as e:
                    assert "rate_limited" in str(e)
                    refused += 1
            assert refused >= 1
            assert b.counters.rejected("rate_limited") >= 1 + refused


async def test_node_rejections_from_open_signed_are_counted():
    """The node decodes with open_signed inside on_message; its ProtocolErrors are counted by reason."""
    accepted = []

    async def on_message(peer: bytes, data: bytes) -> None:
        accepted.append(open_signed(data, NET, ed25519_verify, expect=(Advert,)).msg)

    signer = Ed25519Signer(H("key", b"sealer"))
    advert = Advert(model_id=H("model", b"m"), model_name="m", price=5, addrs=(), time_ms=1)
    good = seal(advert, signer, NET).encode()
    foreign = seal(advert, signer, H("network", b"elsewhere")).encode()
    forged = bytearray(good)
    forged[-5] ^= 1  # inside the signature
    with trio.fail_after(20):
        async with open_host(config("node-a")) as a, open_host(config("node-b"), on_message) as b:
            await a.connect(b.addrs()[0])
            for data in (foreign, bytes(forged), b"\x01garbage", good):
                await a.send(b.account_id, data)
            await wait_until(lambda: len(accepted) == 1)
            assert accepted == [advert]
            r = b.counters.rejections()
            assert r["wrong_network"] == 1 and r["bad_signature"] == 1 and r["malformed"] == 1
            b.report(a.account_id, SchemaError("reported by the node"))
            assert b.metrics()["rejected.schema"] == 1


async def test_cached_streams_are_not_reused_once_the_receiver_may_have_closed_them_as_idle():
    with trio.fail_after(30):
        async with echo_pair("idle", guard=GuardConfig(idle_timeout=0.4)) as (a, b, inbox):
            for i in range(3):
                await a.send(b.account_id, b"%d" % i)
                assert await a.request(b.account_id, "echo", b"%d" % i) == b"%d" % i
                await trio.sleep(0.5)  # the receiver resets both streams as idle meanwhile
            await inbox.wait_for(3)
            assert [d for _, d in inbox.items] == [b"0", b"1", b"2"]
            assert b.counters.get("streams_idle_closed") >= 2 and b.counters.rejections() == {}


def offline_guard(config: GuardConfig = GuardConfig()) -> Guard:
    """A guard whose budget and deadlines are used without a host (its hooks are tested on real hosts)."""
    return Guard(None, Counters(), config)  # type: ignore[arg-type]


async def test_production_deadlines_in_virtual_time(autojump_clock):
    guard = offline_guard()
    peer = b"p" * 32
    pid = peer_id_of(Ed25519Signer(seed("virtual")).public_key)
    start = trio.current_time()
    with pytest.raises(StreamIdle):  # nothing starts: idle after 60 s
        await read_inbound(BufferedReader(MemoryStream(b"", pid, hang=True)), 16 * MiB, guard, peer)
    assert trio.current_time() - start == pytest.approx(guard.config.idle_timeout)

    head = Pipe()
    await write_message(head, b"m" * (10 * MiB))
    partial = bytes(head.buf[: 3 * MiB])  # the header and 3 of 10 MiB, then silence
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        async def watch_budget() -> None:
            await trio.sleep(1)
            assert guard.budget.held_by(peer) == 10 * MiB

        nursery.start_soon(watch_budget)
        with pytest.raises(ProtocolError) as e:
            await read_inbound(BufferedReader(MemoryStream(partial, pid, hang=True)), 16 * MiB, guard, peer)
    assert e.value.reason == "read_timeout" and guard.budget.held == 0
    assert trio.current_time() - start == pytest.approx(guard.config.read_deadline(10 * MiB))  # 20 s + 20 s


async def test_a_peer_over_its_partial_budget_waits_for_room(autojump_clock):
    guard = offline_guard(GuardConfig(partial_bytes_per_peer=24 * MiB))
    peer = b"q" * 32
    pid = peer_id_of(Ed25519Signer(seed("waiter")).public_key)
    data = b"w" * (16 * MiB)
    whole = Pipe()
    await write_message(whole, data)
    first = MemoryStream(bytes(whole.buf[: 8 * MiB]), pid, hang=True)  # stalls half way
    second = MemoryStream(bytes(whole.buf), pid)
    results: list = []

    async def read(stream) -> None:
        try:
            results.append(await read_inbound(BufferedReader(stream), 16 * MiB, guard, peer))
        except ProtocolError as e:
            results.append(e.reason)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read, first)
        await trio.sleep(1)
        nursery.start_soon(read, second)  # 16 + 16 MiB > 24 MiB: waits until the first times out
    assert results == ["read_timeout", data]
    assert guard.counters.get("partial_waits") == 1 and guard.budget.held == 0


class Pipe:
    """An in-memory byte pipe for writing messages (see test_framing)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    async def write(self, data: bytes) -> None:
        self.buf += data


async def test_fuzz_inbound_streams_end_cleanly_and_every_refusal_is_counted():
    """Valid and mutated envelope streams through the real serve loop: each stream ends at a message boundary, or is
    reset with exactly one counted rejection; only whole, hash-checked messages are delivered; memory comes back."""
    rng = random.Random(7)
    counters = Counters()
    host = make_libp2p_host(seed("fuzz-direct"))
    guard = Guard(host, counters, GuardConfig())
    unlimited = RateLimiter({"envelope": Rate(1e9, 1e9), "request": Rate(1e9, 1e9)})
    got: list[bytes] = []

    async def on_message(peer: bytes, data: bytes) -> None:
        got.append(data)

    direct = Direct(host, NET, counters, unlimited, DirectConfig(envelope_cap=4096), on_message, guard)
    pid = peer_id_of(Ed25519Signer(seed("fuzzer")).public_key)
    for i in range(3000):
        msgs = [rng.randbytes(rng.choice([0, 3, 100, 3000])) for _ in range(rng.randint(1, 3))]
        valid = Pipe()
        for m in msgs:
            await write_message(valid, m)
        raw = bytes(valid.buf)
        if i % 2:
            raw = bytes(b ^ (1 << rng.randrange(8)) if rng.random() < 0.02 else b for b in raw)
            raw = raw[: rng.randint(0, len(raw))] if rng.random() < 0.3 else raw
        before, got[:] = sum(counters.rejections().values()), []
        stream = MemoryStream(raw, pid, step=rng.randint(1, 512))
        await direct._serve(stream, "envelope", 4096, direct._one_envelope)  # type: ignore[arg-type]
        refused = sum(counters.rejections().values()) - before
        assert refused == (1 if stream.was_reset else 0)
        assert got == msgs[: len(got)] and (stream.was_reset or raw != bytes(valid.buf) or got == msgs)
        assert guard.budget.held == 0
    assert set(counters.rejections()) <= {"malformed", "oversized", "truncated", "hash_mismatch"}


canonical_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
peer_bytes = st.binary(max_size=200) | canonical_values.map(canonical)


@settings(max_examples=400, deadline=None)
@given(peer_bytes)
def test_fuzz_request_and_page_parsers_raise_only_protocol_errors(data):
    for parse in (lambda: parse_response(data, "x"), lambda: parse_page_request(data, 64),
                  lambda: parse_page(data, 1 << 20, 64)):
        try:
            parse()
        except (ProtocolError, RemoteError):
            pass
