"""One shard round, as two sans-IO state machines: the member's and the submitter's.

Theory of operation
-------------------
A round embeds one batch. The submitter's certified payment and the batch reach each of the n shard members in an
`Input`. From then on every member runs one `MemberRound` and the submitter runs one `SubmitterRound`. Neither ever
touches a socket, a clock or a random source: every entry point takes `now` (integer ms) and returns a list of
effects, and `deadline` says when to call `on_timer` next. The driver (the trio node, the simulator, a test) only
delivers what comes in and carries out what comes out.

A member moves through these phases (the table `TRANSITIONS` below is the whole state graph):

    WORKING     the driver embeds, routes and scores (effect `Work`); commits of faster members are already kept
    COMMITTING  own `Commit` sent to every member; vote once all n committed, or q committed plus the adaptive grace
                `max(grace_min, t_q - t_first)` (capped; never before the submitter's `commit_by_ms`), or at the commit
                deadline (the later of the genesis window and `commit_by_ms`)
    VOTING      `CommitVotes` sent; a member's digest is accepted with >= q votes for it, rejected once q is out of
                reach (missing votes count as rejects at the vote deadline)
    REVEALING   accepted members send `Reveal`; a reveal must match its accepted digest (else: evidence, faulty)
    EVALUATING  lazy: the lowest claimed loss first, through the driver's verifier (effect `Verify`); the first to
                pass wins, a failure marks that member faulty and the next candidate is tried
    REPORTING   own `Report` sent to the submitter and every member; q identical reports form the certificate
    DONE        the outcome is handed up (certified, reported, failed, or opted out)

Messages that arrive early are kept, not refused: a fast member's commit, votes or reveal may arrive while we are
still working. Messages from outside the shard, for another shard, or contradicting an earlier message are
refused with a `ProtocolError`; messages after our outcome are dropped quietly. Contradictions by one signer (two
commits, a commit after an opt-out, two proxy submissions) also yield `Evidence`, which proves itself with the two
signed envelopes.

Rules for this file: everything that changes a round's state lives here; the file does not know how messages
travel or how embeddings are computed.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from operator import itemgetter
from collections.abc import Sequence
from typing import Any, Callable, Literal

from moenode.core.codec import canonical
from moenode.core.crypto import H, Signer, Verifier
from moenode.core.errors import LocalRoundError, NotInShard, ProtocolError, SchemaError, StateError
from moenode.core.genesis import Params
from moenode.core.messages import (
    Certificate,
    Commit,
    CommitVotes,
    Evidence,
    Input,
    Message,
    OptOut,
    Report,
    Reveal,
    Signed,
    Submission,
    open_wire,
    seal,
)
from moenode.core.selection import quorum, sample_shard, shard_seed, shard_size
from moenode.core.spaces import Space, SpaceBook, off_space

MiB = 1 << 20



def batch_problem(items: Sequence[str], params: Params) -> str:
    """Why a batch breaks the network's limits (genesis `max_batch_items`, `max_item_bytes` in UTF-8 bytes), or "".

    The one check of those limits: members opt out of such a batch, and the control API and `moenode submit`
    refuse it before anything is paid."""
    if not 1 <= len(items) <= params.max_batch_items:
        return f"a batch holds 1 to {params.max_batch_items} items, got {len(items)}"
    for i, s in enumerate(items):
        size = len(s.encode("utf-8"))
        if size > params.max_item_bytes:
            return f"item {i} is {size:,} bytes; an item holds at most {params.max_item_bytes:,} bytes of UTF-8"
    return ""

class Phase(Enum):
    WORKING = "working"
    COMMITTING = "committing"
    VOTING = "voting"
    REVEALING = "revealing"
    EVALUATING = "evaluating"
    REPORTING = "reporting"
    DONE = "done"


# event -> {phase it may happen in: phase it leads to}; a miss is a local bug (LocalRoundError)
TRANSITIONS: dict[str, dict[Phase, Phase]] = {
    "work_done": {Phase.WORKING: Phase.COMMITTING},
    "vote": {Phase.WORKING: Phase.VOTING, Phase.COMMITTING: Phase.VOTING},
    "decided": {Phase.VOTING: Phase.REVEALING},
    "revealed": {Phase.REVEALING: Phase.EVALUATING},
    "verified": {Phase.EVALUATING: Phase.REPORTING},
    "finish": {p: Phase.DONE for p in Phase if p is not Phase.DONE},
}

# which remote message types a member keeps, in which phases (others are refused as StateError)
ACCEPTS: dict[type[Message], frozenset[Phase]] = {
    Commit: frozenset({Phase.WORKING, Phase.COMMITTING, Phase.VOTING, Phase.REVEALING, Phase.EVALUATING}),
    OptOut: frozenset(set(Phase) - {Phase.DONE}),
    CommitVotes: frozenset(set(Phase) - {Phase.DONE}),
    Reveal: frozenset({Phase.WORKING, Phase.COMMITTING, Phase.VOTING, Phase.REVEALING, Phase.EVALUATING}),
    Report: frozenset(set(Phase) - {Phase.DONE}),
}


# effects -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """Deliver a signed envelope to one peer (a shard member or the submitter) over a direct stream."""

    to: bytes
    env: Signed[Message]


@dataclass(frozen=True)
class Work:
    """Embed, route and score the batch; answer with `MemberRound.on_work_done(submission, now)`."""

    shard_id: bytes
    items: tuple[str, ...]
    shard_seed: bytes


@dataclass(frozen=True)
class Verify:
    """Lazily verify one revealed candidate; answer with `MemberRound.on_verified(member, ok, now)`.

    `sample_seed` picks what is re-executed. It hashes the accepted commit set, so it exists only after every
    candidate is fixed and a producer cannot steer the sample by grinding its payload.
    """

    shard_id: bytes
    member: bytes
    submission: Submission
    sample_seed: bytes


@dataclass(frozen=True)
class EvidenceFound:
    """Self-proving misbehaviour to gossip and to hand to the ledger's checkpoint."""

    evidence: Evidence


Status = Literal["certified", "reported", "failed", "opted_out"]
Role = Literal["member", "submitter"]


@dataclass(frozen=True)
class Outcome:
    """The end of a round, once: how it ended, and whose round it was."""

    shard_id: bytes
    status: Status
    reason: str = ""
    certificate: Certificate | None = None
    report: Report | None = None
    winner_reveal: Signed[Message] | None = None
    accepted: tuple[bytes, ...] = ()
    strikes: tuple[bytes, ...] = ()
    faulty: tuple[bytes, ...] = ()
    role: Role = "member"


Effect = Send | Work | Verify | EvidenceFound | Outcome


# the shard a round runs in -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardContext:
    """Everything public about one shard: derived, never negotiated."""

    net: bytes
    params: Params
    input: Input
    shard_seed: bytes
    members: tuple[bytes, ...]
    q: int
    space: Space = Space()

    @classmethod
    def derive(cls, net: bytes, params: Params, inp: Input, power: dict[bytes, int], epoch_seed: bytes,
               book: SpaceBook | None = None) -> "ShardContext":
        """Recompute the shard from the epoch's voting power and seed (SPEC section 3), drawn from the stake that
        serves the Input's space (`book`: the genesis's spaces; without one every stake serves one open space)."""
        space = book.space(inp.space) if book is not None else Space(id=inp.space)
        if book is not None:
            power = book.power_in(power, inp.space)
        staked = sum(1 for vp in power.values() if vp > 0)
        if staked == 0:
            raise LocalRoundError(f"no staked members serve space {inp.space} in this epoch")
        n, _ = shard_size(staked)
        seed = shard_seed(epoch_seed, inp.data_hash, inp.nonce, inp.pay_id)
        members = tuple(sample_shard(power, seed, n))
        return cls(net=net, params=params, input=inp, shard_seed=seed, members=members, q=quorum(len(members)),
                   space=space)

    @cached_property
    def shard_id(self) -> bytes:
        return self.input.shard_id

    @cached_property
    def n(self) -> int:
        return len(self.members)

    @cached_property
    def member_set(self) -> frozenset[bytes]:
        """`members` for membership tests, which every incoming message needs."""
        return frozenset(self.members)

    @cached_property
    def _commit_window(self) -> int:
        size = sum(len(s.encode("utf-8")) for s in self.input.items)
        return self.params.commit_timeout_ms + self.params.commit_ms_per_mib * -(-size // MiB)

    def commit_deadline(self, start: int) -> int:
        """The latest a commit counts: the genesis window from `start` (the Input's arrival), or the submitter's
        `commit_by_ms` when that is later."""
        return max(start + self._commit_window, self.input.commit_by_ms)


# the member ------------------------------------------------------------------------------------------------------------
@dataclass
class _Seen:
    """What one other member has told us in this round."""

    commit: Signed[Commit] | None = None
    optout: Signed[OptOut] | None = None
    votes: Signed[CommitVotes] | None = None
    reveal: Signed[Reveal] | None = None
    report: Signed[Report] | None = None


@dataclass
class MemberRound:
    """One member's view of one shard round. Build it with `MemberRound.open`."""

    ctx: ShardContext
    signer: Signer
    verify: Verifier
    started: int
    phase: Phase = Phase.WORKING
    seen: dict[bytes, _Seen] = field(default_factory=dict)
    commit_times: list[int] = field(default_factory=list)
    own_submission: Submission | None = None
    vote_at: int | None = None
    vote_deadline: int | None = None
    reveal_deadline: int | None = None
    report_deadline: int | None = None
    accepted: dict[bytes, bytes] = field(default_factory=dict)  # member -> accepted digest
    voters: set[bytes] = field(default_factory=set)
    tally: Counter[tuple[bytes, bytes]] = field(default_factory=Counter)  # (member, digest) -> votes
    digests: dict[bytes, list[bytes]] = field(default_factory=dict)  # member -> the digests voted for it
    commits: dict[bytes, bytes] = field(default_factory=dict)  # member -> committed digest, in arrival order
    optouts: set[bytes] = field(default_factory=set)
    faulty: set[bytes] = field(default_factory=set)
    verified_bad: set[bytes] = field(default_factory=set)
    reveal_wait: list[bytes] = field(default_factory=list)  # accepted members, in order, for the reveal scan
    reveal_cursor: int = 0  # reveal_wait[:reveal_cursor] have revealed or are faulty
    candidate: bytes | None = None
    report: Report | None = None
    reports_unread: list[Signed[Message]] = field(default_factory=list)  # reports not yet compared with ours
    agreeing: list[tuple[bytes, bytes]] = field(default_factory=list)  # (signer, sig) of reports identical to ours
    evidence: list[Evidence] = field(default_factory=list)
    outcome: Outcome | None = None
    out_of_space: dict[bytes, str] = field(default_factory=dict)  # candidates that cannot win here, and why

    # construction -------------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        ctx: ShardContext,
        input_env: Signed[Message],
        signer: Signer,
        verify: Verifier,
        now: int,
        payment_problem: str = "",
    ) -> tuple["MemberRound", list[Effect]]:
        """Accept an Input: raises ProtocolError if it is not ours to answer; opts out if it is ours but bad.

        `payment_problem` is what the caller's check of the Input's payment certificate against its ledger found
        ("" when the payment holds); the round opts out with it after its own checks of the Input."""
        inp = input_env.msg
        if not isinstance(inp, Input) or inp != ctx.input:
            raise LocalRoundError("the context was derived from another input")
        if input_env.signer != inp.submitter:
            raise SchemaError("Input: not signed by its submitter")
        if signer.public_key not in ctx.member_set:
            raise NotInShard(f"{signer.public_key.hex()[:16]} is not in shard {inp.shard_id.hex()[:16]}")
        rnd = cls(ctx=ctx, signer=signer, verify=verify, started=now)
        reason = rnd._input_problem(payment_problem, now)
        if reason:
            return rnd, rnd._opt_out(reason, now)
        return rnd, [Work(inp.shard_id, inp.items, ctx.shard_seed)]

    def _input_problem(self, payment_problem: str, now: int) -> str:
        inp, p = self.ctx.input, self.ctx.params
        problem = batch_problem(inp.items, p)
        if problem:
            return problem
        if inp.fee < p.min_fee:
            return f"fee {inp.fee} below the minimum {p.min_fee}"
        if now >= inp.deadline_ms:
            return "the round's deadline has passed"
        if payment_problem:
            return f"payment: {payment_problem}"
        return ""

    def _opt_out(self, reason: str, now: int) -> list[Effect]:
        env = seal(OptOut(self.ctx.shard_id, reason[:200]), self.signer, self.ctx.net)
        self._seen(self.me).optout = env
        self.optouts.add(self.me)
        out: list[Effect] = self._broadcast(env)
        out.append(self._finish("opted_out", reason))
        return out

    # helpers -------------------------------------------------------------------------------------------------------
    @property
    def me(self) -> bytes:
        return self.signer.public_key

    @property
    def shard_id(self) -> bytes:
        return self.ctx.shard_id

    def _seen(self, member: bytes) -> _Seen:
        try:
            return self.seen[member]
        except KeyError:
            s = self.seen[member] = _Seen()
            return s

    def _to(self, event: str) -> None:
        moves = TRANSITIONS[event]
        if self.phase not in moves:
            raise LocalRoundError(f"event {event!r} is illegal in phase {self.phase.value}")
        self.phase = moves[self.phase]

    def _broadcast(self, env: Signed[Message]) -> list[Effect]:
        me = self.signer.public_key
        return [Send(m, env) for m in self.ctx.members if m != me]

    def _committed(self) -> dict[bytes, bytes]:
        if not self.faulty:
            return self.commits
        return {m: d for m, d in self.commits.items() if m not in self.faulty}

    @property
    def deadline(self) -> int | None:
        """When the driver must call `on_timer` next (None when nothing is pending)."""
        phase = self.phase
        if phase is Phase.DONE:
            return None
        due = self.ctx.input.deadline_ms
        if phase is Phase.WORKING or phase is Phase.COMMITTING:
            due = min(due, self.vote_due())
        for t in (self.vote_deadline, self.reveal_deadline, self.report_deadline):
            if t is not None and t < due:
                due = t
        return due

    def _finish(self, status: Status, reason: str = "", certificate: Certificate | None = None) -> Outcome:
        self._to("finish")
        strikes, faulty = self._strikes_and_faulty() if self.accepted else ((), tuple(sorted(self.faulty)))
        winner_reveal = None
        if self.report is not None:
            winner_reveal = self._seen(self.report.winner).reveal
        self.outcome = Outcome(self.shard_id, status, reason, certificate, self.report, winner_reveal,
                               tuple(sorted(self.accepted)), strikes, faulty)
        return self.outcome

    # local events -------------------------------------------------------------------------------------------------
    def on_work_done(self, submission: Submission, now: int) -> list[Effect]:
        """Our candidate is ready (own work or a producer's via proxy): commit to it."""
        if self.phase is not Phase.WORKING:
            return []  # we already voted without it: a straggler's work is dropped, not an error
        if submission.member != self.me or submission.shard_id != self.shard_id:
            raise LocalRoundError("the submission is not ours for this shard")
        self._to("work_done")
        self.own_submission = submission
        env = seal(Commit(self.shard_id, submission.digest()), self.signer, self.ctx.net)
        self._record_commit(self.me, env, now)
        reveal = seal(Reveal(self.shard_id, submission), self.signer, self.ctx.net)
        self._seen(self.me).reveal = reveal
        return self._broadcast(env) + self._maybe_vote(now)

    def on_verified(self, member: bytes, ok: bool, now: int, reason: str = "") -> list[Effect]:
        if self.phase is not Phase.EVALUATING or member != self.candidate:
            raise LocalRoundError(f"no verification of {member.hex()[:16]} is pending")
        self.candidate = None
        if not ok:
            self.verified_bad.add(member)
            self.faulty.add(member)
            return self._evaluate(now)
        self._to("verified")
        return self._report(member, now)

    def on_timer(self, now: int) -> list[Effect]:
        if self.phase is Phase.DONE:
            return []
        if now >= self.ctx.input.deadline_ms:
            return [self._finish("failed", "round aborted at its deadline")]
        if self.phase in (Phase.WORKING, Phase.COMMITTING):
            return self._maybe_vote(now)
        if self.phase is Phase.VOTING and self.vote_deadline is not None and now >= self.vote_deadline:
            return self._decide(now, final=True)
        if self.phase is Phase.REVEALING and self.reveal_deadline is not None and now >= self.reveal_deadline:
            return self._close_reveals(now)
        if self.phase is Phase.REPORTING and self.report_deadline is not None and now >= self.report_deadline:
            return [self._finish("reported", "no quorum of identical reports seen before the report deadline")]
        return []

    # remote messages ----------------------------------------------------------------------------------------------
    def handle(self, env: Signed[Message], now: int) -> list[Effect]:
        """A checked envelope (already through `open_signed`) from a peer."""
        msg, signer, ctx = env.msg, env.signer, self.ctx
        kind = type(msg)
        phases = _ACCEPTS_SEQ.get(kind)
        if phases is None:
            raise StateError(f"{msg.TYPE} is not a shard-member message")
        if getattr(msg, "shard_id", None) != ctx.shard_id:
            raise StateError(f"{msg.TYPE} is for another shard")
        if signer not in ctx.member_set:
            raise NotInShard(f"{msg.TYPE} from {signer.hex()[:16]}, who is not in this shard")
        if signer == self.signer.public_key:
            raise StateError(f"{msg.TYPE} claims to be from ourselves")
        if self.phase is Phase.DONE:
            return []  # stragglers' votes and reports after the outcome are normal, not misbehaviour
        if self.phase not in phases:
            raise StateError(f"{msg.TYPE} arrived in phase {self.phase.value}")
        return _HANDLERS[kind](self, env, now)

    def _evidence(self, kind: str, offender: bytes, first: Signed[Message], second: Signed[Message]) -> list[Effect]:
        ev = Evidence(kind, offender, self.shard_id, first.as_wire(), second.as_wire())
        self.evidence.append(ev)
        self.faulty.add(offender)
        return [EvidenceFound(ev)]

    def _record_commit(self, member: bytes, env: Signed[Commit], now: int) -> None:
        self._seen(member).commit = env
        self.commits[member] = env.msg.digest
        self.commit_times.append(now)

    def _on_commit(self, env: Signed[Commit], now: int) -> list[Effect]:
        s = self._seen(env.signer)
        if s.commit is not None:
            if s.commit.msg == env.msg:
                return []  # a duplicate delivery
            return self._evidence("equivocation", env.signer, s.commit, env)
        if s.optout is not None:
            return self._evidence("commit_after_optout", env.signer, s.optout, env)
        if self.phase not in (Phase.WORKING, Phase.COMMITTING):
            raise StateError("Commit arrived after we voted")
        self._record_commit(env.signer, env, now)
        return self._maybe_vote(now)

    def _on_optout(self, env: Signed[OptOut], now: int) -> list[Effect]:
        s = self._seen(env.signer)
        if s.optout is not None:
            return []
        if s.commit is not None:
            return self._evidence("commit_after_optout", env.signer, env, s.commit)
        s.optout = env
        self.optouts.add(env.signer)
        if self.ctx.n - len(self.optouts) < self.ctx.q:
            return [self._finish("failed", "too many members opted out")]
        if self.phase in (Phase.WORKING, Phase.COMMITTING):
            return self._maybe_vote(now)
        if self.phase is Phase.VOTING:
            return self._decide(now, final=False)
        return []

    def _on_votes(self, env: Signed[CommitVotes], now: int) -> list[Effect]:
        s = self._seen(env.signer)
        if s.votes is not None:
            if s.votes.msg == env.msg:
                return []
            raise StateError("a second, different CommitVotes from one member")
        if not self.ctx.member_set.issuperset(map(_first, env.msg.votes)):
            raise NotInShard("CommitVotes lists a non-member")
        s.votes = env
        self._tally_votes(env.signer, env.msg)
        if self.phase is Phase.VOTING:
            return self._decide(now, final=False)
        return []

    def _on_reveal(self, env: Signed[Reveal], now: int) -> list[Effect]:
        s = self._seen(env.signer)
        if s.reveal is not None:
            if s.reveal.msg == env.msg:
                return []
            return self._evidence("reveal_mismatch", env.signer, s.reveal, env)
        sub = env.msg.submission
        if sub.member != env.signer:
            raise SchemaError("Reveal: submission names another member")
        s.reveal = env
        if self.phase is Phase.REVEALING:
            return self._check_reveal(env.signer) + self._maybe_close_reveals(now)
        return []

    def _on_report(self, env: Signed[Report], now: int) -> list[Effect]:
        s = self._seen(env.signer)
        if s.report is not None:
            return []
        s.report = env
        self.reports_unread.append(env)
        if self.phase is Phase.REPORTING:
            return self._maybe_certify(now)
        return []

    # commit and vote ----------------------------------------------------------------------------------------------
    def _maybe_vote(self, now: int) -> list[Effect]:
        committed = self._committed()
        live = self.ctx.n - len(self.optouts)
        if len(committed) >= live:
            return self._vote(now)  # everyone who can commit has
        if len(committed) >= self.ctx.q and self.vote_at is None:
            times = sorted(self.commit_times)
            t_first, t_q = times[0], times[self.ctx.q - 1]
            p = self.ctx.params
            # the submitter's commit deadline holds the grace open: it asked to wait for the slowest member
            self.vote_at = max(t_q + min(max(p.grace_min_ms, t_q - t_first), p.grace_cap_ms),
                               self.ctx.input.commit_by_ms)
        return self._vote(now) if now >= self.vote_due() else []

    def vote_due(self) -> int:
        """When this member votes at the latest: the commit deadline, or earlier once a quorum has committed
        (`vote_at`). A commit that arrives after it is not accepted (a strike)."""
        due = self.ctx.commit_deadline(self.started)
        return due if self.vote_at is None or self.vote_at > due else self.vote_at

    def _vote(self, now: int) -> list[Effect]:
        self._to("vote")
        votes = tuple(sorted(self._committed().items()))
        env = seal(CommitVotes(self.shard_id, votes), self.signer, self.ctx.net)
        self._seen(self.me).votes = env
        self._tally_votes(self.me, env.msg)
        self.vote_deadline = now + self.ctx.params.vote_timeout_ms
        return self._broadcast(env) + self._decide(now, final=False)

    def _tally_votes(self, voter: bytes, votes: CommitVotes) -> None:
        """Count a voter's ballot once, when it arrives: deciding is then linear in n."""
        self.voters.add(voter)
        tally = self.tally
        known = len(tally)
        tally.update(votes.votes)  # counted in C: a ballot names each member once
        if len(tally) != known:  # a (member, digest) pair seen for the first time (count 1): index it
            for member, digest in votes.votes:
                if tally[member, digest] == 1:
                    self.digests.setdefault(member, []).append(digest)

    def _lead(self, member: bytes) -> tuple[int, bytes]:
        """The member's leading (votes, digest); (0, b"") before any vote for it."""
        ds = self.digests.get(member)
        if ds is None:
            return _NO_VOTES
        if len(ds) == 1:
            return self.tally[member, ds[0]], ds[0]
        return max((self.tally[member, d], d) for d in ds)

    def _decide(self, now: int, final: bool) -> list[Effect]:
        """Per member: accepted with >= q votes for one digest; rejected once that is out of reach."""
        outstanding = 0 if final else self.ctx.n - len(self.voters | self.optouts)
        q = self.ctx.q
        accepted: dict[bytes, bytes] = {}
        for m in self.ctx.members:
            count, digest = self._lead(m)
            if count >= q:
                accepted[m] = digest
            elif count + outstanding >= q:
                return []  # undecided: wait for more ballots
        self.accepted = accepted
        self.reveal_wait = list(accepted)
        self._to("decided")
        self.vote_deadline = None
        if len(accepted) < q:
            return [self._finish("failed", f"only {len(accepted)} commits accepted, quorum is {q}")]
        self.reveal_deadline = now + self.ctx.params.reveal_timeout_ms
        out: list[Effect] = []
        own = self._seen(self.me).reveal
        if self.me in accepted and own is not None:
            out += self._broadcast(own)
        for m in accepted:
            out += self._check_reveal(m)
        return out + self._maybe_close_reveals(now)

    # reveal and evaluate ------------------------------------------------------------------------------------------
    def _check_reveal(self, member: bytes) -> list[Effect]:
        s = self._seen(member)
        if member not in self.accepted or s.reveal is None or member in self.faulty:
            return []
        sub = s.reveal.msg.submission
        if sub.digest() != self.accepted[member]:
            assert s.commit is not None or member == self.me
            return self._evidence("reveal_mismatch", member, s.commit or s.reveal, s.reveal)
        try:
            sub.check_proxy(self.ctx.net, self.verify)
        except ProtocolError:
            self.faulty.add(member)
            return []
        return self._check_double_proxy(member, sub)

    def _check_double_proxy(self, member: bytes, sub: Submission) -> list[Effect]:
        if sub.proxy is None:
            return []
        for other, s in self.seen.items():
            if other == member or s.reveal is None or other not in self.accepted:
                continue
            o = s.reveal.msg.submission
            if o.proxy is not None and o.producer == sub.producer and o.proxy != sub.proxy:
                first = open_wire(o.proxy, self.ctx.net, self.verify)
                second = open_wire(sub.proxy, self.ctx.net, self.verify)
                out = self._evidence("double_proxy", sub.producer, first, second)
                self.faulty.update({member, other})
                return out
        return []

    def _valid_reveals(self) -> dict[bytes, Submission]:
        out = {}
        for m in self.accepted:
            s = self._seen(m)
            if s.reveal is not None and m not in self.faulty:
                out[m] = s.reveal.msg.submission
        return out

    def _maybe_close_reveals(self, now: int) -> list[Effect]:
        # a member stops pending once it revealed or is faulty, and neither is ever undone: resume the scan there
        wait, i, faulty, seen = self.reveal_wait, self.reveal_cursor, self.faulty, self.seen
        while i < len(wait) and (wait[i] in faulty or (wait[i] in seen and seen[wait[i]].reveal is not None)):
            i += 1
        self.reveal_cursor = i
        return [] if i < len(wait) else self._close_reveals(now)

    def _close_reveals(self, now: int) -> list[Effect]:
        self._to("revealed")
        self.reveal_deadline = None
        return self._evaluate(now)

    def _evaluate(self, now: int) -> list[Effect]:
        reveals = self._valid_reveals()
        candidates = sorted((sub.payload.batch_loss, m) for m, sub in reveals.items()
                            if m not in self.verified_bad and m not in self.out_of_space)
        for _, member in candidates:
            if self._in_space(member, reveals):
                self.candidate = member
                return [Verify(self.shard_id, member, reveals[member], self.sample_seed())]
        if self.out_of_space:
            return [self._finish("failed", f"no candidate in space {self.ctx.space.id} passed verification")]
        return [self._finish("failed", "no candidate passed verification")]

    def _in_space(self, member: bytes, reveals: dict[bytes, Submission]) -> bool:
        """The in-round space check (spaces.off_space) against the other candidates not shown to be bad."""
        shown = {m: (s.payload.dim, s.payload.embeddings) for m, s in reveals.items() if m not in self.verified_bad}
        why = off_space(self.ctx.space, member, shown)
        if why:
            self.out_of_space[member] = why
        return not why

    def sample_seed(self) -> bytes:
        """H("verify-sample", shard_seed || canonical(sorted [member, digest] pairs of the accepted set))."""
        return H("verify-sample", self.ctx.shard_seed + canonical(sorted(self.accepted.items())))

    # report and certify -------------------------------------------------------------------------------------------
    def _strikes_and_faulty(self) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """Strikes: members neither accepted nor opted out, and accepted members that never revealed."""
        revealed = {m for m in self.accepted if self._seen(m).reveal is not None}
        late = (set(self.ctx.members) - set(self.accepted) - self.optouts) | (set(self.accepted) - revealed)
        return tuple(sorted(late - self.faulty)), tuple(sorted(self.faulty))

    def _report(self, winner: bytes, now: int) -> list[Effect]:
        sub = self._valid_reveals()[winner]
        share = sub.check_proxy(self.ctx.net, self.verify)
        strikes, faulty = self._strikes_and_faulty()
        inp = self.ctx.input
        self.report = Report(
            shard_id=self.shard_id, epoch=inp.epoch, submitter=inp.submitter, data_hash=inp.data_hash,
            nonce=inp.nonce, pay_id=inp.pay_id, fee=inp.fee, winner=winner, producer=sub.producer,
            producer_share_bps=share, model_id=sub.payload.model_id, winner_digest=sub.digest(),
            loss_micro=sub.payload.batch_loss, item_losses=sub.payload.item_losses, routing=sub.payload.routing,
            strikes=strikes, faulty=faulty, space=inp.space,
        )
        env = seal(self.report, self.signer, self.ctx.net)
        self._seen(self.me).report = env
        self.reports_unread.append(env)
        self.report_deadline = now + self.ctx.params.report_timeout_ms
        out: list[Effect] = self._broadcast(env) + [Send(inp.submitter, env)]
        if self.me in self._reveal_couriers(winner):
            reveal = self._seen(winner).reveal
            assert reveal is not None
            out.append(Send(inp.submitter, reveal))
        return out + self._maybe_certify(now)

    def _reveal_couriers(self, winner: bytes) -> set[bytes]:
        """The winner and one backup (the lowest other accepted member) carry the winning reveal to the submitter."""
        backup = next((m for m in sorted(self.accepted) if m != winner and m not in self.faulty), None)
        return {winner} | ({backup} if backup else set())

    def _maybe_certify(self, now: int) -> list[Effect]:
        """`assemble_certificate` over every report seen, with each report compared with ours only once."""
        report = self.report
        assert report is not None
        for env in self.reports_unread:
            if env.msg == report:
                self.agreeing.append((env.signer, env.sig))
        self.reports_unread.clear()
        if len(self.agreeing) < self.ctx.q:
            return []
        cert = Certificate(report=report, signatures=tuple(sorted(self.agreeing)))
        return [self._finish("certified", certificate=cert)]


# each handler takes the envelope of its message type (`handle` picks it by that type)
_HANDLERS: dict[type[Message], Callable[[MemberRound, Any, int], list[Effect]]] = {
    Commit: MemberRound._on_commit, OptOut: MemberRound._on_optout, CommitVotes: MemberRound._on_votes,
    Reveal: MemberRound._on_reveal, Report: MemberRound._on_report,
}
_NO_VOTES = (0, b"")
_first = itemgetter(0)
# ACCEPTS with tuples: a membership test by identity, without hashing an Enum member in Python on every message
_ACCEPTS_SEQ: dict[type[Message], tuple[Phase, ...]] = {t: tuple(ps) for t, ps in ACCEPTS.items()}


def assemble_certificate(report: Report, reports: Sequence[Signed[Message]], q: int) -> Certificate | None:
    """A certificate from every signed report identical to `report`, once there are at least q of them."""
    sigs = sorted((env.signer, env.sig) for env in reports if env.msg == report)
    if len(sigs) < q:
        return None
    return Certificate(report=report, signatures=tuple(sigs))


# the submitter ---------------------------------------------------------------------------------------------------------
@dataclass
class SubmitterRound:
    """The submitter's side: send the Input, gather q identical reports and the winning reveal."""

    ctx: ShardContext
    input_env: Signed[Message]
    reports: dict[bytes, Signed[Message]] = field(default_factory=dict)
    groups: dict[bytes, list[Signed[Message]]] = field(default_factory=dict)  # report digest -> its signed copies
    optouts: set[bytes] = field(default_factory=set)
    reveals: dict[bytes, Signed[Message]] = field(default_factory=dict)  # submission digest -> the member's Reveal
    certificate: Certificate | None = None
    winner_reveal: Signed[Message] | None = None
    outcome: Outcome | None = None

    def start(self, now: int) -> list[Effect]:
        return [Send(m, self.input_env) for m in self.ctx.members]

    @property
    def deadline(self) -> int | None:
        return None if self.outcome else self.ctx.input.deadline_ms

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def handle(self, env: Signed[Message], now: int) -> list[Effect]:
        if self.outcome is not None:
            return []  # late reports and reveals after the outcome are normal
        msg = env.msg
        if getattr(msg, "shard_id", None) != self.ctx.shard_id:
            raise StateError(f"{msg.TYPE} is for another shard")
        if env.signer not in self.ctx.member_set:
            raise NotInShard(f"{msg.TYPE} from a non-member")
        if isinstance(msg, Report):
            return self._on_report(env, msg)
        if isinstance(msg, Reveal):
            return self._on_reveal(env, msg)
        if isinstance(msg, OptOut):
            self.optouts.add(env.signer)
            if self.ctx.n - len(self.optouts) < self.ctx.q:
                return self._finish("failed", "too many members opted out")
            return []
        raise StateError(f"{msg.TYPE} is not for the submitter")

    def _on_report(self, env: Signed[Message], report: Report) -> list[Effect]:
        inp = self.ctx.input
        binding = (report.epoch, report.submitter, report.data_hash, report.nonce, report.pay_id, report.fee,
                   report.space)
        if binding != (inp.epoch, inp.submitter, inp.data_hash, inp.nonce, inp.pay_id, inp.fee, inp.space):
            raise SchemaError("Report does not match our Input")
        if env.signer in self.reports:
            return self._maybe_done()  # one report per member counts
        self.reports[env.signer] = env
        if self.certificate is None:  # identical reports are grouped by their digest as they arrive
            group = self.groups.setdefault(report.digest(), [])
            group.append(env)
            if len(group) >= self.ctx.q:
                self.certificate = assemble_certificate(report, group, self.ctx.q)
        return self._maybe_done()

    def _on_reveal(self, env: Signed[Message], reveal: Reveal) -> list[Effect]:
        if env.signer != reveal.submission.member:
            return []  # couriers forward the winner's own envelope, never one they signed themselves
        self.reveals.setdefault(reveal.submission.digest(), env)
        return self._maybe_done()

    def _maybe_done(self) -> list[Effect]:
        if self.certificate is None:
            return []
        reveal = self.reveals.get(self.certificate.report.winner_digest)
        if reveal is None:
            return []
        self.winner_reveal = reveal
        return self._finish("certified")

    def on_timer(self, now: int) -> list[Effect]:
        if self.outcome is not None or now < self.ctx.input.deadline_ms:
            return []
        if self.certificate is not None:
            return self._finish("certified", "the winning reveal never arrived")
        return self._finish("failed", "no certificate before the deadline")

    def _finish(self, status: Status, reason: str = "") -> list[Effect]:
        self.outcome = Outcome(self.ctx.shard_id, status, reason, self.certificate,
                               self.certificate.report if self.certificate else None, self.winner_reveal,
                               role="submitter")
        return [self.outcome]
