"""One shard on one node, as one sans-IO session; and the table of a node's sessions with its early buffer.

Theory of operation
-------------------
A node meets a shard in one of two roles, or both: as a member (our `MemberRound`, opened by the shard's Input) and
as the submitter (our `SubmitterRound`, opened when we send the Input). `ShardSession` composes the two, the way a
connection object composes a handshake and a stream: every input goes in through one method and every output comes
back as a list of effects from `moenode.core.round` (`Send`, `Work`, `Verify`, `EvidenceFound`, `Outcome`):

    receive(peer, env, now)        a checked envelope (already through `open_signed`) from a peer
    work_done(submission, now)     our candidate is ready
    verified(member, ok, now)      a lazy verification finished
    handle_timer(now)              `deadline` has come

The session owns the replay rule: an envelope (its id and signer: equal bodies from two members share an id) seen
twice is refused, except where the protocol sends it twice on purpose (members send the submitter the same Report
and Reveal they broadcast to the shard, so a node in both roles sees them twice; two couriers carry the winning
Reveal to the submitter).

`ShardTable` holds a node's sessions by shard id and the messages that arrive before their shard's Input. Only a
staked signer can be a member, so only its messages are kept, within bounds per shard, in shards, in bytes and in
time (`EarlyBounds`); the stake lookup is the table's one read-only query of the ledger (`staked`). When the Input
opens our member round, what waited for it is replayed through the session, and a refused message comes back as a
`Refused` effect. A finished session lingers to absorb stragglers quietly; `prune` closes it, and messages for a
closed shard are dropped (an Input for one is a replay).

The payment check is an input: the driver checks the Input's payment certificate against its ledger and passes the
problem it found (or "") to `open_member`; nothing here calls out. Time is the caller's `now` in integer ms.
"""

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from moenode.core.crypto import Signer, Verifier
from moenode.core.errors import LocalRoundError, NotInShard, ProtocolError, Replay, StateError
from moenode.core.messages import (
    Commit,
    CommitVotes,
    Input,
    Message,
    OptOut,
    Report,
    Reveal,
    Signed,
    Submission,
    narrow,
)
from moenode.core.round import Effect, MemberRound, ShardContext, SubmitterRound

MEMBER_TYPES = (OptOut, Commit, CommitVotes, Reveal, Report)
SUBMITTER_TYPES = (Report, Reveal, OptOut)
ROUND_TYPES = (Input, *MEMBER_TYPES)


@dataclass(frozen=True)
class Refused:
    """A message that waited for its Input was refused once it could be read: count it against its sender."""

    peer: bytes
    what: str
    error: ProtocolError


SessionEffect = Effect | Refused


def envelope_key(env: Signed[Message]) -> bytes:
    """What makes two deliveries the same envelope: its id and its signer."""
    return env.id + env.signer


def buffered_size(env: Signed[Message]) -> int:
    """A cheap upper bound of an envelope's size: its payload blobs (a Reveal's vectors) dominate."""
    msg = env.msg
    if isinstance(msg, Reveal):
        p = msg.submission.payload
        return len(p.embeddings) + len(p.views) + len(p.routing) + 4096
    return 4096


@dataclass
class ShardSession:
    """Our rounds in one shard: the member's, the submitter's, or both."""

    ctx: ShardContext
    input_env: Signed[Message]
    signer: Signer
    verify: Verifier
    member: MemberRound | None = None
    submitter: SubmitterRound | None = None
    seen: set[bytes] = field(default_factory=set)
    finished_at: int | None = None

    @property
    def shard_id(self) -> bytes:
        return self.ctx.shard_id

    @property
    def me(self) -> bytes:
        return self.signer.public_key

    @property
    def in_shard(self) -> bool:
        return self.me in self.ctx.member_set

    # opening ----------------------------------------------------------------------------------------------------
    def submit(self, now: int) -> list[Effect]:
        """Take the submitter's role: send our Input to every member."""
        if self.submitter is not None:
            raise LocalRoundError("this session already submitted")
        self.submitter = SubmitterRound(self.ctx, self.input_env)
        return self._after(self.submitter.start(now), now)

    def open_member(self, input_env: Signed[Message], now: int, payment_problem: str = "") -> list[Effect]:
        """Take the member's role on the shard's Input. `payment_problem` is what the driver's check of the payment
        certificate found ("" if it holds); a problem makes us opt out."""
        if self.member is not None:
            raise LocalRoundError("this session's member round is open already")
        self.member, out = MemberRound.open(self.ctx, input_env, self.signer, self.verify, now, payment_problem)
        self.seen.add(envelope_key(input_env))
        return self._after(out, now)

    def awaits_input(self, env: Signed[Message]) -> bool:
        """A message for our member round, which our Input has not opened yet: it must wait."""
        return self.member is None and isinstance(env.msg, MEMBER_TYPES) and self.in_shard

    # inputs -----------------------------------------------------------------------------------------------------
    def receive(self, peer: bytes, env: Signed[Message], now: int) -> list[Effect]:
        """A checked envelope from `peer` for this shard; raises ProtocolError if no role of ours takes it."""
        msg = env.msg
        key = env.id + env.signer  # envelope_key, inline: this runs for every delivery
        if key in self.seen:
            if (self.member is not None and self.submitter is not None) or \
                    (self.submitter is not None and isinstance(msg, Reveal)):
                return []  # by design: members send the submitter what they broadcast; two couriers carry a reveal
            raise Replay(f"{msg.TYPE} delivered twice")
        self.seen.add(key)
        out: list[Effect] = []
        errors: list[ProtocolError] = []
        handled = False
        roles: tuple[tuple[MemberRound | SubmitterRound | None, tuple[type[Message], ...]], ...] = (
            (self.member, MEMBER_TYPES), (self.submitter, SUBMITTER_TYPES))
        for rnd, takes in roles:
            if rnd is not None and isinstance(msg, takes):
                try:
                    out += rnd.handle(env, now)
                    handled = True
                except ProtocolError as e:
                    errors.append(e)
        if self.submitter is not None and self.member is None and not isinstance(msg, SUBMITTER_TYPES) \
                and not self.in_shard:
            errors.append(StateError(f"{msg.TYPE} is not for the submitter"))
        if errors and not handled:
            raise errors[0]
        return self._after(out, now)

    def forget(self, env: Signed[Message]) -> None:
        """`env` was kept for later rather than read now: when it comes back, it is not a replay."""
        self.seen.discard(envelope_key(env))

    def work_done(self, submission: Submission, now: int) -> list[Effect]:
        m = self.member
        if m is None or m.outcome is not None:
            return []
        return self._after(m.on_work_done(submission, now), now)

    def verified(self, member: bytes, ok: bool, now: int, reason: str = "") -> list[Effect]:
        m = self.member
        if m is None or m.outcome is not None:
            return []
        return self._after(m.on_verified(member, ok, now, reason), now)

    @property
    def deadline(self) -> int | None:
        """When `handle_timer` is due next (None when nothing is pending)."""
        m = self.member.deadline if self.member is not None else None
        s = self.submitter.deadline if self.submitter is not None else None
        if m is None:
            return s
        return m if s is None or m < s else s

    def handle_timer(self, now: int) -> list[Effect]:
        out: list[Effect] = []
        for rnd in (self.member, self.submitter):
            if rnd is not None:
                due = rnd.deadline
                if due is not None and due <= now:
                    out += rnd.on_timer(now)
        return self._after(out, now)

    @property
    def finished(self) -> bool:
        return (self.member is None or self.member.outcome is not None) and \
            (self.submitter is None or self.submitter.done)

    def _after(self, out: list[Effect], now: int) -> list[Effect]:
        if out and self.finished_at is None and self.finished:  # a round ends with an Outcome: never on []
            self.finished_at = now
        return out


@dataclass(frozen=True)
class EarlyBounds:
    """How much a node keeps of messages whose Input it has not seen, and how long a finished shard lingers."""

    per_shard: int = 64
    shards: int = 256
    bytes: int = 64 << 20  # all buffered messages together
    ttl_ms: int = 300_000  # how long a message may wait for its Input
    sessions: int = 512  # rounds open at once (a bound on memory under a flood of Inputs)
    closed_keep: int = 10_000
    linger_ms: int = 30_000  # how long a finished session stays to absorb stragglers quietly


def _everyone(_signer: bytes) -> bool:
    return True


@dataclass
class ShardTable:
    """A node's shard sessions, the early buffer of messages that outran their Input, and the closed shards."""

    signer: Signer
    verify: Verifier
    staked: Callable[[bytes], bool] = _everyone  # could this signer be a member of a current shard (read-only)
    bounds: EarlyBounds = field(default_factory=EarlyBounds)
    sessions: dict[bytes, ShardSession] = field(default_factory=dict)
    early: OrderedDict[bytes, list[tuple[bytes, Signed[Message], int]]] = field(default_factory=OrderedDict)
    early_bytes: int = 0
    closed: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    dropped: int = 0  # early messages dropped for want of room

    @property
    def me(self) -> bytes:
        return self.signer.public_key

    def submit(self, ctx: ShardContext, input_env: Signed[Message], now: int
               ) -> tuple[ShardSession, Sequence[SessionEffect]]:
        """Open our submitter's session for an Input we signed, and send it."""
        session = self.sessions.get(ctx.shard_id)
        if session is None:
            session = self.sessions[ctx.shard_id] = ShardSession(ctx, input_env, self.signer, self.verify)
        return session, session.submit(now)

    def check_input(self, env: Signed[Message]) -> ShardContext | None:
        """Before the caller derives the shard of an Input: refuse a replay or a flood; the context when known."""
        sid = narrow(env, Input).msg.shard_id
        session = self.sessions.get(sid)
        if session is not None and session.member is not None:
            if envelope_key(env) in session.seen:
                raise Replay("Input delivered twice")
            raise StateError("a second, different Input for this shard")
        if sid in self.closed:
            raise Replay("Input for a round that is already over")
        if session is None and len(self.sessions) >= self.bounds.sessions:
            raise StateError(f"{len(self.sessions)} rounds open: not taking more", reason="rate_limited")
        return session.ctx if session is not None else None

    def open_member(self, ctx: ShardContext, env: Signed[Message], now: int, payment_problem: str = ""
                    ) -> tuple[ShardSession, list[SessionEffect]]:
        """Our member round on the shard's Input (`check_input` first), then what waited for it."""
        self.check_input(env)
        if self.me not in ctx.member_set:
            raise NotInShard(f"we are not in shard {ctx.shard_id.hex()[:16]}")
        session = self.sessions.get(ctx.shard_id)
        if session is None:
            session = ShardSession(ctx, env, self.signer, self.verify)
        out: list[SessionEffect] = list(session.open_member(env, now, payment_problem))
        self.sessions[ctx.shard_id] = session
        for peer, early, _t in self.early.pop(ctx.shard_id, []):
            self.early_bytes -= buffered_size(early)
            try:
                out += self.receive(peer, early, now)
            except ProtocolError as e:
                out.append(Refused(peer, early.msg.TYPE, e))
        return session, out

    def receive(self, peer: bytes, env: Signed[Message], now: int) -> Sequence[SessionEffect]:
        """A checked round message other than an Input; raises ProtocolError if it is refused."""
        sid: bytes = env.msg.shard_id  # type: ignore[attr-defined]
        session = self.sessions.get(sid)
        if session is None:
            return self._hold(sid, peer, env, now)
        waits = session.member is None and session.awaits_input(env)
        if waits and not isinstance(env.msg, SUBMITTER_TYPES):
            return self._hold(sid, peer, env, now)
        if not waits or envelope_key(env) in session.seen:
            return session.receive(peer, env, now)
        # a Report, Reveal or OptOut for our submitter's role, which our member round must see too once it opens
        self._buffer(sid, peer, env, now)
        try:
            return session.receive(peer, env, now)
        finally:
            session.forget(env)

    def _hold(self, sid: bytes, peer: bytes, env: Signed[Message], now: int) -> list[SessionEffect]:
        """Keep a message until its shard's Input opens our member round; a straggler after the round is dropped."""
        if sid not in self.closed:  # after the round: normal, not misbehaviour
            self._buffer(sid, peer, env, now)
        return []

    def _buffer(self, sid: bytes, peer: bytes, env: Signed[Message], now: int) -> None:
        """Keep a message for a shard whose Input we have not seen, if its signer could be a member at all."""
        if not self.staked(env.signer):
            raise NotInShard(f"{env.msg.TYPE} from {env.signer.hex()[:16]}, who holds no stake")
        b = self.bounds
        size = buffered_size(env)
        if self.early_bytes + size > b.bytes:
            self.dropped += 1
            return
        box = self.early.get(sid)
        if box is None:
            if len(self.early) >= b.shards:
                _, lost = self.early.popitem(last=False)
                self.early_bytes -= sum(buffered_size(e) for _, e, _ in lost)
                self.dropped += 1
            box = self.early[sid] = []
        if len(box) >= b.per_shard:
            self.dropped += 1
            return
        box.append((peer, env, now))
        self.early_bytes += size

    def close(self, sid: bytes) -> ShardSession | None:
        """Forget a shard: its session and what waited for it; later messages for it are stragglers."""
        session = self.sessions.pop(sid, None)
        for _, e, _ in self.early.pop(sid, []):
            self.early_bytes -= buffered_size(e)
        self.closed[sid] = None
        while len(self.closed) > self.bounds.closed_keep:
            self.closed.popitem(last=False)
        return session

    def prune(self, now: int) -> list[bytes]:
        """Close the sessions that lingered long enough and drop early messages that waited too long."""
        b = self.bounds
        gone = [sid for sid, s in self.sessions.items()
                if s.ctx.input.deadline_ms + b.linger_ms < now
                or (s.finished_at is not None and now - s.finished_at > b.linger_ms)]
        for sid in gone:
            self.close(sid)
        for sid, box in list(self.early.items()):
            keep = [e for e in box if now - e[2] < b.ttl_ms]
            self.early_bytes -= sum(buffered_size(e[1]) for e in box if e not in keep)
            box[:] = keep
            if not box:
                del self.early[sid]
        return gone

    def counts(self) -> dict[str, int]:
        return {"active": sum(1 for s in self.sessions.values() if not s.finished),
                "buffered_shards": len(self.early)}
