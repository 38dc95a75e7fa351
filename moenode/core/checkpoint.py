"""Epoch checkpoints, slashing and evidence (SPEC section 6.4).

Theory of operation: orders that change stake (Stake, Unstake), latency strikes and faulty members named by shard
certificates, and self-proving misbehaviour (`Evidence`) become *items*, each tagged with an epoch. During epoch
E+1 every authority signs `Checkpoint{epoch: E, prev, items}` = all items tagged <= E not yet in an earlier
checkpoint, sorted; `prev` is the digest of the last checkpoint it applied (32 zero bytes before the first). Votes
carrying >= 6,667 of the voting power of epoch E+1 on one digest make a `CheckpointCert`, which fixes the stake
table of epoch E+2 as `next_table(table(E+1), items)`. Without one, table(E+2) = table(E+1) and the items wait.

`next_table` is a pure function, integer-only, so every node computes the same table:
1. slash bps per account = sum over tag epochs of min(latency_cap_bps, latency_bps_per_strike x strikes)
   + equivocation_slash_bps if any equivocation-class evidence (equivocation, commit_after_optout, double_proxy)
   + reveal_mismatch_slash_bps if any reveal_mismatch evidence or `faulty` mark, capped at 10,000;
   slashed = stake x bps // 10,000.
2. The slashed total goes to the unslashed stakers pro rata to stake (floors, then +1 by largest remainder, ties by
   public key). If every staker is slashed, no one is (the stake has nowhere to go and supply is conserved).
3. Unstakes pay out `min(amount, stake left)` to the balance, in item order. 4. Stakes are added.

A `serve` item (from a Stake order that declares spaces) moves no stake: the ledger that applies the checkpoint
records the declaration, which holds from the same table on (`Ledger.space_book_at`, protocol/spaces.md 3.2).
"""

from dataclasses import dataclass
from typing import Any, ClassVar

from moenode.core.codec import canonical, decode
from moenode.core.crypto import DIGEST_SIZE, H, Verifier
from moenode.core.errors import SchemaError, SignatureError
from moenode.core.genesis import Params
from moenode.core.messages import (
    B32,
    PK,
    SIG,
    Commit,
    CommitVotes,
    Evidence,
    KiB,
    Message,
    OptOut,
    ProxySubmission,
    Report,
    Reveal,
    Signed,
    body_of,
    holds,
    open_wire,
    pair,
    register,
    seq,
    spec,
    text,
    uint,
    values_of,
)
from moenode.core.selection import CERT_THRESHOLD

ZERO = bytes(DIGEST_SIZE)
MAX_CP_ITEMS = 4096
EQUIVOCATION_KINDS = ("equivocation", "commit_after_optout", "double_proxy")
MISMATCH_KINDS = ("reveal_mismatch", "faulty")
ITEM_KINDS = ("stake", "unstake", "strike", "serve") + EQUIVOCATION_KINDS + MISMATCH_KINDS
EVIDENCE_KINDS = EQUIVOCATION_KINDS + ("reveal_mismatch",)  # items tagged by when a node accepted them


@dataclass(frozen=True, order=True)
class Item:
    """One stake-changing fact. Sorted by (epoch, kind, account, source); (kind, account, source) is its key."""

    epoch: int
    kind: str
    account: bytes
    source: bytes  # the order id, the certified report's id, or the evidence key
    value: int  # amount for stake/unstake; for serve, the spaces declared as a bit mask of the genesis list; else 1

    @property
    def key(self) -> tuple[str, bytes, bytes]:
        return self.kind, self.account, self.source

    def to_wire(self) -> list[Any]:
        return [self.epoch, self.kind, self.account, self.source, self.value]


@holds(6)  # [epoch, kind, account, source, value]
def _item(v: Any, where: str) -> Item:
    if not isinstance(v, list) or len(v) != 5:
        raise SchemaError(f"{where}: an item is [epoch, kind, account, source, value]")
    epoch = uint()(v[0], where + ".epoch")
    kind = text(32)(v[1], where + ".kind")
    if kind not in ITEM_KINDS:
        raise SchemaError(f"{where}: unknown item kind {kind!r}")
    return Item(epoch, kind, PK(v[2], where + ".account"), B32(v[3], where + ".source"), uint()(v[4], where + ".value"))


@register
@dataclass(frozen=True)
class Checkpoint(Message):
    TYPE: ClassVar[str] = "Checkpoint"
    MAX_BYTES: ClassVar[int] = MAX_CP_ITEMS * 128 + 4 * KiB
    epoch: int = spec(uint())
    prev: bytes = spec(B32)
    items: tuple[Item, ...] = spec(seq(_item, MAX_CP_ITEMS))

    def to_body(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "prev": self.prev, "items": [i.to_wire() for i in self.items]}

    def validate(self) -> None:
        if list(self.items) != sorted(set(self.items)):
            raise SchemaError("Checkpoint: items must be unique and sorted")
        if len({i.key for i in self.items}) != len(self.items):
            raise SchemaError("Checkpoint: an item key repeats")
        if any(i.epoch > self.epoch for i in self.items):
            raise SchemaError("Checkpoint: an item is tagged after the checkpoint's epoch")

    def digest_for(self, net: bytes) -> bytes:
        """What checkpoint votes sign: H("checkpoint", canonical(body with type and network id))."""
        return H("checkpoint", canonical(body_of(self, net)))


@dataclass(frozen=True)
class CheckpointCert:
    checkpoint: Checkpoint
    votes: tuple[tuple[bytes, bytes], ...]

    MAX_BYTES: ClassVar[int] = Checkpoint.MAX_BYTES + 1024 * 112
    VOTES: ClassVar[Any] = seq(pair(PK, SIG), 1024, 1)
    MAX_VALUES: ClassVar[int] = 1 + 1 + Checkpoint.max_values() + 1 + values_of(VOTES)

    def encode(self) -> bytes:
        return canonical({"checkpoint": self.checkpoint.to_body(), "votes": [list(v) for v in self.votes]})

    @classmethod
    def decode(cls, data: bytes) -> "CheckpointCert":
        wire = decode(data, max_bytes=cls.MAX_BYTES, max_values=cls.MAX_VALUES)
        if not isinstance(wire, dict) or set(wire) != {"checkpoint", "votes"} or not isinstance(wire["checkpoint"], dict):
            raise SchemaError("CheckpointCert: expected {checkpoint, votes}")
        votes = cls.VOTES(wire["votes"], "CheckpointCert.votes")
        if [pk for pk, _ in votes] != sorted({pk for pk, _ in votes}):
            raise SchemaError("CheckpointCert: voters must be unique and sorted")
        return cls(Checkpoint.from_body(wire["checkpoint"]), votes)

    def check(self, net: bytes, power: dict[bytes, int], verify: Verifier) -> None:
        digest = self.checkpoint.digest_for(net)
        total = 0
        for pk, sig in self.votes:
            vp = power.get(pk, 0)
            if vp <= 0 or not verify(pk, digest, sig):
                raise SignatureError(f"CheckpointCert: vote from {pk.hex()[:16]} is not a valid authority vote")
            total += vp
        if total < CERT_THRESHOLD:
            raise SignatureError(f"CheckpointCert: votes carry {total} of 10000 voting power, need {CERT_THRESHOLD}",
                                 reason="under_quorum")


def disagreement(cp: Checkpoint, mine: Checkpoint, known: dict[tuple[str, bytes, bytes], Item]) -> str | None:
    """Why an authority whose own proposal is `mine`, and whose uncheckpointed items are `known`, must not sign
    `cp`; None if it may.

    Every item but evidence is tagged by the epoch of the order or report it comes from, the same on every node, so
    those must match exactly. Evidence is tagged by the epoch in which each node accepted it, which differs across
    an epoch boundary; so `cp` may hold evidence this authority knows under any tag, and must hold the evidence it
    accepted before `cp.epoch` (that has had a whole epoch to spread).
    """
    if cp.prev != mine.prev:
        return "it builds on another checkpoint"
    theirs = {i for i in cp.items if i.kind not in EVIDENCE_KINDS}
    ours = {i for i in mine.items if i.kind not in EVIDENCE_KINDS}
    if theirs != ours:
        return f"its stake, strike and fault items differ ({len(theirs - ours)} unknown here, {len(ours - theirs)} missing)"
    listed = {i.key for i in cp.items if i.kind in EVIDENCE_KINDS}
    if any(key not in known for key in listed):
        return "it holds evidence this node has not seen"
    if any(i.key not in listed for i in mine.items if i.kind in EVIDENCE_KINDS and i.epoch < cp.epoch):
        return "it leaves out evidence older than its epoch"
    return None


class CheckpointCollector:
    """Sans-IO: gathers authorities' votes on one checkpoint until they carry the quorum of `power` (of E+1)."""

    def __init__(self, checkpoint: Checkpoint, net: bytes, power: dict[bytes, int], verify: Verifier):
        self.checkpoint, self.power, self.verify = checkpoint, power, verify
        self.digest = checkpoint.digest_for(net)
        self.votes: dict[bytes, bytes] = {}

    def add(self, authority: bytes, sig: bytes) -> CheckpointCert | None:
        """Count a vote (ignored if powerless, repeated or invalid); return the certificate once the quorum holds."""
        if self.power.get(authority, 0) > 0 and authority not in self.votes \
                and self.verify(authority, self.digest, sig):
            self.votes[authority] = sig
        if sum(self.power[pk] for pk in self.votes) >= CERT_THRESHOLD:
            return CheckpointCert(self.checkpoint, tuple(sorted(self.votes.items())))
        return None


# the table transition ---------------------------------------------------------------------------------------------
def slash_bps(items: tuple[Item, ...] | list[Item], params: Params) -> dict[bytes, int]:
    strikes: dict[tuple[bytes, int], int] = {}
    equiv: set[bytes] = set()
    mismatch: set[bytes] = set()
    for it in items:
        if it.kind == "strike":
            strikes[(it.account, it.epoch)] = strikes.get((it.account, it.epoch), 0) + it.value
        elif it.kind in EQUIVOCATION_KINDS:
            equiv.add(it.account)
        elif it.kind in MISMATCH_KINDS:
            mismatch.add(it.account)
    bps: dict[bytes, int] = {}
    for (acct, _), n in strikes.items():
        bps[acct] = bps.get(acct, 0) + min(params.latency_cap_bps, params.latency_bps_per_strike * n)
    for acct in equiv:
        bps[acct] = bps.get(acct, 0) + params.equivocation_slash_bps
    for acct in mismatch:
        bps[acct] = bps.get(acct, 0) + params.reveal_mismatch_slash_bps
    return {a: min(10_000, b) for a, b in bps.items() if b > 0}


def next_table(table: dict[bytes, int], items: tuple[Item, ...] | list[Item], params: Params
               ) -> tuple[dict[bytes, int], dict[bytes, int]]:
    """(new stake table, unstake payouts to balances). Pure and integer-only."""
    new = {a: s for a, s in table.items() if s > 0}
    bps = slash_bps(items, params)
    slashed = {a: new[a] * b // 10_000 for a, b in bps.items() if new.get(a, 0) > 0}
    slashed = {a: s for a, s in slashed.items() if s > 0}
    unslashed = {a: s for a, s in new.items() if a not in bps}
    pool = sum(slashed.values())
    if pool and unslashed:
        for a, s in slashed.items():
            new[a] -= s
        total = sum(unslashed.values())
        shares = {a: pool * s // total for a, s in unslashed.items()}
        left = pool - sum(shares.values())
        for a in sorted(unslashed, key=lambda a: (-(pool * unslashed[a] % total), a))[:left]:
            shares[a] += 1
        for a, s in shares.items():
            new[a] += s
    payouts: dict[bytes, int] = {}
    for it in items:
        if it.kind == "unstake":
            pay = min(it.value, new.get(it.account, 0))
            if pay:
                new[it.account] -= pay
                payouts[it.account] = payouts.get(it.account, 0) + pay
        elif it.kind == "stake":
            new[it.account] = new.get(it.account, 0) + it.value
    return {a: s for a, s in new.items() if s > 0}, payouts


# evidence ---------------------------------------------------------------------------------------------------------
EQUIVOCABLE = (Commit, CommitVotes, Report)


def evidence_key(ev: Evidence) -> bytes:
    """One misbehaviour is slashed once, however many envelope pairs prove it."""
    return H("evidence", canonical([ev.kind, ev.offender, ev.shard_id]))


def check_evidence(ev: Evidence, net: bytes, verify: Verifier) -> bytes:
    """Prove `ev` from its two envelopes; return the offender. Raises ProtocolError naming what does not hold."""
    a = open_wire(ev.first, net, verify)
    b = open_wire(ev.second, net, verify)
    if a.signer != ev.offender or b.signer != ev.offender:
        raise SignatureError("Evidence: the envelopes are not both signed by the offender")
    if a.id == b.id:
        raise SchemaError("Evidence: the two envelopes are the same message")
    for env in (a, b):
        if getattr(env.msg, "shard_id", None) != ev.shard_id:
            raise SchemaError("Evidence: an envelope is for another shard")
    ta, tb = type(a.msg), type(b.msg)
    ok = False
    if ev.kind == "equivocation":
        ok = ta is tb and ta in EQUIVOCABLE
    elif ev.kind == "commit_after_optout":
        ok = {ta, tb} == {Commit, OptOut}
    elif ev.kind == "double_proxy":
        ok = ta is tb is ProxySubmission
    elif ev.kind == "reveal_mismatch":
        ok = _mismatch(a, b)
    if not ok:
        raise SchemaError(f"Evidence: {ta.TYPE} and {tb.TYPE} do not prove {ev.kind}")
    return ev.offender


def _mismatch(a: Signed[Message], b: Signed[Message]) -> bool:
    if isinstance(a.msg, Reveal) and isinstance(b.msg, Reveal):
        return True  # two different reveals by one member for one shard
    commit, reveal = (a, b) if isinstance(a.msg, Commit) else (b, a)
    if not isinstance(commit.msg, Commit) or not isinstance(reveal.msg, Reveal):
        return False
    return reveal.msg.submission.digest() != commit.msg.digest
