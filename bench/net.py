"""Networking layer cost: moenode.net against raw py-libp2p streams on the same hosts, in one process, loopback.

Measured in the same run:
- connect: `NetHost.connect` to a fresh, idle peer (TCP + Noise + Yamux, one connection per peer).
- envelope RTT: A `send`s an envelope, B's `on_message` sends it back, A's handler wakes the waiter; baseline: the
  same ping-pong over one raw libp2p stream with libp2p's own varint framing (`encode_varint_prefixed` /
  `read_varint_prefixed_bytes`) and no caps, hashes or rate limits.
- request RTT: `request` on a pooled stream; baseline: raw request/response on one reused stream.
- chunked throughput: 8 MiB envelopes (1 MiB chunks, BLAKE2b check, capped reader) A -> B; baseline: the same bytes
  as raw 1 MiB varint frames on one stream.
- gossip latency: 5 hosts, each dialling up to 2 earlier ones, all subscribed to `certs`; 20 spaced 512-byte
  publishes from rotating hosts; latency from publish to each delivery (no baseline: it is libp2p's GossipSub).
Prints ratios (ours / raw) and writes JSON (`--json` prints it as the last line too).
"""

import argparse
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol

from moenode.core.crypto import H
from moenode.net import NetConfig, Rate, open_host
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes
from moenode.net.framing import MiB

from _report import write_result

ROOT = Path(__file__).resolve().parents[1]
NET = H("network", b"bench/net")
RAW = TProtocol("/bench/raw-echo/1.0.0")
RAW_SINK = TProtocol("/bench/raw-sink/1.0.0")


def cfg(name: str, **kw) -> NetConfig:
    return NetConfig(seed=H("key", name.encode()), net_id=NET, **kw)


def ms(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"p50_ms": 1e3 * statistics.median(xs), "p90_ms": 1e3 * xs[int(0.9 * (len(xs) - 1))],
            "max_ms": 1e3 * xs[-1], "n": len(xs)}


async def raw_echo(stream) -> None:
    try:
        while frame := await read_varint_prefixed_bytes(stream):
            await stream.write(encode_varint_prefixed(frame))
    except Exception:
        pass


async def raw_sink(stream) -> None:
    try:
        while frame := await read_varint_prefixed_bytes(stream):
            if frame == b"end":
                await stream.write(encode_varint_prefixed(b"ok"))
    except Exception:
        pass


@dataclass
class _Pair:
    """The two hosts' envelope handlers: b echoes small envelopes back to a (setting `pong`) and counts the large
    ones of the bulk run (setting `bulk_done` at `n_bulk`)."""

    n_bulk: int
    b: Any = None
    pong: trio.Event = field(default_factory=trio.Event)
    bulk_done: trio.Event = field(default_factory=trio.Event)
    received: int = 0

    async def on_a(self, peer: bytes, data: bytes) -> None:
        self.pong.set()

    async def on_b(self, peer: bytes, data: bytes) -> None:
        if len(data) > 1024:
            self.received += 1
            if self.received == self.n_bulk:
                self.bulk_done.set()
            return
        await self.b.send(peer, data)


async def _echo(peer: bytes, data: bytes) -> bytes:
    return data


async def pair_bench(n_rtt: int, n_bulk: int) -> dict:
    out: dict = {}
    pair = _Pair(n_bulk)
    limits = {k: Rate(1e9, 1e9) for k in ("envelope", "request", "gossip")}  # measure the path, not the limits
    async with open_host(cfg("bench-a", limits=limits), pair.on_a) as a, \
            open_host(cfg("bench-b", limits=limits), pair.on_b) as b:
        pair.b = b
        b.host.set_stream_handler(RAW, raw_echo)
        b.host.set_stream_handler(RAW_SINK, raw_sink)
        b.set_request_handler("echo", _echo)
        await trio.sleep(0.5)  # let both hosts finish starting their services
        t0 = time.perf_counter()
        await a.connect(b.addrs()[0])
        out["connect_ms"] = 1e3 * (time.perf_counter() - t0)

        payload = b"e" * 200
        # warm up both paths (first stream open, identify)
        await a.send(b.account_id, payload)
        await pair.pong.wait()
        raw = await a.host.new_stream(b.peer_id, [RAW])
        await raw.write(encode_varint_prefixed(payload))
        await read_varint_prefixed_bytes(raw)

        out.update(await _round_trips(a, b, raw, pair, n_rtt, payload))
        out.update(await _bulk(a, b, pair, n_bulk))
        await raw.close()
    return out


async def _round_trips(a, b, raw, pair: _Pair, n_rtt: int, payload: bytes) -> dict:
    """Round trips of an envelope (echoed as another), of a raw stream and of a request, interleaved in blocks."""
    rtts: list[float] = []
    raw_rtts: list[float] = []
    req_rtts: list[float] = []
    blocks = 4  # interleave the three paths so that load from other processes hits them alike
    for _ in range(blocks):
        for _ in range(n_rtt // blocks):
            pair.pong = trio.Event()
            t = time.perf_counter()
            await a.send(b.account_id, payload)
            await pair.pong.wait()
            rtts.append(time.perf_counter() - t)
        for _ in range(n_rtt // blocks):
            t = time.perf_counter()
            await raw.write(encode_varint_prefixed(payload))
            await read_varint_prefixed_bytes(raw)
            raw_rtts.append(time.perf_counter() - t)
        for _ in range(n_rtt // blocks):
            t = time.perf_counter()
            await a.request(b.account_id, "echo", payload)
            req_rtts.append(time.perf_counter() - t)
    return {"envelope_rtt": ms(rtts), "raw_stream_rtt": ms(raw_rtts), "request_rtt": ms(req_rtts)}


async def _bulk(a, b, pair: _Pair, n_bulk: int) -> dict:
    """MiB/s of `n_bulk` 8 MiB envelopes (chunked frames), and of the same bytes written raw in 1 MiB frames."""
    blob = H("bulk", b"x") * (8 * MiB // 32)
    t = time.perf_counter()
    for _ in range(n_bulk):
        await a.send(b.account_id, blob)
    await pair.bulk_done.wait()
    ours = time.perf_counter() - t
    sink = await a.host.new_stream(b.peer_id, [RAW_SINK])
    t = time.perf_counter()
    for _ in range(n_bulk):
        for off in range(0, len(blob), MiB):
            await sink.write(encode_varint_prefixed(blob[off : off + MiB]))
    await sink.write(encode_varint_prefixed(b"end"))
    await read_varint_prefixed_bytes(sink)
    rawt = time.perf_counter() - t
    await sink.close()
    total = n_bulk * len(blob) / MiB
    return {"chunked_MiB_s": total / ours, "raw_MiB_s": total / rawt}


async def gossip_bench(n_hosts: int, n_msgs: int) -> dict:
    sent: dict[bytes, float] = {}
    lat: list[float] = []

    def make_handler():
        async def handler(origin: bytes, data: bytes) -> None:
            lat.append(time.perf_counter() - sent[data[:8]])
        return handler

    async with contextlib.AsyncExitStack() as stack:
        nets = [await stack.enter_async_context(open_host(cfg(f"g{i}"))) for i in range(n_hosts)]
        await trio.sleep(0.5)
        t0 = time.perf_counter()
        connects = []
        for i, net in enumerate(nets[1:], 1):
            for j in range(max(0, i - 2), i):
                t1 = time.perf_counter()
                await net.connect(nets[j].addrs()[0])
                connects.append(time.perf_counter() - t1)
        connect_all = time.perf_counter() - t0
        for net in nets:
            await net.gossip.subscribe("certs", make_handler())
        t0 = time.perf_counter()
        with trio.fail_after(20):
            while not all(net.gossip.mesh_peers("certs") for net in nets):
                await trio.sleep(0.01)
        mesh = time.perf_counter() - t0
        for k in range(n_msgs):
            tag = k.to_bytes(8, "big")
            sent[tag] = time.perf_counter()
            await nets[k % n_hosts].gossip.publish("certs", tag + b"c" * 504)
            await trio.sleep(0.05)
        with trio.move_on_after(5):
            while len(lat) < n_msgs * (n_hosts - 1):
                await trio.sleep(0.01)
    return {"hosts": n_hosts, "connect_all_s": connect_all, "connect": ms(connects), "mesh_ready_s": mesh,
            "delivered": len(lat), "expected": n_msgs * (n_hosts - 1), "latency": ms(lat)}


async def run(args) -> dict:
    pair = await pair_bench(args.rtt, args.bulk)
    gossip = await gossip_bench(5, args.gossip)
    return {"bench": "net", **pair, "gossip": gossip,
            "ratios": {"envelope_rtt_vs_raw": pair["envelope_rtt"]["p50_ms"] / pair["raw_stream_rtt"]["p50_ms"],
                       "request_rtt_vs_raw": pair["request_rtt"]["p50_ms"] / pair["raw_stream_rtt"]["p50_ms"],
                       "throughput_vs_raw": pair["chunked_MiB_s"] / pair["raw_MiB_s"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    ap.add_argument("--rtt", type=int, default=200, help="round trips per RTT measurement")
    ap.add_argument("--bulk", type=int, default=6, help="8 MiB envelopes for throughput")
    ap.add_argument("--gossip", type=int, default=20, help="gossip messages among 5 hosts")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "net.json"))
    args = ap.parse_args()
    r = trio.run(run, args)
    g, ra = r["gossip"], r["ratios"]
    print(f"connect                 {r['connect_ms']:8.1f} ms first; p50 {g['connect']['p50_ms']:.1f} ms over "
          f"{g['connect']['n']} gossip-host dials")
    print(f"envelope RTT p50        {r['envelope_rtt']['p50_ms']:8.2f} ms   raw stream {r['raw_stream_rtt']['p50_ms']:.2f} ms"
          f"   ratio {ra['envelope_rtt_vs_raw']:.2f}")
    print(f"request RTT p50         {r['request_rtt']['p50_ms']:8.2f} ms   ratio {ra['request_rtt_vs_raw']:.2f}")
    print(f"chunked throughput      {r['chunked_MiB_s']:8.1f} MiB/s  raw {r['raw_MiB_s']:.1f} MiB/s"
          f"   ratio {ra['throughput_vs_raw']:.2f}")
    print(f"gossip 5 hosts          p50 {g['latency']['p50_ms']:.1f} / p90 {g['latency']['p90_ms']:.1f} / max "
          f"{g['latency']['max_ms']:.1f} ms, delivered {g['delivered']}/{g['expected']}, mesh {g['mesh_ready_s']:.2f} s")
    write_result(r, args.out, args.json)


if __name__ == "__main__":
    main()
