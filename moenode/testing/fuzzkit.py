"""Hostile inputs for decoders, and a meter of what decoding them costs.

`dense(size, shape)` builds container-dense msgpack: about one value per byte, the shape that made one 12 MiB
envelope cost 1.7 GB and 22 s of CPU before decoding had a value budget. `measure(fn)` runs a call and reports its
process CPU time and its peak traced memory (tracemalloc), so tests can assert generous bounds without racing a
wall clock. `largest_messages()` builds each peer-facing type at the limits of its schema.

`targets()` lists every decoder a peer can reach, with valid inputs; `Mutator` mutates them (seeded); `fuzz(target,
n, seed)` checks that only ProtocolError escapes and that nothing non-canonical is accepted (tests/core/test_fuzz.py,
bench/fuzz.py).
"""

from __future__ import annotations

import random
import struct
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moenode.core.checkpoint import Checkpoint, CheckpointCert
    from moenode.core.messages import Certificate, Input, Message, Report, Reveal, Signed, Submission
    from moenode.core.orders import BatchVote, CertifiedOrder, OrderRequest, Settle

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
    from moenode.core.checkpoint import Checkpoint, CheckpointCert
    from moenode.core.crypto import H, ed25519_verify
    from moenode.core.messages import (Certificate, CommitVotes, Evidence, Input, ProxyRequest, Report, Reveal,
                                       open_signed, seal)
    from moenode.core.orders import CertifiedOrder, OrderRequest, Settle

    net, s = NET, SIGNER
    pks = sorted(H("pk", i.to_bytes(2, "big")) for i in range(260))
    sid = H("sid", b"largest")
    report, cert, settle = _largest_settlement(sid, pks)
    checkpoint, cp_cert = _largest_checkpoint()
    inp, reveal = _largest_input(), _largest_reveal(sid, report.item_losses)
    env = seal(report, s, net)
    other = seal(Report(**{**report.__dict__, "loss_micro": 1}), s, net)  # the same report, another loss: equivocation
    evidence = seal(Evidence("equivocation", s.public_key, sid, env.as_wire(), other.as_wire()), s, net)
    votes = seal(CommitVotes(sid, tuple((pk, H("d", pk)) for pk in pks[:115])), s, net)  # as many as 8 KiB holds
    proxy_req = seal(ProxyRequest(inp.msg.shard_id, s.public_key, 9_000, 10 ** 13, inp.as_wire()), s, net)
    certified, request = _largest_certified(settle), _largest_order_request(settle)

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


def _largest_settlement(sid: bytes, pks: list[bytes]) -> tuple[Report, Certificate, Signed[Settle]]:
    """A report with every list full, its certificate with 128 signatures, and the Settle order that carries it."""
    from moenode.core.crypto import H
    from moenode.core.messages import MAX_ITEMS, Certificate, Report, batch_loss, seal
    from moenode.core.orders import Settle, escrow_account

    s, losses = SIGNER, tuple(999_999 - i for i in range(MAX_ITEMS))
    report = Report(sid, 7, s.public_key, H("d", b""), H("n", b""), H("p", b""), 10, pks[0], pks[1], 9_000,
                    H("m", b""), H("w", b""), batch_loss(losses), losses, b"\x00" * (MAX_ITEMS * 1024 * 2),
                    tuple(pks[2:130]), tuple(pks[130:258]))
    cert = Certificate(report, tuple((pk, bytes(64)) for pk in pks[:128]))
    return report, cert, seal(Settle(escrow_account(sid), 0, 7, cert), s, NET)


def _largest_certified(settle: Signed[Settle]) -> CertifiedOrder:
    """The Settle order with the most votes, each with the deepest batch proof."""
    from moenode.core.crypto import H
    from moenode.core.orders import MAX_PROOF_DEPTH, MAX_VOTES, CertifiedOrder

    proof = tuple(H("sib", bytes([d])) for d in range(MAX_PROOF_DEPTH))
    votes = ((H("voter", i.to_bytes(2, "big")), bytes(64), 1023, proof) for i in range(MAX_VOTES))
    return CertifiedOrder(settle, tuple(sorted(votes)))


def _largest_order_request(settle: Signed[Settle]) -> OrderRequest:
    from moenode.core.orders import MAX_ATTACH, OrderRequest

    return OrderRequest(settle.encode(), tuple(bytes([i]) * 1024 for i in range(MAX_ATTACH)))


def _largest_checkpoint() -> tuple[Checkpoint, CheckpointCert]:
    """A checkpoint of 4096 items and its certificate with 1024 votes."""
    from moenode.core.checkpoint import Checkpoint, CheckpointCert, Item
    from moenode.core.crypto import H

    items = tuple(sorted(Item(3, "unstake", H("a", i.to_bytes(2, "big")), H("s", i.to_bytes(2, "big")), 10 ** 12)
                         for i in range(4096)))
    checkpoint = Checkpoint(3, H("prev", b""), items)
    votes = tuple(sorted((H("v", i.to_bytes(2, "big")), bytes(64)) for i in range(1024)))
    return checkpoint, CheckpointCert(checkpoint, votes)


def _largest_input() -> Signed[Input]:
    """An input of the most texts, each of the longest."""
    from moenode.core.crypto import H
    from moenode.core.messages import MAX_ITEMS, Input, seal, shard_id
    from moenode.core.selection import data_hash

    s = SIGNER
    texts = tuple(f"{i:03d}" + "x" * (16 * 1024 - 3) for i in range(MAX_ITEMS))
    dh, nonce = data_hash([t.encode() for t in texts]), H("nonce", b"")
    return seal(Input(shard_id(7, dh, nonce, s.public_key), 7, s.public_key, H("p", b""), b"\x00" * 48 * 1024, 10,
                      dh, nonce, "text", 10 ** 13, texts), s, NET)


def _largest_reveal(sid: bytes, losses: tuple[int, ...]) -> Signed[Reveal]:
    """A reveal of a proxied submission whose payload is as large as the items allow."""
    from moenode.core.crypto import H
    from moenode.core.messages import MAX_ITEMS, Payload, ProxySubmission, Reveal, Submission, batch_loss, seal

    s, producer = SIGNER, PRODUCER
    pay = Payload(H("m", b""), 1, b"\x00" * 4 * MAX_ITEMS, b"v" * 1024, b"\x00\x3c" * MAX_ITEMS, losses,
                  batch_loss(losses))
    ps = seal(ProxySubmission(sid, producer.public_key, s.public_key, pay.digest(), 9_000), producer, NET)
    return seal(Reveal(sid, Submission(sid, s.public_key, producer.public_key, pay, ps.as_wire())), s, NET)


def _signer(tag: bytes):
    from moenode.core.crypto import Ed25519Signer

    return Ed25519Signer.from_entropy(tag)


def _net() -> bytes:
    from moenode.core.crypto import H

    return H("network", b"fuzz")


NET = _net()
SIGNER, PRODUCER = _signer(b"fuzz-signer"), _signer(b"fuzz-producer")


# fuzzing every decoder a peer can reach -------------------------------------------------------------------------
@dataclass
class Target:
    """A decoder of peers' bytes: `decode(data)` raises only ProtocolError; `encode(result)` is the canonical encoding
    of what it accepted (which must be the input itself: nothing non-canonical is accepted)."""

    name: str
    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]
    seeds: list[bytes]


def targets() -> list[Target]:
    """Every decoder of untrusted bytes, each with valid inputs to mutate."""
    from moenode.core.messages import seal

    seeds = _Seeds.make()
    sealed = {cls: [seal(m, SIGNER, NET).encode() for m in msgs] for cls, msgs in seeds.by_type.items()}
    certified, votes, batch = _certified_orders(seeds)
    return [*_signed_targets(sealed), *_unsigned_targets(seeds, certified, votes, batch),
            *_plain_targets(seeds, sealed, certified)]


def _encoded(x: Any) -> bytes:
    return x.encode()


@dataclass
class _Seeds:
    """Valid messages of every registered type (one or two each), and the few that later seeds are built from."""

    by_type: dict[type[Message], list[Message]]
    cert: Certificate
    proxied: Submission
    checkpoint: Checkpoint

    @classmethod
    def make(cls) -> _Seeds:
        from moenode.core.checkpoint import Checkpoint, Item
        from moenode.core.crypto import H
        from moenode.core.messages import (REGISTRY, Advert, Certificate, Commit, CommitVotes, Evidence, Input,
                                           OptOut, Payload, ProxyRequest, ProxySubmission, Report, Reveal,
                                           Submission, batch_loss, seal, shard_id)
        from moenode.core.orders import PayEscrow, Refund, Settle, Stake, Transfer, Unstake, escrow_account
        from moenode.core.selection import data_hash

        net, s, p = NET, SIGNER, PRODUCER
        me, other = s.public_key, p.public_key
        sid = H("sid", b"fuzz")
        texts = ("a first text", "and a second one")
        dh, nonce = data_hash([t.encode() for t in texts]), H("nonce", b"fuzz")
        inp = Input(shard_id(3, dh, nonce, me), 3, me, H("pay", b""), b"\x01" * 40, 10, dh, nonce, "text", 10 ** 12,
                    texts)
        pay = Payload(H("model", b""), 2, b"\x00\x00\x80\x3f" * 4, b"views", b"\x00\x3c" * 4, (250_000, 150_000),
                      batch_loss((250_000, 150_000)))
        own = Submission(sid, me, me, pay, None)
        ps = seal(ProxySubmission(sid, other, me, pay.digest(), 4_000), p, net)
        proxied = Submission(sid, me, other, pay, ps.as_wire())
        report = Report(sid, 3, me, dh, nonce, H("pay", b""), 10, me, other, 4_000, H("model", b""), own.digest(),
                        200_000, (250_000, 150_000), b"\x00\x3c" * 4, (other,), ())
        cert = Certificate(report, tuple(sorted((k.public_key, k.sign(H("r", b""))) for k in (s, p))))
        commit = seal(Commit(sid, own.digest()), s, net)
        commit2 = seal(Commit(sid, proxied.digest()), s, net)
        checkpoint = Checkpoint(3, H("prev", b""), tuple(sorted(
            [Item(2, "stake", me, H("o", b"1"), 500), Item(3, "strike", other, H("r", b"1"), 1)])))
        by_type: dict[type[Message], list[Message]] = {
            Input: [inp], OptOut: [OptOut(sid, "not paid")], Commit: [Commit(sid, own.digest())],
            CommitVotes: [CommitVotes(sid, tuple(sorted([(me, own.digest()), (other, proxied.digest())])))],
            Payload: [pay], Submission: [own, proxied], Reveal: [Reveal(sid, own), Reveal(sid, proxied)],
            ProxySubmission: [ps.msg], Report: [report], Certificate: [cert],
            ProxyRequest: [ProxyRequest(inp.shard_id, me, 4_000, 10 ** 12, seal(inp, s, net).as_wire())],
            Advert: [Advert(H("model", b""), "minilm-l6", 5_000, ("/ip4/127.0.0.1/tcp/4001",), 1_700_000_000_000)],
            Evidence: [Evidence("equivocation", me, sid, commit.as_wire(), commit2.as_wire())],
            Transfer: [Transfer(me, 4, 3, other, 1_234)], PayEscrow: [PayEscrow(me, 5, 3, sid, 10, 10 ** 12)],
            Settle: [Settle(escrow_account(sid), 0, 3, cert)],
            Refund: [Refund(escrow_account(sid), 0, 3, sid, H("pay", b""), 10)],
            Stake: [Stake(me, 6, 3, 500)], Unstake: [Unstake(me, 7, 3, 100)],
            Checkpoint: [checkpoint],
        }
        assert set(by_type) == set(REGISTRY.values()), "a registered type has no fuzz seed"
        return cls(by_type, cert, proxied, checkpoint)


def _signed_targets(sealed: dict[type[Message], list[bytes]]) -> list[Target]:
    """open_signed for each type, for the shard protocol's types and for any type; open_order for the orders."""
    from moenode.core.crypto import ed25519_verify
    from moenode.core.messages import Commit, CommitVotes, Input, OptOut, Report, Reveal, open_signed
    from moenode.core.orders import ORDER_TYPES, open_order

    def opened(*types: type[Message]) -> Callable[[bytes], Any]:
        return lambda d: open_signed(d, NET, ed25519_verify, types)

    out = [Target(f"open_signed[{cls.TYPE}]", opened(cls), _encoded, sealed[cls]) for cls in sealed]
    round_types = (Input, OptOut, Commit, CommitVotes, Reveal, Report)
    out.append(Target("open_signed[shard protocol]", opened(*round_types), _encoded,
                      [d for c in round_types for d in sealed[c]]))
    out.append(Target("open_signed[any type]", opened(), _encoded, [d for ds in sealed.values() for d in ds]))
    out.append(Target("open_order", lambda d: open_order(d, NET, ed25519_verify), _encoded,
                      [d for c in ORDER_TYPES for d in sealed[c]]))
    return out


def _certified_orders(seeds: _Seeds) -> tuple[list[CertifiedOrder], dict[bytes, bytes], dict[bytes, BatchVote]]:
    """Three of the seed orders certified by SIGNER and PRODUCER, one with batch votes; and the votes."""
    from moenode.core.crypto import H
    from moenode.core.messages import narrow, seal
    from moenode.core.orders import BatchVote, Order, Settle, Stake, Transfer, batch_proofs, certify, vote_digest

    s, p = SIGNER, PRODUCER
    orders = [narrow(seal(m, s, NET), Order) for c in (Transfer, Stake, Settle) for m in seeds.by_type[c]]
    votes = {k.public_key: k.sign(vote_digest(orders[0].id, 3)) for k in (s, p)}
    root, proofs = batch_proofs([vote_digest(o.id, 3) for o in orders])
    batch = {k.public_key: BatchVote(k.sign(H("order-batch-vote", root)), *proofs[1]) for k in (s, p)}
    return [certify(orders[0], votes), certify(orders[1], batch), certify(orders[2], votes)], votes, batch


def _unsigned_targets(seeds: _Seeds, certified: list[CertifiedOrder], votes: dict[bytes, bytes],
                      batch: dict[bytes, BatchVote]) -> list[Target]:
    """The decoders of values sent unsigned: certificates, RPC requests and answers, checkpoints."""
    from moenode.core.checkpoint import Checkpoint, CheckpointCert
    from moenode.core.crypto import ed25519_verify
    from moenode.core.messages import Certificate, Evidence
    from moenode.core.orders import CertifiedOrder, OrderAnswer, OrderRequest
    from moenode.core.proxy import ProxyAnswer, Refusal

    me, cp = SIGNER.public_key, seeds.checkpoint
    cp_cert = CheckpointCert(cp, tuple(sorted((k.public_key, k.sign(cp.digest_for(NET))) for k in (SIGNER, PRODUCER))))
    unsigned: dict[type[Message], list[Message]] = {
        Certificate: [seeds.cert], OrderAnswer: [OrderAnswer.of(votes[me]), OrderAnswer.of(batch[me]),
                                                OrderAnswer(None, None, "sequence_gap", me, "behind")],
        OrderRequest: [OrderRequest(certified[0].order.encode(), (certified[1].encode(),))],
        Checkpoint: [cp], Evidence: seeds.by_type[Evidence],
        ProxyAnswer: [ProxyAnswer.of(seeds.proxied), ProxyAnswer.of(Refusal("busy", "another sponsor"))],
    }
    out = [Target(f"{cls.TYPE}.decode", cls.decode, _encoded, [m.encode() for m in msgs])
           for cls, msgs in unsigned.items()]
    out.append(Target("CertifiedOrder.decode", lambda d: CertifiedOrder.decode(d, NET, ed25519_verify), _encoded,
                      [c.encode() for c in certified]))
    out.append(Target("CheckpointCert.decode", CheckpointCert.decode, _encoded, [cp_cert.encode()]))
    return out


def _plain_targets(seeds: _Seeds, sealed: dict[type[Message], list[bytes]],
                   certified: list[CertifiedOrder]) -> list[Target]:
    """Decoders of plain msgpack: a sync entry, and the codec itself (frame headers, page requests and answers)."""
    from moenode.core.codec import canonical, decode
    from moenode.core.crypto import H
    from moenode.node.sync import Sync

    entries = [canonical(["order", certified[0].encode()]), canonical(["cert", seeds.cert.encode()])]
    plain = [canonical({"hash": H("transfer", b"x"), "len": 1 << 20}),  # a frame header
             canonical({"cursor": b"", "limit": 64, "query": b"order"}),  # a page request
             canonical({"items": entries, "next": b"\x00" * 8}), canonical([1, -1, 2 ** 64 - 1, -(2 ** 63), None,
                                                                          True, "é", b"", {"": {}}])]
    return [Target("sync entry", Sync._entry, lambda e: canonical(list(e)), entries),
            Target("codec.decode", decode, canonical, plain + [d for ds in sealed.values() for d in ds][:8])]


_INTERESTING = bytes([0x00, 0x01, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5,
                      0xC6, 0xC7, 0xCA, 0xCB, 0xCC, 0xCD, 0xCE, 0xCF, 0xD0, 0xD3, 0xD4, 0xD9, 0xDA, 0xDB, 0xDC,
                      0xDD, 0xDE, 0xDF, 0xE0, 0xFF])


class Mutator:
    """Seeded mutations of valid inputs: byte-level (bit flips, bytes, truncation, extension, splicing, random
    bytes) and structure-aware (a value of another type in one place, a missing or extra key, a list one too long,
    container-dense inflation, nesting past the limit, and non-canonical spellings of the same value: wider
    headers, unsorted or repeated keys, a float for an int)."""

    def __init__(self, rng: random.Random, seeds: list[bytes]):
        import msgpack

        self.rng, self.seeds = rng, seeds
        self.trees = [msgpack.unpackb(d, raw=False, strict_map_key=False) for d in seeds]
        self.ops = [(self.bitflip, 3), (self.bytes_, 2), (self.truncate, 2), (self.extend, 1), (self.splice, 1),
                    (self.noise, 1), (self.confuse, 4), (self.inflate, 2), (self.deviate, 4)]
        self.weights = [w for _, w in self.ops]

    def __call__(self) -> tuple[str, bytes]:
        op = self.rng.choices(self.ops, self.weights)[0][0]
        i = self.rng.randrange(len(self.seeds))
        return op.__name__.strip("_"), op(i)

    # byte-level
    def bitflip(self, i: int) -> bytes:
        b = bytearray(self.seeds[i])
        for _ in range(self.rng.randint(1, 4)):
            k = self.rng.randrange(len(b) * 8)
            b[k >> 3] ^= 1 << (k & 7)
        return bytes(b)

    def bytes_(self, i: int) -> bytes:
        b = bytearray(self.seeds[i])
        for _ in range(self.rng.randint(1, 3)):
            b[self.rng.randrange(len(b))] = self.rng.choice(_INTERESTING)
        return bytes(b)

    def truncate(self, i: int) -> bytes:
        d = self.seeds[i]
        return d[: self.rng.randrange(len(d))]

    def extend(self, i: int) -> bytes:
        d = self.seeds[i]
        return d + (bytes(self.rng.choice(_INTERESTING) for _ in range(self.rng.randint(1, 8)))
                    if self.rng.random() < 0.5 else d[: self.rng.randint(1, 64)])

    def splice(self, i: int) -> bytes:
        a, b = self.seeds[i], self.rng.choice(self.seeds)
        return a[: self.rng.randrange(len(a))] + b[self.rng.randrange(len(b)):]

    def noise(self, i: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, 300))

    # structure-aware: one place in the value tree changes, then it is encoded
    def confuse(self, i: int) -> bytes:
        return self._encode(self._replace(self.trees[i], self._other_value))

    def inflate(self, i: int) -> bytes:
        """One value replaced by container-dense bytes: empty containers or scalars by the thousand, or nesting
        past the limit."""
        return _Spliced(self.rng, self.trees[i], _dense_value).bytes()

    def deviate(self, i: int) -> bytes:
        """The same value in a spelling canonical encoding never uses, in one place."""
        return _Spliced(self.rng, self.trees[i], _deviant).bytes()

    def _other_value(self, v: Any) -> Any:
        r = self.rng
        if isinstance(v, bool) or v is None:
            return r.choice([0, 1, "true", b"", [], None if v is not None else False])
        if isinstance(v, int):
            near = [min(v + 1, 2 ** 64 - 1), max(v - 1, -(2 ** 63)), -min(v, 2 ** 63 - 1) - 1]
            return r.choice(near + [str(v), v.to_bytes(9, "big", signed=True), None, True, [v], 2 ** 64 - 1,
                                    -(2 ** 63), 2 ** 62, 0])
        if isinstance(v, bytes):
            return r.choice([v[:-1], v + b"\x00", v[::-1], b"", v.decode("latin-1"), len(v), [v], v * 2,
                             bytes(len(v))])
        if isinstance(v, str):
            return r.choice([v.encode(), "", v + "x", v.upper(), "x" * 300, "é" * 40, 0, [v]])
        if isinstance(v, list):
            return r.choice([v[:-1], v + v[-1:], v[::-1], v * 2, {}, [], b"", {str(k): x for k, x in enumerate(v)},
                             [v]])
        if isinstance(v, dict):
            keys = sorted(v)
            drop = {k: x for k, x in v.items() if k != r.choice(keys)} if keys else {}
            renamed = {(k + "_" if k == keys[0] else k): x for k, x in v.items()} if keys else {"": 0}
            return r.choice([drop, dict(v, zz=0), dict(v, **{"": None}), renamed, list(v.values()), None, {}])
        return None

    def _replace(self, tree: Any, change: Callable[[Any], Any]) -> Any:
        """A copy of `tree` with one node, chosen uniformly, replaced by change(node); the rest shared."""
        target = self.rng.randrange(_count(tree))

        def walk(v: Any) -> tuple[Any, bool]:
            nonlocal target
            if target == 0:
                target = -1
                return change(v), True
            target -= 1
            if isinstance(v, list):
                for j, x in enumerate(v):
                    new, done = walk(x)
                    if done:
                        return v[:j] + [new] + v[j + 1:], True
            elif isinstance(v, dict):
                for key, x in v.items():
                    new, done = walk(x)
                    if done:
                        return {**v, key: new}, True
            return v, False

        return walk(tree)[0]

    @staticmethod
    def _encode(tree: Any) -> bytes:
        import msgpack

        from moenode.core.codec import canonical
        from moenode.core.errors import DecodeError

        try:
            return canonical(tree)
        except (DecodeError, RecursionError):  # deeper than canonical goes, or a key that is not a string
            return msgpack.packb(tree, use_bin_type=True)


def _dense_value(rng: random.Random, _: Any) -> bytes:
    k = rng.choice([15, 300, 4100, 20_000, 70_000])
    leaf = rng.choice([b"\x90", b"\x80", b"\x00", b"\xc4\x00", b"\xa0"])
    if rng.random() < 0.3:  # nesting past the limit
        depth = rng.randint(17, 60)
        return b"\x91" * depth + leaf
    if rng.random() < 0.5:
        return _dense_rows(k // 15, leaf)
    return _array_head(k) + leaf * k


@cache
def _dense_rows(rows: int, leaf: bytes) -> bytes:
    return _array_head(rows) + (b"\x9f" + leaf * 15) * rows


def _count(v: Any) -> int:
    if isinstance(v, list):
        return 1 + sum(_count(x) for x in v)
    if isinstance(v, dict):
        return 1 + sum(_count(x) for x in v.values())
    return 1


class _Spliced:
    """msgpack of a value with one node, the `at`-th in pre-order, written as `special(rng, node)` bytes; everything
    else as the seed spelled it (a seed's maps keep their canonical key order when unpacked)."""

    def __init__(self, rng: random.Random, tree: Any, special: Callable[[random.Random, Any], bytes]):
        self.rng, self.tree, self.special = rng, tree, special
        self.at = rng.randrange(_count(tree))
        self.out = bytearray()

    def bytes(self) -> bytes:
        self._pack(self.tree)
        return bytes(self.out)

    def _pack(self, v: Any) -> None:
        import msgpack

        if self.at == 0:
            self.at = -1
            self.out += self.special(self.rng, v)
            return
        size = _count(v)
        if self.at < 0 or self.at >= size:  # the node is not in this subtree
            self.at -= size
            self.out += msgpack.packb(v, use_bin_type=True)
            return
        self.at -= 1
        if isinstance(v, dict):
            self.out += _map_head(len(v))
            for key, x in v.items():
                self.out += msgpack.packb(key, use_bin_type=True)
                self._pack(x)
        else:
            self.out += _array_head(len(v))
            for x in v:
                self._pack(x)


def _deviant(rng: random.Random, v: Any) -> bytes:
    """`v` spelled the way canonical encoding never does: a wider header, unsorted or repeated keys, a float."""
    import msgpack

    if isinstance(v, dict):
        items = list(v.items())
        how = rng.choice(["wide", "unsorted", "repeat"])
        if how == "unsorted" and len(items) > 1:
            items = items[::-1]
        elif how == "repeat" and items:
            items = items + items[:1]
        head = b"\xde" + len(items).to_bytes(2, "big") if how == "wide" else _map_head(len(items))
        return head + b"".join(msgpack.packb(k, use_bin_type=True) + msgpack.packb(x, use_bin_type=True)
                               for k, x in items)
    if isinstance(v, list):
        return b"\xdc" + len(v).to_bytes(2, "big") + b"".join(msgpack.packb(x, use_bin_type=True) for x in v)
    if isinstance(v, bool) or v is None:
        return msgpack.packb(v)  # one spelling only
    if isinstance(v, int):
        if rng.random() < 0.3:
            return b"\xcb" + struct.pack(">d", float(v))  # a float for an int
        if 0 <= v < 1 << 32:
            return b"\xcf" + v.to_bytes(8, "big")  # uint64 for a small value
        if -(1 << 31) <= v < 0:
            return b"\xd3" + v.to_bytes(8, "big", signed=True)
        return msgpack.packb(v)
    if isinstance(v, bytes):
        return b"\xc6" + len(v).to_bytes(4, "big") + v  # bin32 for a short string
    raw = v.encode("utf-8", "surrogatepass")
    return b"\xdb" + len(raw).to_bytes(4, "big") + raw  # str32 for a short string


def _map_head(n: int) -> bytes:
    if n <= 15:
        return bytes([0x80 | n])
    return b"\xde" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdf" + n.to_bytes(4, "big")


def _array_head(n: int) -> bytes:
    if n <= 15:
        return bytes([0x90 | n])
    return b"\xdc" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdd" + n.to_bytes(4, "big")


@dataclass
class FuzzStats:
    inputs: int = 0
    accepted: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0  # in the decoder
    baseline_s: float = 0.0  # in `baseline`, on the same inputs


def fuzz(target: Target, n: int, seed: int, baseline: Callable[[bytes], Any] | None = None) -> FuzzStats:
    """`n` mutated inputs through `target`: only ProtocolError may escape, and whatever is accepted must be the
    canonical encoding of what the decoder returned. Raises AssertionError with what reproduces a failure.
    `baseline` (any exception ignored) is timed on the same inputs, for a benchmark's ratio."""
    from moenode.core.errors import ProtocolError

    rng = random.Random(f"{seed}/{target.name}")
    mutate = Mutator(rng, target.seeds)
    stats = FuzzStats()
    clock = time.process_time
    for i in range(n):
        op, data = mutate()
        if baseline is not None:
            t0 = clock()
            try:
                baseline(data)
            except Exception:  # noqa: BLE001 - a baseline that refuses is fine
                pass
            stats.baseline_s += clock() - t0
        t0 = clock()
        try:
            result = target.decode(data)
        except ProtocolError as e:
            stats.cpu_s += clock() - t0
            stats.reasons[e.reason] = stats.reasons.get(e.reason, 0) + 1
            continue
        except Exception as e:  # noqa: BLE001 - the finding
            raise AssertionError(f"{target.name}: {type(e).__name__}: {e} escaped on input {i} (seed {seed}, "
                                 f"{op}): {data[:200].hex()}") from e
        stats.cpu_s += clock() - t0
        stats.accepted += 1
        if target.encode(result) != data:
            raise AssertionError(f"{target.name}: accepted a non-canonical input {i} (seed {seed}, {op}): "
                                 f"{data[:200].hex()}")
    stats.inputs = n
    return stats
