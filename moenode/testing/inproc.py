"""An in-process driver for shard rounds: every member and the submitter in one process, on a virtual clock.

Theory of operation: a heap of timed events (deliveries, finished work, verdicts, timers) drives the real
`moenode.core.round` state machines. Messages travel as encoded bytes and go through `open_signed`, exactly as they
do over libp2p, so a round here exercises the same validation as the daemon. Work (embedding and scoring) and
verification are callables the caller supplies: real encoders in the demo, synthetic payloads in unit tests.
Latency and loss are callables too, which is how tests drop, duplicate and reorder messages.
"""

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from moenode.core.crypto import H, Signer, Verifier, ed25519_verify
from moenode.core.errors import ProtocolError
from moenode.core.genesis import Genesis
from moenode.core.messages import Input, Signed, Submission, open_signed, seal, shard_id
from moenode.core.round import (
    EvidenceFound,
    MemberRound,
    Outcome,
    Send,
    ShardContext,
    SubmitterRound,
    Verify,
    Work,
)
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
    signers: dict[bytes, Signer]
    work: WorkFn
    verify_candidate: VerifyFn
    link: LinkFn = one_ms
    verify: Verifier = ed25519_verify
    decode: bool = True  # run every delivery through open_signed (as the daemon does)
    epoch_seed: bytes = b""
    power: dict[bytes, int] = field(default_factory=dict)
    space: str = DEFAULT_SPACE  # the space the Inputs name
    _early: dict[bytes, list[Signed]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.power:
            self.power = voting_power(self.genesis.initial_stakes())
        if not self.epoch_seed:
            self.epoch_seed = self.genesis.seed0()

    def make_input(self, submitter: Signer, items: list[str], nonce: bytes, now: int, fee: int = 100,
                   epoch: int = 0) -> Signed:
        dh = data_hash([s.encode("utf-8") for s in items])
        sid = shard_id(epoch, dh, nonce, submitter.public_key, self.space)
        inp = Input(shard_id=sid, epoch=epoch, submitter=submitter.public_key, pay_id=H("pay", sid), pay_cert=b"",
                    fee=fee, data_hash=dh, nonce=nonce, modality="text",
                    deadline_ms=now + self.genesis.params.round_abort_ms, items=tuple(items), space=self.space)
        return seal(inp, submitter, self.genesis.network_id)

    def run(self, submitter: Signer, items: list[str], nonce: bytes, now: int = 0, fee: int = 100) -> RoundResult:
        net = self.genesis.network_id
        self._early = {}
        input_env = self.make_input(submitter, items, nonce, now, fee)
        ctx = ShardContext.derive(net, self.genesis.params, input_env.msg, self.power,  # type: ignore[arg-type]
                                  self.epoch_seed, self.genesis.space_book)
        sub_round = SubmitterRound(ctx, input_env)
        rounds: dict[bytes, MemberRound] = {}
        heap: list[tuple[int, int, str, bytes, object]] = []
        seq = itertools.count()
        evidence: list[EvidenceFound] = []
        rejections: list[tuple[bytes, str]] = []
        outcomes: dict[bytes, Outcome] = {}
        stats = {"messages": 0, "bytes": 0}
        timers: dict[bytes, int | None] = {}

        def push(at: int, kind: str, who: bytes, payload: object) -> None:
            heapq.heappush(heap, (at, next(seq), kind, who, payload))

        def arm(who: bytes, deadline: int | None) -> None:
            if deadline is not None and timers.get(who) != deadline:
                timers[who] = deadline
                push(deadline, "timer", who, deadline)

        def effects(who: bytes, out: list, t: int) -> None:
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
                elif isinstance(e, Outcome) and who != submitter.public_key:
                    outcomes[who] = e
            rnd = rounds.get(who) if who != submitter.public_key else sub_round
            if rnd is not None:
                arm(who, rnd.deadline)

        effects(submitter.public_key, sub_round.start(now), now)
        t = now
        while heap:
            t, _, kind, who, payload = heapq.heappop(heap)
            try:
                if kind == "deliver":
                    self._deliver(who, payload, t, submitter, sub_round, rounds, ctx, effects)  # type: ignore
                elif kind == "work_done":
                    effects(who, rounds[who].on_work_done(payload, t), t)  # type: ignore[arg-type]
                elif kind == "verified":
                    member, ok = payload  # type: ignore[misc]
                    effects(who, rounds[who].on_verified(member, ok, t), t)
                elif kind == "timer":
                    if timers.get(who) != payload:
                        continue
                    timers[who] = None
                    rnd = sub_round if who == submitter.public_key else rounds[who]
                    effects(who, rnd.on_timer(t), t)
            except ProtocolError as e:
                rejections.append((who, f"{e.reason}: {e}"))
            if sub_round.done and all(r.outcome is not None for r in rounds.values()) and len(rounds) == ctx.n:
                break
        return RoundResult(sub_round.outcome, outcomes, evidence, rejections, stats["messages"], stats["bytes"], t)

    def _deliver(self, to: bytes, payload: tuple[bytes, bytes, Signed], t: int, submitter: Signer,
                 sub_round: SubmitterRound, rounds: dict[bytes, MemberRound], ctx: ShardContext,
                 effects: Callable[[bytes, list, int], None]) -> None:
        _src, data, env = payload
        if self.decode:
            env = open_signed(data, self.genesis.network_id, self.verify)
        if to == submitter.public_key:
            effects(to, sub_round.handle(env, t), t)
            return
        if isinstance(env.msg, Input):
            if to in rounds:
                return  # a duplicate Input
            rnd, out = MemberRound.open(ctx, env, self.signers[to], self.verify, t)
            rounds[to] = rnd
            effects(to, out, t)
            for early in self._early.pop(to, []):  # messages that outran the Input, as a node buffers them
                try:
                    effects(to, rnd.handle(early, t), t)
                except ProtocolError:
                    pass
            return
        rnd = rounds.get(to)
        if rnd is None:
            self._early.setdefault(to, []).append(env)
            return
        effects(to, rnd.handle(env, t), t)
