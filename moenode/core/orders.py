"""Ledger orders, authority votes and certified orders (SPEC section 6).

Theory of operation: every value move is an *order* from one account that consumes that account's next sequence
number. An order is a message schema like any other, sealed in the signed envelope, so its body carries its type
and the network id; the order id is the envelope's `Signed.id` (what the order's own signature covers).

An authority that accepts an order answers with a *vote*: an Ed25519 signature over
`vote_digest(order_id, epoch) = H("order-vote", order_id || epoch as 8 bytes big-endian)`. Votes are bare
signatures, never envelopes, because the order id already binds the network, the account, the sequence and the
content. An authority may instead vote for a *batch* of orders with one signature: over
`batch_vote_digest(root) = H("order-batch-vote", root)`, where `root` is the Merkle root of the orders' vote
digests (see `batch_proofs`); its vote for one order of the batch is then the batch signature plus that order's
membership proof (its index and the sibling hashes up to the root). A *certified order* is the order envelope plus
votes from authorities holding >= 6,667 of the 10,000 voting power of the order's epoch; its canonical encoding is
`{"order": <envelope map>, "votes": [[pk, sig] or [pk, sig, index, [sibling...]], ...]}` with votes sorted by
public key. Anyone can check it given that epoch's voting power, and anyone can apply it.

*Renewal* (SPEC 6.8): an order whose epoch has passed before it got its quorum may be voted for again, the same
bytes, in a later epoch V: the votes are then over `vote_digest(order_id, V)`, they count in the voting power of
V, and the certificate says so with a third key, `"vote_epoch": V` (present only when V differs from the order's
epoch, so a certificate of a first vote keeps its bytes). An authority's lock holds an order id whatever the epoch
of its votes, so a renewal never lets a second order certify at one (account, sequence); two certificates of one
order (first vote and renewal) are one order, applied once.

Escrows: a payment for shard S goes into the account `escrow_account(S) = b"escrow" + H("escrow", S)[:26]`. No one
holds that account's key, so its one and only order (sequence 0) is a Settle, which any party may sign and submit
because the shard certificate it carries is the authority, or a Refund, which the payer signs once the escrow's
deadline passed. The six ASCII bytes `escrow` mark every escrow account, so anyone can tell one from a key without
state: a Transfer to an escrow account is invalid, because a balance there could never be spent (an escrow pays
out only its escrowed fee, by Settle or Refund). No key anyone generates starts with them (2^-48 per key).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from moenode.core.codec import canonical, decode
from moenode.core.crypto import H, Verifier
from moenode.core.errors import ProtocolError, SchemaError, SignatureError, UnderQuorum
from moenode.core.messages import (
    B32,
    KiB,
    PK,
    SIG,
    SPACE,
    Certificate,
    Message,
    Signed,
    blob,
    envelope_values,
    holds,
    narrow,
    nested,
    open_signed,
    open_wire,
    optional,
    pair,
    register,
    seq,
    spec,
    text,
    uint,
    values_of,
)
from moenode.core.selection import CERT_THRESHOLD
from moenode.core.spaces import MAX_SPACES

MAX_AMOUNT = (1 << 62) - 1
AMOUNT = uint(MAX_AMOUNT)
MAX_VOTES = 1024  # authorities per epoch that can sign one order


ESCROW_MARK = b"escrow"  # the first bytes of every escrow account


def escrow_account(shard_id: bytes) -> bytes:
    """The account holding the fee of shard `shard_id` until it is settled or refunded."""
    return ESCROW_MARK + H("escrow", shard_id)[: 32 - len(ESCROW_MARK)]


def is_escrow(account: bytes) -> bool:
    """True for an escrow account (`escrow_account` of some shard): no key signs for it."""
    return account.startswith(ESCROW_MARK)


def vote_digest(order_id: bytes, epoch: int) -> bytes:
    """What an authority signs to vote for an order (and a batch vote's leaf for that order)."""
    return H("order-vote", order_id + epoch.to_bytes(8, "big"))


# batch votes ------------------------------------------------------------------------------------------------------
MAX_PROOF_DEPTH = 10  # a batch vote covers at most 1,024 orders
MAX_BATCH = 1 << MAX_PROOF_DEPTH
PAD_LEAF = bytes(32)  # fills a batch up to a power of two; no order's vote digest is all zeros


@dataclass(frozen=True)
class BatchVote:
    """An authority's vote for one order of a batch: the batch signature and the order's membership proof."""

    sig: bytes
    index: int
    path: tuple[bytes, ...]


def batch_vote_digest(root: bytes) -> bytes:
    """What an authority signs to vote for every order under `root` at once."""
    return H("order-batch-vote", root)


def _node(left: bytes, right: bytes) -> bytes:
    return H("order-vote-node", left + right)


def batch_proofs(leaves: list[bytes]) -> tuple[bytes, list[tuple[int, tuple[bytes, ...]]]]:
    """The Merkle root over `leaves` (padded with PAD_LEAF to a power of two) and each leaf's (index, path)."""
    if not 1 <= len(leaves) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1..{MAX_BATCH} orders, not {len(leaves)}")
    depth = (len(leaves) - 1).bit_length()
    level = list(leaves) + [PAD_LEAF] * ((1 << depth) - len(leaves))
    levels = [level]
    while len(level) > 1:
        level = [_node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    proofs = [(i, tuple(levels[d][(i >> d) ^ 1] for d in range(depth))) for i in range(len(leaves))]
    return level[0], proofs


def fold_proof(leaf: bytes, index: int, path: tuple[bytes, ...]) -> bytes:
    """The root that `path` leads to from `leaf` at `index` (bit d of `index` set: the leaf side is on the right)."""
    h = leaf
    for d, sibling in enumerate(path):
        h = _node(sibling, h) if index >> d & 1 else _node(h, sibling)
    return h


def signed_digest(leaf: bytes, vote: tuple[Any, ...]) -> bytes:
    """What the signature of `vote` ((pk, sig) or (pk, sig, index, path)) covers, for the order whose vote digest
    is `leaf`."""
    return leaf if len(vote) == 2 else batch_vote_digest(fold_proof(leaf, vote[2], vote[3]))


def vote_entry(pk: bytes, vote: "bytes | BatchVote") -> tuple[Any, ...]:
    """A certificate's entry for one authority's vote."""
    return (pk, vote) if isinstance(vote, bytes) else (pk, vote.sig, vote.index, vote.path)


@holds(1 + 1 + 1 + MAX_PROOF_DEPTH)  # [index, [sibling, ...]]
def _proof_check(v: Any, where: str) -> tuple[int, tuple[bytes, ...]]:
    """A batch vote's membership proof, [index, path]."""
    if not isinstance(v, list) or len(v) != 2:
        raise SchemaError(f"{where}: expected [index, path]")
    path = seq(B32, MAX_PROOF_DEPTH)(v[1], f"{where} path")
    # the index names exactly one leaf of a tree as deep as the path: one vote, one encoding
    return uint((1 << len(path)) - 1)(v[0], f"{where} index"), path


@holds(1 + 1 + 1 + 1 + 1 + MAX_PROOF_DEPTH)  # [pk, sig, index, [sibling, ...]]
def _vote_check(v: Any, where: str) -> tuple[Any, ...]:
    if isinstance(v, list) and len(v) == 2:
        out: tuple[Any, ...] = pair(PK, SIG)(v, where)
        return out
    if not isinstance(v, list) or len(v) != 4:
        raise SchemaError(f"{where}: expected [pk, sig] or [pk, sig, index, path]")
    return (PK(v[0], f"{where}[0]"), SIG(v[1], f"{where}[1]"), *_proof_check(v[2:], where))


# the orders -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Order(Message):
    """Common fields: the account whose sequence number the order consumes, that number, and the order's epoch."""

    SIGNED_BY_ACCOUNT: ClassVar[bool] = True  # False: the envelope signer is checked by the ledger instead
    account: bytes = spec(B32)
    sequence: int = spec(uint())
    epoch: int = spec(uint())


@register
@dataclass(frozen=True)
class Transfer(Order):
    TYPE: ClassVar[str] = "Transfer"
    MAX_BYTES: ClassVar[int] = 1 * KiB
    recipient: bytes = spec(B32)
    amount: int = spec(AMOUNT)

    def validate(self) -> None:
        if self.amount < 1:
            raise SchemaError("Transfer: amount must be positive")
        if self.recipient == self.account:
            raise SchemaError("Transfer: recipient is the sender")
        if is_escrow(self.recipient):
            raise SchemaError("Transfer: the recipient is an escrow account, whose balance no order could ever spend")


@register
@dataclass(frozen=True)
class PayEscrow(Order):
    """The submitter moves a shard's fee into escrow(shard_id); Refund is possible from `deadline_ms` on."""

    TYPE: ClassVar[str] = "PayEscrow"
    MAX_BYTES: ClassVar[int] = 1 * KiB
    shard_id: bytes = spec(B32)
    fee: int = spec(AMOUNT)
    deadline_ms: int = spec(uint())

    def validate(self) -> None:
        if self.fee < 1:
            raise SchemaError("PayEscrow: fee must be positive")


@register
@dataclass(frozen=True)
class Settle(Order):
    """Release an escrow by its shard certificate. Any party may sign it: the certificate is the authority."""

    TYPE: ClassVar[str] = "Settle"
    MAX_BYTES: ClassVar[int] = Certificate.MAX_BYTES + 4 * KiB
    SIGNED_BY_ACCOUNT: ClassVar[bool] = False
    certificate: Certificate = spec(nested(Certificate))

    def validate(self) -> None:
        if self.sequence != 0:
            raise SchemaError("Settle: an escrow has exactly one order, at sequence 0")
        if self.account != escrow_account(self.certificate.report.shard_id):
            raise SchemaError("Settle: account is not the escrow of the certified shard")

    @property
    def report_id(self) -> bytes:
        return self.certificate.id


@register
@dataclass(frozen=True)
class Refund(Order):
    """Return an escrow to its payer after the deadline; signed by the payer, who receives `amount`."""

    TYPE: ClassVar[str] = "Refund"
    MAX_BYTES: ClassVar[int] = 1 * KiB
    SIGNED_BY_ACCOUNT: ClassVar[bool] = False
    shard_id: bytes = spec(B32)
    pay_id: bytes = spec(B32)
    amount: int = spec(AMOUNT)

    def validate(self) -> None:
        if self.sequence != 0:
            raise SchemaError("Refund: an escrow has exactly one order, at sequence 0")
        if self.account != escrow_account(self.shard_id):
            raise SchemaError("Refund: account is not escrow(shard_id)")


@register
@dataclass(frozen=True)
class Stake(Order):
    """Bond `amount` of balance; it joins the stake table two epochs after the order's epoch (by checkpoint).

    `spaces`, when not empty, declares the spaces the account's model serves from then on (protocol/spaces.md 3.2):
    the same checkpoint that adds the stake to the table makes the declaration, so shards of a space are drawn from
    its stake from the same epoch. Empty keeps what the account serves (its genesis declaration, the default space,
    or an earlier Stake's)."""

    TYPE: ClassVar[str] = "Stake"
    MAX_BYTES: ClassVar[int] = 1 * KiB
    amount: int = spec(AMOUNT)
    spaces: tuple[str, ...] = spec(seq(SPACE, MAX_SPACES), ())

    def validate(self) -> None:
        if self.amount < 1:
            raise SchemaError("Stake: amount must be positive")
        if list(self.spaces) != sorted(set(self.spaces)):
            raise SchemaError("Stake: spaces must be unique and sorted")


@register
@dataclass(frozen=True)
class Unstake(Order):
    """Ask for `amount` of stake back; paid to the balance by the checkpoint that includes it, after slashing."""

    TYPE: ClassVar[str] = "Unstake"
    MAX_BYTES: ClassVar[int] = 1 * KiB
    amount: int = spec(AMOUNT)

    def validate(self) -> None:
        if self.amount < 1:
            raise SchemaError("Unstake: amount must be positive")


ORDER_TYPES: tuple[type[Order], ...] = (Transfer, PayEscrow, Settle, Refund, Stake, Unstake)
MAX_ORDER_BYTES = max(c.MAX_BYTES for c in ORDER_TYPES)


def open_order(data: bytes, net: bytes, verify: Verifier) -> Signed[Order]:
    """Decode and check an order envelope (size cap, network, schema, signature, account-signs rule)."""
    signed = narrow(open_signed(data, net, verify, ORDER_TYPES), Order)
    check_signer(signed)
    return signed


def check_signer(signed: Signed[Order]) -> None:
    order = signed.msg
    if order.SIGNED_BY_ACCOUNT and signed.signer != order.account:
        raise SignatureError(f"{order.TYPE}: signed by {signed.signer.hex()[:16]}, not by its account")


# certified orders -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CertifiedOrder:
    """An order envelope plus authority votes. `check` proves the quorum; construction alone proves nothing."""

    order: Signed[Order]
    votes: tuple[tuple[Any, ...], ...]  # (pk, sig) or (pk, sig, index, path), sorted by pk
    renewed_in: int | None = None  # the epoch the votes were cast in, when later than the order's (a renewal)

    # a vote: pk 34 + sig 66 + list header 1, and for a batch vote index 3 + path 3 + 34 per level
    MAX_BYTES: ClassVar[int] = MAX_ORDER_BYTES + MAX_VOTES * (107 + 34 * MAX_PROOF_DEPTH) + 1 * KiB
    VOTES: ClassVar[Any] = seq(_vote_check, MAX_VOTES, 1)
    # the map, "order" and its envelope, "votes" and the votes, and an optional "vote_epoch" with its integer
    MAX_VALUES: ClassVar[int] = 1 + 1 + envelope_values(*ORDER_TYPES) + 1 + values_of(VOTES) + 2

    @property
    def id(self) -> bytes:
        return self.order.id

    @property
    def msg(self) -> Order:
        return self.order.msg

    @property
    def vote_epoch(self) -> int:
        """The epoch whose voting power counts the votes: the order's, or the later one it was renewed in."""
        return self.msg.epoch if self.renewed_in is None else self.renewed_in

    def encode(self) -> bytes:
        wire: dict[str, Any] = {"order": self.order.as_wire(), "votes": [list(v) for v in self.votes]}
        if self.renewed_in is not None:
            wire["vote_epoch"] = self.renewed_in
        return canonical(wire)

    @classmethod
    def decode(cls, data: bytes, net: bytes, verify: Verifier) -> "CertifiedOrder":
        """Decode untrusted bytes and check the order envelope (not yet the votes: see `check`)."""
        wire = decode(data, max_bytes=cls.MAX_BYTES, max_values=cls.MAX_VALUES)
        if not isinstance(wire, dict) or set(wire) - {"vote_epoch"} != {"order", "votes"}:
            raise SchemaError("CertifiedOrder: expected {order, votes} or {order, votes, vote_epoch}")
        votes = cls.VOTES(wire["votes"], "CertifiedOrder.votes")
        signers = [v[0] for v in votes]
        if signers != sorted(set(signers)):
            raise SchemaError("CertifiedOrder: voters must be unique and sorted")
        renewed_in = uint()(wire["vote_epoch"], "CertifiedOrder.vote_epoch") if "vote_epoch" in wire else None
        order = narrow(open_wire(wire["order"], net, verify, ORDER_TYPES), Order)
        check_signer(order)
        if len(order.encode()) > type(order.msg).MAX_BYTES:
            raise SchemaError(f"CertifiedOrder: the {order.msg.TYPE} exceeds its size cap")
        if renewed_in is not None and renewed_in <= order.msg.epoch:
            raise SchemaError("CertifiedOrder: vote_epoch must be later than the order's epoch (else absent)")
        return cls(order=order, votes=votes, renewed_in=renewed_in)

    def check(self, power: dict[bytes, int], verify: Verifier, skip: frozenset[bytes] = frozenset(), *,
              threshold: int = CERT_THRESHOLD, outsiders: bool = False) -> int:
        """Raise unless the votes carry >= `threshold` (the certificate threshold) of `power`, the voting power of
        `vote_epoch` unless the caller checks against another table; return the power counted.

        `skip` names voters whose signature the caller has already verified (its own vote, say). With `outsiders`,
        a vote of an account without power in `power` is left out (neither checked nor counted) instead of
        invalidating the certificate: for checking against a table other than the order's own epoch's.
        """
        epoch = self.vote_epoch
        leaf = vote_digest(self.id, epoch)
        total = 0
        for vote in self.votes:
            pk, sig = vote[0], vote[1]
            vp = power.get(pk, 0)
            if vp <= 0:
                if outsiders:
                    continue
                raise SignatureError(f"CertifiedOrder: {pk.hex()[:16]} has no voting power in epoch {epoch}")
            if pk not in skip and not verify(pk, signed_digest(leaf, vote), sig):
                what = "vote" if len(vote) == 2 else "batch vote (its signature or membership proof)"
                raise SignatureError(f"CertifiedOrder: bad {what} from {pk.hex()[:16]}")
            total += vp
        if total < threshold:
            raise UnderQuorum(f"CertifiedOrder: votes carry {total} of 10000 voting power, need {threshold}")
        return total


def certify(order: Signed[Order], votes: "Mapping[bytes, bytes | BatchVote]",
            vote_epoch: int | None = None) -> CertifiedOrder:
    """The certificate of `order` from `votes` cast in `vote_epoch` (None: the order's own epoch)."""
    renewed_in = None if vote_epoch is None or vote_epoch == order.msg.epoch else vote_epoch
    return CertifiedOrder(order=order, votes=tuple(vote_entry(pk, votes[pk]) for pk in sorted(votes)),
                          renewed_in=renewed_in)


# an authority's order RPC -----------------------------------------------------------------------------------------
MAX_ATTACH = 8  # certified orders one request may carry for an authority that lacks them


@dataclass(frozen=True)
class OrderRequest(Message):
    """What a client sends an authority: a signed order (envelope bytes), certified orders it may lack, and the
    epoch whose vote it asks for: nil for the order's own epoch, or a later epoch to renew an order whose epoch
    has passed (SPEC 6.8)."""

    TYPE: ClassVar[str] = "OrderRequest"
    MAX_BYTES: ClassVar[int] = 4 << 20  # a Settle carries a shard certificate, and so may each attachment
    order: bytes = spec(blob(max_len=MAX_ORDER_BYTES))
    attach: tuple[bytes, ...] = spec(seq(blob(max_len=4 << 20), MAX_ATTACH))
    vote_epoch: int | None = field(default=None, metadata={"check": optional(uint())})


@dataclass(frozen=True)
class OrderAnswer(Message):
    """An authority's answer: its vote (a signature, with this order's membership proof when it is a batch vote),
    or why it refuses and which account it lacks history of (the client retries with certificates touching it)."""

    TYPE: ClassVar[str] = "OrderAnswer"
    MAX_BYTES: ClassVar[int] = 1 * KiB
    sig: bytes | None = spec(optional(SIG))
    proof: tuple[Any, ...] | None = spec(optional(_proof_check))
    refusal: str | None = spec(optional(text(32)))
    account: bytes | None = spec(optional(B32))
    why: str = spec(text(320))

    def validate(self) -> None:
        if (self.sig is None) == (self.refusal is None):
            raise SchemaError("OrderAnswer: a vote or a refusal, exactly one")
        if self.sig is None and self.proof is not None:
            raise SchemaError("OrderAnswer: a refusal carries no proof")

    @classmethod
    def of(cls, answer: "bytes | BatchVote | ProtocolError") -> "OrderAnswer":
        if isinstance(answer, ProtocolError):
            account = getattr(answer, "account", None)
            why = str(answer).encode()[:320].decode("utf-8", "ignore")
            return cls(None, None, answer.reason[:32], account if isinstance(account, bytes) else None, why)
        if isinstance(answer, BatchVote):
            return cls(answer.sig, (answer.index, answer.path), None, None, "")
        return cls(answer, None, None, None, "")

    @property
    def vote(self) -> "bytes | BatchVote | None":
        if self.sig is None:
            return None
        return self.sig if self.proof is None else BatchVote(self.sig, *self.proof)


# the round's payment check ----------------------------------------------------------------------------------------
def verify_pay_cert(
    pay_cert: bytes,
    *,
    shard_id: bytes,
    fee: int,
    submitter: bytes,
    net: bytes,
    verify: Verifier,
    stake_table_for_epoch: Any,
) -> bytes:
    """Check that `pay_cert` is a certified PayEscrow of `fee` by `submitter` into escrow(shard_id); return pay_id.

    `stake_table_for_epoch(epoch) -> {pubkey: stake}` supplies the stake table the votes are counted against.
    Raises ProtocolError.
    """
    from moenode.core.selection import voting_power

    cert = CertifiedOrder.decode(pay_cert, net, verify)
    order = cert.msg
    if not isinstance(order, PayEscrow):
        raise SchemaError(f"pay_cert: a {order.TYPE}, not a PayEscrow")
    if order.shard_id != shard_id or order.fee != fee or order.account != submitter:
        raise SchemaError("pay_cert: pays another shard, fee or submitter")
    try:
        stakes = stake_table_for_epoch(cert.vote_epoch)
    except KeyError:
        raise SchemaError(f"pay_cert: no stake table for epoch {cert.vote_epoch}") from None
    cert.check(voting_power(stakes), verify)
    return cert.id


