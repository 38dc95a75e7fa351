"""An in-process driver for shard rounds: every member and the submitter in one process, on a virtual clock.

Theory of operation: a heap of timed events (deliveries, finished work, verdicts, timers) drives the real
`moenode.core.shard` sessions, one `ShardTable` per node as in the daemon, so the early buffer and the replay rules
are the daemon's too. Messages travel as encoded bytes and go through `open_signed`, exactly as they do over libp2p,
so a round here exercises the same validation as the daemon. Work (embedding and scoring) and
verification are callables the caller supplies: real encoders in the demo, synthetic payloads in unit tests.
Latency and loss are callables too, which is how tests drop, duplicate and reorder messages.
"""

import heapq
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moenode.core.crypto import H, Signer, Verifier, ed25519_verify
from moenode.core.errors import ProtocolError
from moenode.core.genesis import Genesis
from moenode.core.messages import Input, Signed, Submission, open_signed, seal, shard_id
from moenode.core.round import EvidenceFound, Outcome, Send, ShardContext, Verify, Work
from moenode.core.shard import Refused, SessionEffect, ShardTable
from moenode.core.selection import data_hash, voting_power
from moenode.core.spaces import DEFAULT_SPACE

WorkFn = Callable[[bytes, Work], tuple[Submission, int] | None]  # member -> (submission, ms it took) or None (silent)
VerifyFn = Callable[[bytes, Verify], bool]  # verifier member, request -> ok
LinkFn = Callable[[bytes, bytes, Signed], list[int]]  # (from, to, env) -> delivery delays in ms ([] = dropped)


def one_ms(_src: bytes, _dst: bytes, _env: Signed) -> list[int]:
    return [1]


@dataclass
class RoundResult:
    submitter: Outcome | None
    members: dict[bytes, Outcome]
    evidence: list[EvidenceFound]
    rejections: list[tuple[bytes, str]]  # (receiver, reason) for every refused delivery
    messages: int
    bytes_sent: int
    end_ms: int


@dataclass
class InProcessShard:
    genesis: Genesis
    signers: Mapping[bytes, Signer]
    work: WorkFn
    verify_candidate: VerifyFn
    link: LinkFn = one_ms
    verify: Verifier = ed25519_verify
    decode: bool = True  # run every delivery through open_signed (as the daemon does)
    epoch_seed: bytes = b""
    power: dict[bytes, int] = field(default_factory=dict)
    space: str = DEFAULT_SPACE  # the space the Inputs name

    def __post_init__(self) -> None:
        if not self.power:
            self.power = voting_power(self.genesis.initial_stakes())
        if not self.epoch_seed:
            self.epoch_seed = self.genesis.seed0()

    def make_input(self, submitter: Signer, items: list[str], nonce: bytes, now: int, fee: int = 100,
                   epoch: int = 0, wait_ms: int = 0) -> Signed[Input]:
        """The signed Input; `wait_ms` > 0 sets the submitter's commit deadline `now + wait_ms`."""
        dh = data_hash([s.encode("utf-8") for s in items])
        sid = shard_id(epoch, dh, nonce, submitter.public_key, self.space)
        inp = Input(shard_id=sid, epoch=epoch, submitter=submitter.public_key, pay_id=H("pay", sid), pay_cert=b"",
                    fee=fee, data_hash=dh, nonce=nonce, modality="text",
                    deadline_ms=now + wait_ms + self.genesis.params.round_abort_ms, items=tuple(items),
                    commit_by_ms=now + wait_ms if wait_ms else 0, space=self.space)
        return seal(inp, submitter, self.genesis.network_id)

    def run(self, submitter: Signer, items: list[str], nonce: bytes, now: int = 0, fee: int = 100,
            input_env: Signed[Input] | None = None, wait_ms: int = 0) -> RoundResult:
        """One round of `items` from `submitter`, or of its ready `input_env` (with a certified payment, say);
        `wait_ms` > 0 gives the members a commit deadline of `now + wait_ms` (the submitter's order deadline)."""
        input_env = input_env or self.make_input(submitter, items, nonce, now, fee, wait_ms=wait_ms)
        ctx = ShardContext.derive(self.genesis.network_id, self.genesis.params, input_env.msg, self.power,
                                  self.epoch_seed, self.genesis.space_book)
        me = submitter.public_key
        tables = {pk: ShardTable(s, self.verify) for pk, s in [*self.signers.items(), (me, submitter)]}
        heap: list[tuple[int, int, str, bytes, Any]] = []  # (at, seq, kind, who, what kind carries)
        seq = itertools.count()
        evidence: list[EvidenceFound] = []
        rejections: list[tuple[bytes, str]] = []
        outcomes: dict[bytes, Outcome] = {}
        stats = {"messages": 0, "bytes": 0}
        timers: dict[bytes, int | None] = {}

        def push(at: int, kind: str, who: bytes, payload: Any) -> None:
            heapq.heappush(heap, (at, next(seq), kind, who, payload))

        def effects(who: bytes, out: Sequence[SessionEffect], t: int) -> None:
            for e in out:
                if isinstance(e, Send):
                    data = e.env.encode()
                    for delay in self.link(who, e.to, e.env):
                        stats["messages"] += 1
                        stats["bytes"] += len(data)
                        push(t + delay, "deliver", e.to, (who, data, e.env))
                elif isinstance(e, Work):
                    done = self.work(who, e)
                    if done is not None:
                        sub, took = done
                        push(t + took, "work_done", who, sub)
                elif isinstance(e, Verify):
                    push(t, "verified", who, (e.member, self.verify_candidate(who, e)))
                elif isinstance(e, EvidenceFound):
                    evidence.append(e)
                elif isinstance(e, Outcome):
                    if e.role == "member":
                        outcomes[who] = e
                elif isinstance(e, Refused):
                    rejections.append((who, f"{e.error.reason}: {e.error}"))
            session = tables[who].sessions.get(ctx.shard_id)
            deadline = session.deadline if session is not None else None
            if deadline is not None and timers.get(who) != deadline:
                timers[who] = deadline
                push(deadline, "timer", who, deadline)

        session, out = tables[me].submit(ctx, input_env, now)
        effects(me, out, now)
        t = now
        while heap:
            t, _, kind, who, payload = heapq.heappop(heap)
            try:
                effects(who, self._event(kind, who, payload, t, tables[who], ctx, timers), t)
            except ProtocolError as e:
                rejections.append((who, f"{e.reason}: {e}"))
            if session.finished and len(outcomes) == ctx.n:
                break
        return RoundResult(session.submitter.outcome if session.submitter else None, outcomes, evidence, rejections,
                           stats["messages"], stats["bytes"], t)

    def _event(self, kind: str, who: bytes, payload: Any, t: int, table: ShardTable, ctx: ShardContext,
               timers: dict[bytes, int | None]) -> Sequence[SessionEffect]:
        """What one event of the heap does to `who`'s session."""
        if kind == "deliver":
            return self._deliver(table, ctx, payload, t)
        if kind == "work_done":
            return table.sessions[ctx.shard_id].work_done(payload, t)
        if kind == "verified":
            member, ok = payload
            return table.sessions[ctx.shard_id].verified(member, ok, t)
        if kind == "timer" and timers.get(who) == payload:
            timers[who] = None  # a timer superseded by a later deadline does nothing
            return table.sessions[ctx.shard_id].handle_timer(t)
        return []

    def _deliver(self, table: ShardTable, ctx: ShardContext, payload: tuple[bytes, bytes, Signed], t: int
                 ) -> Sequence[SessionEffect]:
        src, data, env = payload
        if self.decode:
            env = open_signed(data, self.genesis.network_id, self.verify)
        if isinstance(env.msg, Input):
            return table.open_member(ctx, env, t)[1]
        return table.receive(src, env, t)
