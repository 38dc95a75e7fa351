"""Message schemas and the signed envelope: one schema, one validation and one size cap per message type.

Theory of operation: every message is a frozen dataclass whose fields carry their own checks (`spec(...)`). On the
wire a message travels as a signed envelope, `{"body": {...fields, "type": T, "net": network_id}, "signer": pk,
"sig": sig}`, in canonical msgpack; the signature covers `H("msg", canonical(body))`. `open_signed` is the single
door for untrusted bytes: size cap of the type, canonical decoding, known type, right network, schema, signature,
then the type's own `validate()`. It raises only `ProtocolError` subclasses. Nested values (a Submission inside a
Reveal, a Report inside a Certificate) are checked by the same field specs.

Each field check also states how many msgpack values (containers, members, map keys) a valid value holds at most
(`values_of`), so every type knows its *value budget* from its schema (`Message.max_values`, `envelope_values`):
a Reveal holds a few hundred values and 12 MiB of bytes, not 12 million empty arrays. Decoding refuses bytes that
hold more values than the budget of the types expected (`codec.decode`), before building them.

Other modules register further types (ledger orders) with `@register`, so the registry stays the one place to look.
"""

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from functools import cache, cached_property
from typing import Any, ClassVar, Generic, TypeVar, cast

from moenode.core.codec import canonical, decode
from moenode.core.crypto import DIGEST_SIZE, PUBKEY_SIZE, SIG_SIZE, H, Signer, Verifier
from moenode.core.errors import DecodeError, ProtocolError, SchemaError, SignatureError, TooLarge, WrongNetwork
from moenode.core.spaces import DEFAULT_SPACE, check_space_id

KiB, MiB = 1 << 10, 1 << 20
# The wire's hard caps on a batch: no network may allow more. A network's own limits are the genesis parameters
# `max_batch_items` and `max_item_bytes` (default 256 and 8,192; `moenode.core.round.batch_problem` checks them).
MAX_ITEMS = 256
MAX_ITEM_BYTES = 16 * KiB
MAX_DIM = 4096

Check = Callable[[Any, str], Any]  # (value, where) -> value, possibly converted; raises SchemaError


# field checks ---------------------------------------------------------------------------------------------------
def _fail(where: str, what: str) -> SchemaError:
    return SchemaError(f"{where}: {what}")


_BUDGETS: dict[Check, int] = {}  # each check's value budget (a compiled function takes no attribute)


def holds(values: int) -> Callable[[Check], Check]:
    """Declare that a check's valid input holds at most `values` msgpack values (1 for a scalar)."""
    def mark(check: Check) -> Check:
        _BUDGETS[check] = values
        return check
    return mark


def values_of(check: Check) -> int:
    """How many msgpack values a check's valid input holds at most (see `holds`)."""
    try:
        return _BUDGETS[check]
    except KeyError:
        raise TypeError(f"field check {check!r} does not declare its value budget (use @holds)") from None


def uint(high: int = (1 << 63) - 1) -> Check:
    @holds(1)
    def check(v: Any, where: str) -> int:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= high:
            return v
        raise _fail(where, f"expected an integer in [0, {high}], got {v!r:.40}")
    return check



def blob(exact: int | None = None, max_len: int = MiB) -> Check:
    @holds(1)
    def check(v: Any, where: str) -> bytes:
        if not isinstance(v, bytes):
            raise _fail(where, f"expected bytes, got {type(v).__name__}")
        if exact is not None and len(v) != exact:
            raise _fail(where, f"expected {exact} bytes, got {len(v)}")
        if len(v) > max_len:
            raise _fail(where, f"{len(v)} bytes exceeds {max_len}")
        return v
    return check


def text(max_len: int = 256) -> Check:
    @holds(1)
    def check(v: Any, where: str) -> str:
        if not isinstance(v, str) or len(v.encode("utf-8")) > max_len:
            raise _fail(where, f"expected a string of at most {max_len} bytes")
        return v
    return check



def mapping(values: int) -> Check:
    """A map checked later by its consumer (an envelope nested inside another message) of at most `values` values
    (`envelope_values` of the types it may hold)."""
    @holds(values)
    def check(v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise _fail(where, "expected a map")
        return v
    return check


def optional(inner: Check) -> Check:
    @holds(values_of(inner))
    def check(v: Any, where: str) -> Any:
        return None if v is None else inner(v, where)
    return check


def seq(inner: Check, max_len: int, min_len: int = 0) -> Check:
    @holds(1 + max_len * values_of(inner))
    def check(v: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(v, list) or not min_len <= len(v) <= max_len:
            raise _fail(where, f"expected a list of {min_len}..{max_len} entries")
        return tuple(inner(x, f"{where}[{i}]") for i, x in enumerate(v))
    return check


def pair(a: Check, b: Check) -> Check:
    @holds(1 + values_of(a) + values_of(b))
    def check(v: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(v, list) or len(v) != 2:
            raise _fail(where, "expected a pair")
        return a(v[0], where + "[0]"), b(v[1], where + "[1]")
    return check


def nested(cls: "type[Message]") -> Check:
    @holds(cls.max_values())
    def check(v: Any, where: str) -> "Message":
        if not isinstance(v, dict):
            raise _fail(where, f"expected a {cls.TYPE} map")
        return cls.from_body(v, where)
    return check


B32 = blob(DIGEST_SIZE)
PK = blob(PUBKEY_SIZE)
SIG = blob(SIG_SIZE)


def spec(check: Check, default: Any = MISSING) -> Any:
    """A dataclass field whose value is checked by `check` when decoded (a default only spares constructors: the
    field is on the wire either way)."""
    return field(default=default, metadata={"check": check})


# the message base -------------------------------------------------------------------------------------------------
M = TypeVar("M", bound="Message")
REGISTRY: dict[str, "type[Message]"] = {}


def register(cls: type[M]) -> type[M]:
    if cls.TYPE in REGISTRY:
        raise RuntimeError(f"message type {cls.TYPE} registered twice")
    REGISTRY[cls.TYPE] = cls
    return cls


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""
    MAX_BYTES: ClassVar[int] = 4 * KiB

    def to_body(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name, _ in _schema(type(self))[1]}

    @classmethod
    def from_body(cls: type[M], body: dict[str, Any], where: str | None = None) -> M:
        where = where or cls.TYPE
        names, checks = _schema(cls)
        present = set(body) - {"type", "net"}
        if present != names:
            missing, extra = sorted(names - present), sorted(present - names)
            raise SchemaError(f"{where}: missing {missing} / unexpected {extra}")
        values = {name: check(body[name], f"{where}.{name}") for name, check in checks}
        msg = cls(**values)
        msg.validate()
        return msg

    def validate(self) -> None:
        """Cross-field rules; field types and bounds are already checked by their specs."""

    def encode(self) -> bytes:
        """The body's canonical bytes, for a value sent unsigned (a certificate, an RPC's request or answer)."""
        return canonical(self.to_body())

    @classmethod
    def decode(cls: type[M], data: bytes) -> M:
        """The inverse of `encode` for untrusted bytes: capped at MAX_BYTES and `max_values`, then every field
        checked."""
        wire = decode(data, max_bytes=cls.MAX_BYTES, max_values=cls.max_values())
        if not isinstance(wire, dict):
            raise SchemaError(f"{cls.TYPE}: expected a map")
        return cls.from_body(wire)

    @classmethod
    def max_values(cls) -> int:
        """The most msgpack values a valid body holds: its map, each field's key and value, and the "type" and "net"
        keys and values a signed body adds. Read from the field checks once."""
        n = _VALUES.get(cls)
        if n is None:
            n = _VALUES[cls] = 1 + 4 + sum(1 + values_of(check) for _, check in _schema(cls)[1])
        return n

    def digest(self) -> bytes:
        """Content identity of an unsigned value (used for Submission and Report bodies).

        Memoised on the instance: a message is frozen, and every member that sees one shared object (a broadcast)
        would otherwise re-encode the whole payload to hash it.
        """
        cached = self.__dict__.get(_DIGEST_KEY)
        if cached is None:
            cached = self.__dict__[_DIGEST_KEY] = H(self.TYPE.lower(), self.encode())
        return cached


_DIGEST_KEY = "_digest"  # where `Message.digest` keeps its value; not a field, so never on the wire


_SCHEMAS: dict[type, tuple[frozenset[str], tuple[tuple[str, Check], ...]]] = {}
_VALUES: dict[type, int] = {}


def _schema(cls: type) -> tuple[frozenset[str], tuple[tuple[str, Check], ...]]:
    """A message type's field names and (name, check) pairs in field order, read from its dataclass fields once
    (dataclasses.fields() is slow enough to show on the simulator's hot path)."""
    schema = _SCHEMAS.get(cls)
    if schema is None:
        checks = tuple((f.name, f.metadata["check"]) for f in fields(cls))
        schema = _SCHEMAS[cls] = (frozenset(name for name, _ in checks), checks)
    return schema


def _plain(v: Any) -> Any:
    t = type(v)
    if t is bytes or t is int or t is str or v is None:
        return v
    if isinstance(v, Message):
        return v.to_body()
    if t is tuple:
        return [_plain(x) for x in v]
    return v


M_co = TypeVar("M_co", bound=Message, covariant=True)  # the message type of an envelope


@dataclass(frozen=True)
class Signed(Generic[M_co]):
    """A message with its network id, signer and signature. `id` is what the signature covers.

    `Signed[Commit]` is an envelope known to hold a Commit: `seal` keeps the type of what it seals, and `narrow`
    gives an opened envelope (a `Signed[Message]`) the type of its message."""

    msg: M_co
    net: bytes
    signer: bytes
    sig: bytes

    def body(self) -> dict[str, Any]:
        return body_of(self.msg, self.net)

    @cached_property
    def body_bytes(self) -> bytes:
        return canonical(self.body())

    @cached_property
    def id(self) -> bytes:
        return H("msg", self.body_bytes)

    def encode(self) -> bytes:
        """canonical({"body", "sig", "signer"}), assembled from the cached body encoding (keys in sorted order)."""
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        return (b"\x83" + _BODY_KEY + self.body_bytes + _SIG_KEY + canonical(self.sig)
                + _SIGNER_KEY + canonical(self.signer))

    def as_wire(self) -> dict[str, Any]:
        return {"body": self.body(), "signer": self.signer, "sig": self.sig}


_BODY_KEY, _SIG_KEY, _SIGNER_KEY = canonical("body"), canonical("sig"), canonical("signer")


def body_of(msg: Message, net: bytes) -> dict[str, Any]:
    body = msg.to_body()
    body["type"] = msg.TYPE
    body["net"] = net
    return body


def seal(msg: M, signer: Signer, net: bytes) -> Signed[M]:
    msg.validate()
    body_bytes = canonical(body_of(msg, net))
    digest = H("msg", body_bytes)
    return _envelope(msg, net, signer.public_key, signer.sign(digest), body_bytes, digest)


def _envelope(msg: M, net: bytes, signer: bytes, sig: bytes, body_bytes: bytes, digest: bytes) -> Signed[M]:
    """A Signed whose body encoding and id are the ones just signed or verified (they fill the cached_property
    slots, so neither `encode()` nor `id` encodes the message again)."""
    env = Signed(msg=msg, net=net, signer=signer, sig=sig)
    env.__dict__["body_bytes"] = body_bytes
    env.__dict__["id"] = digest
    return env


MAX_ENVELOPE = 16 * MiB


def envelope_values(*types: type[Message]) -> int:
    """The most msgpack values an envelope of one of `types` holds: its map, three keys, signer, sig and the body."""
    return 6 + max(t.max_values() for t in types)


def narrow(env: Signed[Message], kind: type[M]) -> Signed[M]:
    """`env` typed by its message class; SchemaError if it holds another (callers that chose `expect` know)."""
    if not isinstance(env.msg, kind):
        raise SchemaError(f"envelope: got {env.msg.TYPE}, expected {kind.TYPE}")
    return cast(Signed[M], env)


def open_wire(wire: Any, net: bytes, verify: Verifier, expect: tuple[type[Message], ...] = ()) -> Signed[Message]:
    """Check an already-decoded envelope map (for envelopes nested in other messages)."""
    if not isinstance(wire, dict) or set(wire) != {"body", "signer", "sig"}:
        raise SchemaError("envelope: expected {body, signer, sig}")
    body, signer, sig = wire["body"], wire["signer"], wire["sig"]
    if not isinstance(body, dict):
        raise SchemaError("envelope: body must be a map")
    PK(signer, "envelope.signer")
    SIG(sig, "envelope.sig")
    mtype = body.get("type")
    cls = REGISTRY.get(mtype) if isinstance(mtype, str) else None
    if cls is None:
        raise SchemaError(f"envelope: unknown message type {mtype!r:.40}")
    if expect and cls not in expect:
        raise SchemaError(f"envelope: got {cls.TYPE}, expected {'/'.join(c.TYPE for c in expect)}")
    if body.get("net") != net:
        raise WrongNetwork(f"{cls.TYPE}: signed for another network")
    msg = cls.from_body(body)
    body_bytes = canonical(body)
    digest = H("msg", body_bytes)
    if not verify(signer, digest, sig):
        raise SignatureError(f"{cls.TYPE}: signature does not verify for {signer.hex()[:16]}")
    return _envelope(msg, net, signer, sig, body_bytes, digest)


@cache
def _envelope_caps(expect: tuple[type[Message], ...]) -> tuple[int, int]:
    """(bytes, values) an envelope of one of `expect` may take."""
    return max(c.MAX_BYTES for c in expect), envelope_values(*expect)


@cache
def _any_envelope_caps(registered: int) -> tuple[int, int]:
    """(bytes, values) an envelope of any type registered so far may take (keyed by how many: modules register
    types as they are imported)."""
    return MAX_ENVELOPE, envelope_values(*REGISTRY.values())


def open_signed(data: bytes, net: bytes, verify: Verifier, expect: tuple[type[Message], ...] = ()
                ) -> Signed[Message]:
    """Decode and check untrusted envelope bytes. Raises only ProtocolError subclasses."""
    cap, values = _envelope_caps(expect) if expect else _any_envelope_caps(len(REGISTRY))
    try:
        wire = decode(data, max_bytes=cap, max_values=values)
        signed = open_wire(wire, net, verify, expect)
    except ProtocolError:
        raise
    except RecursionError:
        raise DecodeError("nesting too deep") from None
    if len(data) > type(signed.msg).MAX_BYTES:
        raise TooLarge(f"{signed.msg.TYPE}: {len(data)} bytes exceeds its cap of {type(signed.msg).MAX_BYTES}")
    return signed


# round messages ---------------------------------------------------------------------------------------------------
ITEM = text(MAX_ITEM_BYTES)
SPACE = holds(1)(check_space_id)
LOSS = uint(1_000_000)
BPS = uint(10_000)


@register
@dataclass(frozen=True)
class Input(Message):
    """Submitter -> each shard member: the batch and its paid escrow."""

    TYPE: ClassVar[str] = "Input"
    MAX_BYTES: ClassVar[int] = MAX_ITEMS * MAX_ITEM_BYTES + 64 * KiB
    shard_id: bytes = spec(B32)
    epoch: int = spec(uint())
    submitter: bytes = spec(PK)
    pay_id: bytes = spec(B32)
    pay_cert: bytes = spec(blob(max_len=48 * KiB))
    fee: int = spec(uint())
    data_hash: bytes = spec(B32)
    nonce: bytes = spec(B32)
    modality: str = spec(text(16))
    deadline_ms: int = spec(uint())
    items: tuple[str, ...] = spec(seq(ITEM, MAX_ITEMS, 1))
    # the submitter's commit deadline (unix ms; 0: the genesis timers): members wait for every commit until then, so a
    # slow, strong model can take part without a latency strike; the submitter trades latency for quality
    commit_by_ms: int = spec(uint(), 0)
    space: str = spec(SPACE, DEFAULT_SPACE)

    def validate(self) -> None:
        from moenode.core.selection import data_hash

        if self.commit_by_ms and self.commit_by_ms >= self.deadline_ms:
            raise SchemaError("Input: commit_by_ms must come before deadline_ms")
        if self.modality != "text":
            raise SchemaError(f"Input: modality {self.modality!r} is not supported")
        if data_hash([s.encode("utf-8") for s in self.items]) != self.data_hash:
            raise SchemaError("Input: data_hash does not match the items")
        if self.shard_id != shard_id(self.epoch, self.data_hash, self.nonce, self.submitter, self.space):
            raise SchemaError("Input: shard_id is not derived from (epoch, data_hash, nonce, submitter, space)")


def shard_id(epoch: int, data_hash_: bytes, nonce: bytes, submitter: bytes, space: str = DEFAULT_SPACE) -> bytes:
    """Known before payment, so the fee can go to escrow(shard_id). The space is bound in, so one payment buys one
    round in one space."""
    return H("shard_id", canonical([epoch, data_hash_, nonce, submitter, space]))


@register
@dataclass(frozen=True)
class OptOut(Message):
    TYPE: ClassVar[str] = "OptOut"
    MAX_BYTES: ClassVar[int] = 2 * KiB
    shard_id: bytes = spec(B32)
    reason: str = spec(text(200))


@register
@dataclass(frozen=True)
class Commit(Message):
    TYPE: ClassVar[str] = "Commit"
    MAX_BYTES: ClassVar[int] = 1 * KiB
    shard_id: bytes = spec(B32)
    digest: bytes = spec(B32)  # type: ignore[assignment]  # the wire name; it shadows Message.digest() on a Commit


@register
@dataclass(frozen=True)
class CommitVotes(Message):
    """The voter's view of the commits it accepted in time: (member, digest) pairs, members unique."""

    TYPE: ClassVar[str] = "CommitVotes"
    MAX_BYTES: ClassVar[int] = 8 * KiB
    shard_id: bytes = spec(B32)
    votes: tuple[tuple[bytes, bytes], ...] = spec(seq(pair(PK, B32), 128))

    def validate(self) -> None:
        members = [m for m, _ in self.votes]
        if members != sorted(set(members)):
            raise SchemaError("CommitVotes: members must be unique and sorted")


@register
@dataclass(frozen=True)
class Payload(Message):
    """What a producer computed: the embeddings, the split-half views and the losses it claims.

    `views` is opaque to the core; its layout is fixed by the scorer (SPEC section 5).
    """

    TYPE: ClassVar[str] = "Payload"
    MAX_BYTES: ClassVar[int] = 12 * MiB
    model_id: bytes = spec(B32)
    dim: int = spec(uint(MAX_DIM))
    embeddings: bytes = spec(blob(max_len=MAX_ITEMS * MAX_DIM * 4))
    views: bytes = spec(blob(max_len=8 * MiB))
    routing: bytes = spec(blob(max_len=MAX_ITEMS * 1024 * 2))
    item_losses: tuple[int, ...] = spec(seq(LOSS, MAX_ITEMS, 1))
    batch_loss: int = spec(LOSS)

    def validate(self) -> None:
        if self.dim < 1 or len(self.embeddings) != len(self.item_losses) * self.dim * 4:
            raise SchemaError("Payload: embeddings must be items x dim float32")
        if len(self.routing) % (2 * len(self.item_losses)):
            raise SchemaError("Payload: routing must be items x d float16")
        if self.batch_loss != batch_loss(self.item_losses):
            raise SchemaError("Payload: batch_loss is not the rounded mean of item_losses")


def batch_loss(item_losses: tuple[int, ...] | list[int]) -> int:
    """Round-half-up integer mean of per-item micro-losses."""
    n = len(item_losses)
    return (2 * sum(item_losses) + n) // (2 * n)


@register
@dataclass(frozen=True)
class ProxyRequest(Message):
    TYPE: ClassVar[str] = "ProxyRequest"
    MAX_BYTES: ClassVar[int] = Input.MAX_BYTES + 64 * KiB
    shard_id: bytes = spec(B32)
    sponsor: bytes = spec(PK)
    price_bps: int = spec(BPS)
    deadline_ms: int = spec(uint())
    input: dict[str, Any] = spec(mapping(envelope_values(Input)))


@register
@dataclass(frozen=True)
class ProxySubmission(Message):
    """Signed by the producer: it computed `payload_digest` for `sponsor` in this shard, for this share."""

    TYPE: ClassVar[str] = "ProxySubmission"
    MAX_BYTES: ClassVar[int] = 1 * KiB
    shard_id: bytes = spec(B32)
    producer: bytes = spec(PK)
    sponsor: bytes = spec(PK)
    payload_digest: bytes = spec(B32)
    producer_share_bps: int = spec(BPS)

    def validate(self) -> None:
        if self.producer == self.sponsor:
            raise SchemaError("ProxySubmission: producer and sponsor must differ")


@register
@dataclass(frozen=True)
class Submission(Message):
    """A member's candidate: its own payload, or a producer's with the producer's signed ProxySubmission."""

    TYPE: ClassVar[str] = "Submission"
    MAX_BYTES: ClassVar[int] = Payload.MAX_BYTES + 4 * KiB
    shard_id: bytes = spec(B32)
    member: bytes = spec(PK)
    producer: bytes = spec(PK)
    payload: Payload = spec(nested(Payload))
    proxy: dict[str, Any] | None = spec(optional(mapping(envelope_values(ProxySubmission))))

    def validate(self) -> None:
        if (self.proxy is None) != (self.producer == self.member):
            raise SchemaError("Submission: a proxy envelope is present iff producer != member")

    def check_proxy(self, net: bytes, verify: Verifier) -> int:
        """Verify the producer's ProxySubmission; return its producer_share_bps (0 when self-produced)."""
        if self.proxy is None:
            return 0
        env = narrow(open_wire(self.proxy, net, verify, (ProxySubmission,)), ProxySubmission)
        ps = env.msg
        if env.signer != self.producer or ps.producer != self.producer or ps.sponsor != self.member:
            raise SignatureError("Submission: proxy envelope is not the producer's for this sponsor")
        if ps.shard_id != self.shard_id or ps.payload_digest != self.payload.digest():
            raise SchemaError("Submission: proxy envelope is for another shard or payload")
        return ps.producer_share_bps


@register
@dataclass(frozen=True)
class Reveal(Message):
    TYPE: ClassVar[str] = "Reveal"
    MAX_BYTES: ClassVar[int] = Submission.MAX_BYTES + 4 * KiB
    shard_id: bytes = spec(B32)
    submission: Submission = spec(nested(Submission))

    def validate(self) -> None:
        if self.submission.shard_id != self.shard_id:
            raise SchemaError("Reveal: submission is for another shard")


@register
@dataclass(frozen=True)
class Report(Message):
    """What q members sign identically to certify a round. It carries what anyone needs to recompute the shard."""

    TYPE: ClassVar[str] = "Report"
    MAX_BYTES: ClassVar[int] = 768 * KiB
    shard_id: bytes = spec(B32)
    epoch: int = spec(uint())
    submitter: bytes = spec(PK)
    data_hash: bytes = spec(B32)
    nonce: bytes = spec(B32)
    pay_id: bytes = spec(B32)
    fee: int = spec(uint())
    winner: bytes = spec(PK)
    producer: bytes = spec(PK)
    producer_share_bps: int = spec(BPS)
    model_id: bytes = spec(B32)
    winner_digest: bytes = spec(B32)
    loss_micro: int = spec(LOSS)
    item_losses: tuple[int, ...] = spec(seq(LOSS, MAX_ITEMS, 1))
    routing: bytes = spec(blob(max_len=MAX_ITEMS * 1024 * 2))
    strikes: tuple[bytes, ...] = spec(seq(PK, 128))
    faulty: tuple[bytes, ...] = spec(seq(PK, 128))
    space: str = spec(SPACE, DEFAULT_SPACE)

    def validate(self) -> None:
        for name in ("strikes", "faulty"):
            v = getattr(self, name)
            if list(v) != sorted(set(v)):
                raise SchemaError(f"Report: {name} must be unique and sorted")
        if self.winner in self.strikes or self.winner in self.faulty:
            raise SchemaError("Report: the winner cannot be struck or faulty")


@register
@dataclass(frozen=True)
class Certificate(Message):
    """q members' signatures on one Report body. Not itself signed: each signature is checked on its own."""

    TYPE: ClassVar[str] = "Certificate"
    MAX_BYTES: ClassVar[int] = Report.MAX_BYTES + 16 * KiB
    report: Report = spec(nested(Report))
    signatures: tuple[tuple[bytes, bytes], ...] = spec(seq(pair(PK, SIG), 128, 1))

    def validate(self) -> None:
        signers = [s for s, _ in self.signatures]
        if signers != sorted(set(signers)):
            raise SchemaError("Certificate: signers must be unique and sorted")

    @property
    def id(self) -> bytes:
        """The certified report's identity: two certificates of one report are the same certificate."""
        return self.report.digest()

    def check(self, net: bytes, verify: Verifier, members: list[bytes], q: int) -> None:
        """Raise unless >= q distinct shard members signed this exact Report for network `net`."""
        digest = H("msg", canonical(body_of(self.report, net)))
        good = 0
        member_set = set(members)
        for signer, sig in self.signatures:
            if signer not in member_set:
                raise SchemaError(f"Certificate: {signer.hex()[:16]} is not a shard member")
            if not verify(signer, digest, sig):
                raise SignatureError(f"Certificate: bad signature from {signer.hex()[:16]}")
            good += 1
        if good < q:
            raise SchemaError(f"Certificate: {good} signatures, quorum is {q}")


def decode_certificate(data: bytes) -> Certificate:
    return Certificate.decode(data)


@register
@dataclass(frozen=True)
class Advert(Message):
    """A node's offer on gossip: which model it serves, at what price, where to reach it."""

    TYPE: ClassVar[str] = "Advert"
    MAX_BYTES: ClassVar[int] = 4 * KiB
    model_id: bytes = spec(B32)
    model_name: str = spec(text(64))
    price: int = spec(uint())
    addrs: tuple[str, ...] = spec(seq(text(256), 8))
    time_ms: int = spec(uint())


EVIDENCE_VALUES = envelope_values(Commit, CommitVotes, OptOut, ProxySubmission, Reveal, Report)  # what it may hold


@register
@dataclass(frozen=True)
class Evidence(Message):
    """Self-proving misbehaviour: two signed envelopes (wire maps) by one signer that cannot both be honest."""

    TYPE: ClassVar[str] = "Evidence"
    MAX_BYTES: ClassVar[int] = 2 * Reveal.MAX_BYTES
    kind: str = spec(text(32))
    offender: bytes = spec(PK)
    shard_id: bytes = spec(B32)
    first: dict[str, Any] = spec(mapping(EVIDENCE_VALUES))
    second: dict[str, Any] = spec(mapping(EVIDENCE_VALUES))

    KINDS: ClassVar[tuple[str, ...]] = ("equivocation", "commit_after_optout", "double_proxy", "reveal_mismatch")

    def validate(self) -> None:
        if self.kind not in self.KINDS:
            raise SchemaError(f"Evidence: unknown kind {self.kind!r}")
