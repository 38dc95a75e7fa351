"""Hostile inputs for decoders, and a meter of what decoding them costs.

`dense(size, shape)` builds container-dense msgpack: about one value per byte, the shape that made one 12 MiB
envelope cost 1.7 GB and 22 s of CPU before decoding had a value budget. `measure(fn)` runs a call and reports its
process CPU time and its peak traced memory (tracemalloc), so tests can assert generous bounds without racing a
wall clock.
"""

import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

SHAPES = ("flat", "arrays", "maps", "keyed")


@cache
def _tree(size: int, leaf: bytes) -> bytes:
    """Fixarrays of 15 (one-byte headers) down to leaves: about `size` bytes, about one value per byte. Subtrees of
    one size are the same bytes, so a 12 MiB tree is built from a few dozen distinct pieces."""
    if size <= 16:
        return bytes([0x90 + size - 1]) + leaf * (size - 1)
    return b"\x9f" + _tree((size - 1) // 15, leaf) * 15


_ALPHABET = bytes(range(0x30, 0x70))  # 64 one-byte characters


@cache
def _keyed_map(pairs: int) -> bytes:
    """A map of `pairs` distinct three-character keys, each to an empty map: five bytes and two values a pair."""
    keys = (bytes([0xA3, _ALPHABET[i >> 12], _ALPHABET[(i >> 6) & 63], _ALPHABET[i & 63], 0x80]) for i in range(pairs))
    return b"\xdf" + pairs.to_bytes(4, "big") + b"".join(keys)


def _keyed(size: int) -> bytes:
    """An array of maps with distinct keys (a map's keys cannot repeat in canonical form)."""
    most = 64 ** 3
    whole, rest = divmod(max(size - 5, 10) // 5, most)
    maps = [_keyed_map(most)] * whole + ([_keyed_map(rest)] if rest else [])
    return b"\xdd" + len(maps).to_bytes(4, "big") + b"".join(maps)


def dense(size: int, shape: str) -> bytes:
    """About `size` bytes of container-dense msgpack of one shape (SHAPES)."""
    if shape == "flat":  # one array of empty arrays
        n = size - 5
        return b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n
    if shape == "arrays":
        return _tree(size, b"\x90")
    if shape == "maps":
        return _tree(size, b"\x80")
    if shape == "keyed":
        return _keyed(size)
    raise ValueError(f"unknown shape {shape!r}")


def dense_envelope(size: int, shape: str) -> bytes:
    """A signed envelope's outline (`body`, `sig`, `signer`, keys in canonical order) whose body is `dense`."""
    return (b"\x83\xa4body" + dense(size - 64, shape) + b"\xa3sig\xc4\x40" + bytes(64)
            + b"\xa6signer\xc4\x20" + bytes(32))


@dataclass
class Cost:
    result: Any  # the return value, or the exception raised
    cpu_s: float
    peak_bytes: int


def measure(fn: Callable[[], Any]) -> Cost:
    """Run `fn` once under tracemalloc; its process CPU time and the peak of memory it allocated."""
    tracemalloc.start()
    try:
        t0 = time.process_time()
        try:
            result: Any = fn()
        except Exception as e:  # the caller inspects it
            result = e
        cpu = time.process_time() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return Cost(result, cpu, peak)


def values_in(obj: Any) -> int:
    """How many msgpack values a decoded value holds: itself, its members and a map's keys, all the way down."""
    if isinstance(obj, list):
        return 1 + sum(values_in(v) for v in obj)
    if isinstance(obj, dict):
        return 1 + sum(1 + values_in(v) for v in obj.values())
    return 1


# the largest legitimate messages --------------------------------------------------------------------------------
def largest_messages() -> dict[str, tuple[Callable[[bytes], Any], bytes]]:
    """Each peer-facing type at the limits of its schema (lists full, blobs where the size cap allows), with the
    decoder a receiver runs on it: what a value budget must admit."""
    from moenode.core.checkpoint import Checkpoint, CheckpointCert, Item
    from moenode.core.crypto import H, ed25519_verify
    from moenode.core.messages import (MAX_ITEMS, Certificate, CommitVotes, Evidence, Input, Payload, ProxyRequest,
                                       ProxySubmission, Report, Reveal, Submission, batch_loss, open_signed, seal,
                                       shard_id)
    from moenode.core.orders import (MAX_ATTACH, MAX_PROOF_DEPTH, MAX_VOTES, CertifiedOrder, OrderRequest, Settle,
                                     escrow_account)
    from moenode.core.selection import data_hash

    net, s = NET, SIGNER
    pks = sorted(H("pk", i.to_bytes(2, "big")) for i in range(260))
    sid = H("sid", b"largest")
    losses = tuple(999_999 - i for i in range(MAX_ITEMS))
    report = Report(sid, 7, s.public_key, H("d", b""), H("n", b""), H("p", b""), 10, pks[0], pks[1], 9_000,
                    H("m", b""), H("w", b""), batch_loss(losses), losses, b"\x00" * (MAX_ITEMS * 1024 * 2),
                    tuple(pks[2:130]), tuple(pks[130:258]))
    cert = Certificate(report, tuple((pk, bytes(64)) for pk in pks[:128]))
    settle = seal(Settle(escrow_account(sid), 0, 7, cert), s, net)
    vote = lambda pk: (pk, bytes(64), 1023, tuple(H("sib", bytes([d])) for d in range(MAX_PROOF_DEPTH)))  # noqa: E731
    certified = CertifiedOrder(settle, tuple(vote(H("voter", i.to_bytes(2, "big"))) for i in range(MAX_VOTES)))
    certified = CertifiedOrder(settle, tuple(sorted(certified.votes)))
    items = tuple(sorted(Item(3, "unstake", H("a", i.to_bytes(2, "big")), H("s", i.to_bytes(2, "big")), 10 ** 12)
                         for i in range(4096)))
    checkpoint = Checkpoint(3, H("prev", b""), items)
    cp_cert = CheckpointCert(checkpoint, tuple((H("v", i.to_bytes(2, "big")), bytes(64)) for i in range(1024)))
    cp_cert = CheckpointCert(checkpoint, tuple(sorted(cp_cert.votes)))
    texts = tuple(f"{i:03d}" + "x" * (16 * 1024 - 3) for i in range(MAX_ITEMS))
    dh, nonce = data_hash([t.encode() for t in texts]), H("nonce", b"")
    inp = seal(Input(shard_id(7, dh, nonce, s.public_key), 7, s.public_key, H("p", b""), b"\x00" * 48 * 1024, 10, dh,
                     nonce, "text", 10 ** 13, texts), s, net)
    producer = PRODUCER
    pay = Payload(H("m", b""), 1, b"\x00" * 4 * MAX_ITEMS, b"v" * 1024, b"\x00\x3c" * MAX_ITEMS, losses,
                  batch_loss(losses))
    ps = seal(ProxySubmission(sid, producer.public_key, s.public_key, pay.digest(), 9_000), producer, net)
    reveal = seal(Reveal(sid, Submission(sid, s.public_key, producer.public_key, pay, ps.as_wire())), s, net)
    env = seal(report, s, net)
    other = seal(Report(**{**report.__dict__, "loss_micro": 1}), s, net)  # the same report, another loss: equivocation
    evidence = seal(Evidence("equivocation", s.public_key, sid, env.as_wire(), other.as_wire()), s, net)
    votes = seal(CommitVotes(sid, tuple((pk, H("d", pk)) for pk in pks[:115])), s, net)  # as many as 8 KiB holds
    proxy_req = seal(ProxyRequest(inp.msg.shard_id, s.public_key, 9_000, 10 ** 13, inp.as_wire()), s, net)
    request = OrderRequest(settle.encode(), tuple(bytes([i]) * 1024 for i in range(MAX_ATTACH)))

    def opened(*types):
        return lambda d: open_signed(d, net, ed25519_verify, types)

    return {
        "Input": (opened(Input), inp.encode()),
        "CommitVotes": (opened(CommitVotes), votes.encode()),
        "Reveal": (opened(Reveal), reveal.encode()),
        "Report": (opened(Report), env.encode()),
        "Evidence": (opened(Evidence), evidence.encode()),
        "ProxyRequest": (opened(ProxyRequest), proxy_req.encode()),
        "Certificate": (Certificate.decode, cert.encode()),
        "Settle": (opened(Settle), settle.encode()),
        "CertifiedOrder": (lambda d: CertifiedOrder.decode(d, net, ed25519_verify), certified.encode()),
        "OrderRequest": (OrderRequest.decode, request.encode()),
        "Checkpoint": (Checkpoint.decode, checkpoint.encode()),
        "CheckpointCert": (CheckpointCert.decode, cp_cert.encode()),
    }


def _signer(tag: bytes):
    from moenode.core.crypto import Ed25519Signer

    return Ed25519Signer.from_entropy(tag)


def _net() -> bytes:
    from moenode.core.crypto import H

    return H("network", b"fuzz")


NET = _net()
SIGNER, PRODUCER = _signer(b"fuzz-signer"), _signer(b"fuzz-producer")
