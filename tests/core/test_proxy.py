"""The expert's desk: one sponsor per shard, never its own shard, and a ProxySubmission the round accepts."""

import dataclasses

import pytest

from moenode.core.codec import canonical
from moenode.core.crypto import Ed25519Signer, ed25519_verify
from moenode.core.errors import NotInShard, SchemaError, SignatureError
from moenode.core.messages import open_signed, seal
from moenode.core.proxy import Accepted, ProxyAnswer, ProxyDesk, Refusal, open_answer, proxy_request
from moenode.core.round import ShardContext
from moenode.testing.inproc import InProcessShard
from moenode.testing.roundkit import FAST, make_genesis, make_signers, payload

SUBMITTER = Ed25519Signer.from_entropy(b"submitter")


@pytest.fixture
def world():
    signers = make_signers(8)
    g = make_genesis(signers)
    shard = InProcessShard(g, {s.public_key: s for s in signers}, lambda *a: None, lambda *a: True)
    env = shard.make_input(SUBMITTER, ["one text", "another"], b"\x07" * 32, now=0)
    ctx = ShardContext.derive(g.network_id, FAST, env.msg, shard.power, shard.epoch_seed)
    members = list(ctx.members)
    outsiders = [s for s in signers if s.public_key not in members]
    by_pk = {s.public_key: s for s in signers}
    return g, env, members, outsiders, by_pk


def desk(signer, g, price=1_000):
    return ProxyDesk(signer, g.network_id, ed25519_verify, FAST, price)


def request(sponsor, g, env, price=2_000, deadline=10_000):
    raw = proxy_request(sponsor, g.network_id, env, price, deadline).encode()
    return open_signed(raw, g.network_id, ed25519_verify)  # through the single door, as the daemon does


def test_accept_sign_and_the_round_accepts_the_submission(world):
    g, env, members, outsiders, by_pk = world
    expert, sponsor = outsiders[0], by_pk[members[0]]
    d = desk(expert, g)
    got = d.accept(request(sponsor, g, env), members, now=5)
    assert isinstance(got, Accepted) and got.input.items == ("one text", "another")
    pay = payload(expert.public_key, 2, 123_000)
    sub = d.sign(env.msg.shard_id, sponsor.public_key, pay)
    assert sub.member == sponsor.public_key and sub.producer == expert.public_key
    assert sub.check_proxy(g.network_id, ed25519_verify) == 2_000  # the offered share is what was signed
    assert d.sign(env.msg.shard_id, sponsor.public_key, pay) is sub  # idempotent
    with pytest.raises(RuntimeError):
        d.sign(env.msg.shard_id, sponsor.public_key, payload(expert.public_key, 2, 999))


def test_one_sponsor_per_shard(world):
    g, env, members, outsiders, by_pk = world
    d = desk(outsiders[0], g)
    assert isinstance(d.accept(request(by_pk[members[0]], g, env), members, 0), Accepted)
    again = d.accept(request(by_pk[members[0]], g, env), members, 1)
    assert isinstance(again, Accepted)  # the same sponsor asking twice is fine
    other = d.accept(request(by_pk[members[1]], g, env), members, 1)
    assert other == Refusal("busy", other.detail)
    with pytest.raises(RuntimeError):
        d.sign(env.msg.shard_id, members[1], payload(outsiders[0].public_key, 2, 1))


def test_refuses_own_shard_price_and_expired(world):
    g, env, members, outsiders, by_pk = world
    sponsor = by_pk[members[0]]
    assert d_reason(desk(by_pk[members[1]], g).accept(request(sponsor, g, env), members, 0)) == "member"
    assert d_reason(desk(outsiders[0], g, price=3_000).accept(request(sponsor, g, env), members, 0)) == "price"
    over = request(sponsor, g, env, price=FAST.max_producer_share_bps + 1)
    assert d_reason(desk(outsiders[0], g).accept(over, members, 0)) == "price"
    assert d_reason(desk(outsiders[0], g).accept(request(sponsor, g, env), members, 10_000)) == "expired"
    d = desk(outsiders[0], g)
    d.accept(request(sponsor, g, env), members, 0)
    assert d.prune(10_000) == 1 and not d.jobs


def d_reason(r):
    assert isinstance(r, Refusal)
    return r.reason


def test_forged_requests_raise(world):
    g, env, members, outsiders, by_pk = world
    stranger = Ed25519Signer.from_entropy(b"stranger")
    d = desk(outsiders[0], g)
    with pytest.raises(NotInShard):
        d.accept(request(stranger, g, env), members, 0)
    # a request that claims another sponsor than its signer
    real = request(by_pk[members[0]], g, env)
    forged = seal(real.msg, by_pk[members[1]], g.network_id)
    with pytest.raises(SignatureError):
        d.accept(forged, members, 0)
    assert not d.jobs


# the expert's answer, as the sponsor opens it ---------------------------------------------------------------------
@pytest.mark.parametrize("answer", [{"x": 1}, {"submission": None}, {"refused": None, "submission": None},
                                   {"refused": "busy", "submission": {}}, [], None, {"submission": []}],
                         ids=repr)
def test_a_malformed_proxy_answer_is_a_schema_error(world, answer):
    """`{"x": 1}` raised KeyError and `{"submission": null}` TypeError in the sponsor, where neither was counted
    against the expert: the answer has one schema now, and breaking it is a ProtocolError."""
    g, env, members, outsiders, by_pk = world
    req = request(by_pk[members[0]], g, env).msg
    with pytest.raises(SchemaError):
        open_answer(canonical(answer), req, outsiders[0].public_key, g.network_id, ed25519_verify)


def test_the_sponsor_opens_the_answer_it_asked_for_and_nothing_else(world):
    g, env, members, outsiders, by_pk = world
    expert, sponsor = outsiders[0], by_pk[members[0]]
    d = desk(expert, g)
    req = request(sponsor, g, env, price=2_000)
    d.accept(req, members, now=5)
    sub = d.sign(env.msg.shard_id, sponsor.public_key, payload(expert.public_key, 2, 123_000))

    def opened(answer, producer=expert.public_key, asked=req.msg):
        return open_answer(ProxyAnswer.of(answer).encode(), asked, producer, g.network_id, ed25519_verify)

    assert opened(sub) == sub
    assert opened(Refusal("busy", "another sponsor")) == Refusal("refused", "busy: another sponsor")
    with pytest.raises(SchemaError, match="not the sponsor's"):
        opened(sub, producer=outsiders[1].public_key)  # answered by someone else than asked
    cheaper = request(sponsor, g, env, price=1_500).msg
    with pytest.raises(SchemaError, match="above the offered"):
        opened(sub, asked=cheaper)
    forged = dataclasses.replace(sub, payload=payload(expert.public_key, 2, 1))  # the producer never signed this
    with pytest.raises(SchemaError, match="another shard or payload"):
        opened(forged)
