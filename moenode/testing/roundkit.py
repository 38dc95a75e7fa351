"""Shared fixtures for round tests and benchmarks: a small genesis with real Ed25519 keys and synthetic payloads.

The payloads stand in for the encoder at its boundary (the real scorer is tested in tests/encoders); everything
else (signatures, encoding, selection, the state machines) is the real code.
"""

import struct

from moenode.core.crypto import Ed25519Signer, H
from moenode.core.genesis import Account, Genesis, Params
from moenode.core.messages import Payload, ProxySubmission, Submission, batch_loss, seal
from moenode.core.round import Verify, Work
from moenode.testing.inproc import InProcessShard

FAST = Params(commit_timeout_ms=5_000, grace_min_ms=50, grace_cap_ms=2_000, vote_timeout_ms=2_000,
              reveal_timeout_ms=2_000, report_timeout_ms=2_000, round_abort_ms=60_000)


def make_signers(n: int, tag: bytes = b"m") -> list[Ed25519Signer]:
    return [Ed25519Signer.from_entropy(tag + i.to_bytes(4, "big")) for i in range(n)]


def make_genesis(signers: list[Ed25519Signer], params: Params = FAST, stake: int = 1_000) -> Genesis:
    accounts = sorted((Account(s.public_key, balance=10_000, stake=stake, model_id="synthetic", price=1)
                       for s in signers), key=lambda a: a.pubkey)
    return Genesis(name="roundtest", genesis_time_ms=0, epoch_ms=3_600_000, params=params, accounts=tuple(accounts))


def payload(member: bytes, items: int, loss: int, dim: int = 4, offspace: bool = False) -> Payload:
    """A payload whose unit vectors are derived from the member (distinct per member, but all within cosine 0.99 of
    one another: one vector space) and whose losses are all `loss`."""
    raw = [1.0 + (b % 7) / 700.0 for b in H("vec", member)[:dim]]
    norm = sum(x * x for x in raw) ** 0.5
    vec = b"".join(struct.pack("<f", x / norm) for x in raw)
    if offspace:  # the same vectors with the axes reversed and every other sign flipped: another space
        vec = b"".join(struct.pack("<f", (-1) ** i * raw[dim - 1 - i] / norm) for i in range(dim))
    losses = tuple(loss for _ in range(items))
    return Payload(model_id=H("model", member), dim=dim, embeddings=vec * items, views=H("views", member),
                   routing=b"\x00\x3c" * 2 * items, item_losses=losses, batch_loss=batch_loss(losses))


def own_submission(member: bytes, shard_id: bytes, items: int, loss: int, offspace: bool = False) -> Submission:
    return Submission(shard_id=shard_id, member=member, producer=member,
                      payload=payload(member, items, loss, offspace=offspace), proxy=None)


def proxied_submission(sponsor: bytes, producer: Ed25519Signer, shard_id: bytes, items: int, loss: int, net: bytes,
                       share_bps: int = 5_000) -> Submission:
    pay = payload(producer.public_key, items, loss)
    ps = seal(ProxySubmission(shard_id, producer.public_key, sponsor, pay.digest(), share_bps), producer, net)
    return Submission(shard_id=shard_id, member=sponsor, producer=producer.public_key, payload=pay,
                      proxy=ps.as_wire())


class Scenario:
    """Per-member losses, compute times and behaviour for one round."""

    def __init__(self, signers: list[Ed25519Signer], params: Params = FAST):
        self.signers = signers
        self.genesis = make_genesis(signers, params)
        self.loss: dict[bytes, int] = {s.public_key: 100_000 + 1_000 * i for i, s in enumerate(signers)}
        self.took: dict[bytes, int] = {s.public_key: 10 for s in signers}
        self.silent: set[bytes] = set()
        self.cheaters: set[bytes] = set()  # claims a loss its vectors do not support: the verifier rejects it
        self.offspace: set[bytes] = set()  # an honest loss, the lowest, from vectors in another space
        self.proxies: dict[bytes, tuple[Ed25519Signer, int]] = {}  # sponsor -> (producer, loss)

    def work(self, member: bytes, w: Work) -> tuple[Submission, int] | None:
        if member in self.silent:
            return None
        if member in self.proxies:
            producer, loss = self.proxies[member]
            sub = proxied_submission(member, producer, w.shard_id, len(w.items), loss, self.genesis.network_id)
        else:
            loss = 1_000 if member in self.cheaters or member in self.offspace else self.loss[member]
            sub = own_submission(member, w.shard_id, len(w.items), loss, member in self.offspace)
        return sub, self.took[member]

    def verify_candidate(self, _verifier: bytes, v: Verify) -> bool:
        return v.member not in self.cheaters

    def shard(self, **kw) -> InProcessShard:
        signers = {s.public_key: s for s in self.signers}
        return InProcessShard(self.genesis, signers, self.work, self.verify_candidate, **kw)
