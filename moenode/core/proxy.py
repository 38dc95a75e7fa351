"""The expert's desk: accept proxy requests and sign what was produced for them (SPEC section 5), sans-IO.

Theory of operation
-------------------
A shard member that expects to lose sends an expert a signed `ProxyRequest{shard_id, sponsor, price_bps,
deadline_ms, input}` carrying the submitter's signed `Input`. The desk answers in two steps:

1. `accept(env, members, now)`: check the request (signed by its sponsor, a genuine Input for the same shard,
   the sponsor is in the shard, the deadline is ahead, the offered share covers our advertised price and stays under
   the protocol's cap) and then the two rules that keep proxying honest:
   - an expert never serves a shard it is a member of (it would compete against its own candidate), and
   - an expert serves at most one sponsor per shard (two signed ProxySubmissions for one shard are self-proving
     evidence, `double_proxy`, and cost the expert half its stake).
   A malformed or forged request raises a `ProtocolError`; a well-formed request the desk declines returns a
   `Refusal` with a stable reason. Nothing else changes state on a refusal.
2. `sign(shard_id, sponsor, payload)`: once the driver has embedded and scored the batch, build the sponsor's
   `Submission` with the producer's signed `ProxySubmission` inside. The desk signs at most one payload per shard;
   asking again for the same payload returns the same submission (idempotent), asking for a different one raises.

`prune(now)` forgets shards whose deadline has passed, so memory stays bounded. The desk does not know how requests
travel or how the embedding is computed: the driver (daemon or simulator) calls it and carries out the result.

The expert's answer travels as a `ProxyAnswer`: the sponsor's Submission, or a refusal. The sponsor opens it with
`open_answer`, which checks that it is the submission it asked for (its own, for this shard, by this producer,
with the producer's signature, at no more than the offered share); anything else is a ProtocolError against the
expert.
"""

from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from moenode.core.crypto import Signer, Verifier
from moenode.core.errors import NotInShard, SchemaError, SignatureError
from moenode.core.genesis import Params
from moenode.core.messages import (
    KiB,
    Input,
    Message,
    Payload,
    ProxyRequest,
    ProxySubmission,
    Signed,
    Submission,
    narrow,
    nested,
    open_wire,
    optional,
    seal,
    spec,
    text,
)


@dataclass(frozen=True)
class Refusal:
    """A valid request the desk declines. reason: member | busy | price | expired (or, from the node: off, space)."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Accepted:
    """The request to work on: embed `input.items` and call `ProxyDesk.sign` with the payload."""

    request: ProxyRequest
    input_env: Signed[Input]

    @property
    def input(self) -> Input:
        return self.input_env.msg


@dataclass
class _Job:
    sponsor: bytes
    deadline_ms: int
    price_bps: int
    submission: Submission | None = None


@dataclass
class ProxyDesk:
    """One expert's book of proxy jobs. `price_bps` is its advertised share of the winner's reward."""

    signer: Signer
    net: bytes
    verify: Verifier
    params: Params
    price_bps: int
    jobs: dict[bytes, _Job] = field(default_factory=dict)  # shard_id -> the one sponsor served

    @property
    def me(self) -> bytes:
        return self.signer.public_key

    def accept(self, env: Signed[Message], members: Sequence[bytes], now: int) -> Accepted | Refusal:
        """Check a ProxyRequest envelope (already through open_signed). `members` = the shard, derived locally."""
        req = env.msg
        if not isinstance(req, ProxyRequest):
            raise SchemaError(f"{req.TYPE} is not a ProxyRequest")
        if env.signer != req.sponsor:
            raise SignatureError("ProxyRequest: not signed by its sponsor")
        input_env = narrow(open_wire(req.input, self.net, self.verify, (Input,)), Input)
        inp = input_env.msg
        if input_env.signer != inp.submitter:
            raise SignatureError("ProxyRequest: the Input is not signed by its submitter")
        if inp.shard_id != req.shard_id:
            raise SchemaError("ProxyRequest: the Input is for another shard")
        if req.sponsor not in members:
            raise NotInShard("ProxyRequest: the sponsor is not a member of the shard")
        if self.me in members:
            return Refusal("member", "an expert never serves a shard it is a member of")
        if now >= min(req.deadline_ms, inp.deadline_ms):
            return Refusal("expired", "the request's deadline has passed")
        if req.price_bps < self.price_bps or req.price_bps > self.params.max_producer_share_bps:
            return Refusal("price", f"offered {req.price_bps} bps, asking {self.price_bps}, "
                                    f"cap {self.params.max_producer_share_bps}")
        job = self.jobs.get(req.shard_id)
        if job is not None and job.sponsor != req.sponsor:
            return Refusal("busy", "this shard already has a sponsor here")
        if job is None:
            self.jobs[req.shard_id] = _Job(req.sponsor, min(req.deadline_ms, inp.deadline_ms), req.price_bps)
        return Accepted(req, input_env)

    def sign(self, shard_id: bytes, sponsor: bytes, payload: Payload) -> Submission:
        """The sponsor's Submission for our payload, with our signed ProxySubmission inside."""
        job = self.jobs.get(shard_id)
        if job is None or job.sponsor != sponsor:
            raise RuntimeError("sign: no accepted request from this sponsor for this shard")
        if job.submission is not None:
            if job.submission.payload != payload:
                raise RuntimeError("sign: a different payload was already signed for this shard")
            return job.submission
        ps = seal(ProxySubmission(shard_id, self.me, sponsor, payload.digest(), job.price_bps), self.signer, self.net)
        job.submission = Submission(shard_id=shard_id, member=sponsor, producer=self.me, payload=payload,
                                    proxy=ps.as_wire())
        return job.submission

    def prune(self, now: int) -> int:
        """Forget jobs whose deadline has passed; returns how many were dropped."""
        old = [sid for sid, job in self.jobs.items() if job.deadline_ms <= now]
        for sid in old:
            del self.jobs[sid]
        return len(old)


def proxy_request(sponsor: Signer, net: bytes, input_env: Signed[Input], price_bps: int, deadline_ms: int
                  ) -> Signed[ProxyRequest]:
    """The sponsor's side: a signed ProxyRequest carrying the submitter's Input envelope."""
    inp = input_env.msg
    req = ProxyRequest(shard_id=inp.shard_id, sponsor=sponsor.public_key, price_bps=price_bps,
                       deadline_ms=deadline_ms, input=input_env.as_wire())
    return seal(req, sponsor, net)


@dataclass(frozen=True)
class ProxyAnswer(Message):
    """The expert's answer to a ProxyRequest: the sponsor's Submission (with the producer's signed ProxySubmission
    inside), or why it refuses. Exactly one of the two."""

    TYPE: ClassVar[str] = "ProxyAnswer"
    MAX_BYTES: ClassVar[int] = Submission.MAX_BYTES + 4 * KiB
    refused: str | None = spec(optional(text(256)))
    submission: Submission | None = spec(optional(nested(Submission)))

    def validate(self) -> None:
        if (self.submission is None) == (self.refused is None):
            raise SchemaError("ProxyAnswer: a submission or a refusal, exactly one")

    @classmethod
    def of(cls, result: "Submission | Refusal") -> "ProxyAnswer":
        if isinstance(result, Refusal):
            detail = f"{result.reason}: {result.detail}" if result.detail else result.reason
            return cls(refused=detail.encode()[:256].decode("utf-8", "ignore"), submission=None)
        return cls(refused=None, submission=result)


def open_answer(data: bytes, request: ProxyRequest, producer: bytes, net: bytes, verify: Verifier
                ) -> Submission | Refusal:
    """The sponsor's side: the Submission the expert `producer` answered to `request`, or its refusal. Raises a
    ProtocolError (against the expert) for an answer that is malformed or not what was asked for."""
    answer = ProxyAnswer.decode(data)
    if answer.refused is not None:
        return Refusal("refused", answer.refused)
    sub = answer.submission
    assert sub is not None  # validate(): one of the two
    if sub.member != request.sponsor or sub.shard_id != request.shard_id or sub.producer != producer:
        raise SchemaError("ProxyAnswer: the submission is not the sponsor's, for this shard, by this expert")
    share = sub.check_proxy(net, verify)
    if share > request.price_bps:
        raise SchemaError(f"ProxyAnswer: share {share} bps above the offered {request.price_bps}")
    return sub
