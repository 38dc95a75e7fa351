import pytest

from moenode.core.crypto import Ed25519Signer, H
from moenode.core.errors import NotInShard, StateError
from moenode.core.messages import Commit, Signed, open_signed, seal
from moenode.core.round import LocalRoundError, MemberRound, Phase, ShardContext, TRANSITIONS
from moenode.testing.roundkit import FAST, Scenario, make_signers, own_submission

SUBMITTER = Ed25519Signer.from_entropy(b"submitter")
ITEMS = ["first text to embed", "second text", "third one"]


def run(sc: Scenario, nonce: bytes = b"\x01" * 32, **kw):
    shard = sc.shard(**kw)
    return shard, shard.run(SUBMITTER, ITEMS, nonce, now=0)


def test_happy_path_certifies_the_lowest_loss():
    sc = Scenario(make_signers(5))
    shard, res = run(sc)
    assert res.submitter.status == "certified", res.submitter.reason
    cert = res.submitter.certificate
    members = sorted(res.members)
    best = min(members, key=lambda m: sc.loss[m])
    assert cert.report.winner == best and cert.report.producer == best
    assert cert.report.strikes == () and cert.report.faulty == ()
    assert res.submitter.winner_reveal.msg.submission.digest() == cert.report.winner_digest
    ctx_members = sorted(res.members)
    cert.check(sc.genesis.network_id, shard.verify, ctx_members, len(cert.signatures))
    assert all(o.status == "certified" for o in res.members.values())
    assert not res.rejections


def test_straggler_is_struck_and_round_still_certifies():
    sc = Scenario(make_signers(10))  # n = 5, q = 4
    shard, res = run(sc)
    members = sorted(res.members)
    slow = members[0]
    sc.took[slow] = 4_000  # well past q commits + grace, before the commit deadline
    _, res = run(sc)
    assert res.submitter.status == "certified"
    assert res.submitter.certificate.report.strikes == (slow,)
    assert res.submitter.certificate.report.winner != slow


def test_a_submitters_commit_deadline_waits_for_the_slow_strong_member():
    """The straggler above, but the submitter's Input carries `commit_by_ms`: members hold the vote open for it, it
    commits in time, is not struck, and its better payload wins. A member slower than that deadline is still struck."""
    sc = Scenario(make_signers(10))
    shard, res = run(sc)
    slow = sorted(res.members)[0]
    sc.took[slow] = 4_000
    sc.loss[slow] = 1  # the slow member's model is the strongest
    res = shard.run(SUBMITTER, ITEMS, b"\x01" * 32, wait_ms=6_000)
    report = res.submitter.certificate.report
    assert report.strikes == () and report.winner == slow
    assert all(o.status == "certified" for o in res.members.values())
    sc.took[slow] = 7_000  # later than the submitter was willing to wait
    report = shard.run(SUBMITTER, ITEMS, b"\x01" * 32, wait_ms=6_000).submitter.certificate.report
    assert report.strikes == (slow,) and report.winner != slow


def test_fake_score_is_caught_and_the_next_candidate_wins():
    sc = Scenario(make_signers(5))
    _, res = run(sc)
    members = sorted(res.members)
    cheat = members[2]
    sc.cheaters.add(cheat)
    _, res = run(sc)
    report = res.submitter.certificate.report
    assert report.winner != cheat and cheat in report.faulty
    honest_best = min((m for m in members if m != cheat), key=lambda m: sc.loss[m])
    assert report.winner == honest_best


def test_too_few_commits_fails_and_no_certificate():
    sc = Scenario(make_signers(5))  # n = 3 of 5? shard_size(5) -> (3, 2)
    _, res = run(sc)
    members = sorted(res.members)
    sc.silent.update(members[:2])
    _, res = run(sc)
    assert res.submitter.status == "failed" and res.submitter.certificate is None
    live = [o for m, o in res.members.items() if m not in sc.silent]
    assert live and all(o.status == "failed" for o in live)


def test_proxy_submission_wins_with_producer_and_share():
    sc = Scenario(make_signers(6))
    _, res = run(sc)
    members = sorted(res.members)
    outsiders = [s for s in sc.signers if s.public_key not in members]
    sponsor = members[-1]
    sc.proxies[sponsor] = (outsiders[0], 500)
    _, res = run(sc)
    r = res.submitter.certificate.report
    assert (r.winner, r.producer, r.producer_share_bps) == (sponsor, outsiders[0].public_key, 5_000)


def test_double_proxy_is_evidence():
    sc = Scenario(make_signers(6))
    _, res = run(sc)
    members = sorted(res.members)
    expert = next(s for s in sc.signers if s.public_key not in members)
    sc.proxies[members[0]] = (expert, 500)
    sc.proxies[members[1]] = (expert, 500)
    _, res = run(sc)
    kinds = {e.evidence.kind for e in res.evidence}
    assert "double_proxy" in kinds
    assert res.submitter.certificate.report.producer != expert.public_key


def test_reveal_mismatch_and_equivocation_yield_evidence():
    sc = Scenario(make_signers(5))
    shard, res = run(sc)
    members = sorted(res.members)
    ctx_input = shard.make_input(SUBMITTER, ITEMS, b"\x01" * 32, 0)
    ctx = ShardContext.derive(sc.genesis.network_id, sc.genesis.params, ctx_input.msg, shard.power, shard.epoch_seed)
    me = next(s for s in sc.signers if s.public_key == members[0])
    other = next(s for s in sc.signers if s.public_key == members[1])
    rnd, _ = MemberRound.open(ctx, ctx_input, me, shard.verify, 0)
    net = sc.genesis.network_id
    c1 = seal(Commit(ctx.shard_id, H("d", b"1")), other, net)
    c2 = seal(Commit(ctx.shard_id, H("d", b"2")), other, net)
    assert rnd.handle(c1, 1) == []
    assert rnd.handle(c1, 2) == []  # duplicate delivery is harmless
    out = rnd.handle(c2, 3)
    assert out[0].evidence.kind == "equivocation" and out[0].evidence.offender == other.public_key


def test_out_of_shard_and_wrong_shard_are_refused():
    sc = Scenario(make_signers(10))
    shard, res = run(sc)
    members = sorted(res.members)
    env = shard.make_input(SUBMITTER, ITEMS, b"\x01" * 32, 0)
    ctx = ShardContext.derive(sc.genesis.network_id, sc.genesis.params, env.msg, shard.power, shard.epoch_seed)
    outsider = next(s for s in sc.signers if s.public_key not in members)
    with pytest.raises(NotInShard):
        MemberRound.open(ctx, env, outsider, shard.verify, 0)
    me = next(s for s in sc.signers if s.public_key == members[0])
    rnd, _ = MemberRound.open(ctx, env, me, shard.verify, 0)
    with pytest.raises(NotInShard):
        rnd.handle(seal(Commit(ctx.shard_id, H("d", b"x")), outsider, sc.genesis.network_id), 1)
    with pytest.raises(StateError):
        rnd.handle(seal(Commit(H("other", b""), H("d", b"x")),
                        next(s for s in sc.signers if s.public_key == members[1]), sc.genesis.network_id), 1)


def test_abort_on_deadline_fails_everyone():
    sc = Scenario(make_signers(5))
    sc.silent.update(s.public_key for s in sc.signers)
    _, res = run(sc)
    assert res.submitter.status == "failed"
    assert res.end_ms >= FAST.round_abort_ms


def test_expired_input_gets_an_opt_out():
    sc = Scenario(make_signers(5))
    shard, _ = run(sc)
    env = shard.make_input(SUBMITTER, ITEMS, b"\x02" * 32, now=0)
    ctx = ShardContext.derive(sc.genesis.network_id, sc.genesis.params, env.msg, shard.power, shard.epoch_seed)
    me = next(s for s in sc.signers if s.public_key == ctx.members[0])
    rnd, out = MemberRound.open(ctx, env, me, shard.verify, now=FAST.round_abort_ms + 1)
    assert rnd.phase is Phase.DONE and rnd.outcome.status == "opted_out"
    assert {type(e).__name__ for e in out} == {"Send", "Outcome"}


def test_illegal_local_event_raises():
    assert Phase.DONE not in TRANSITIONS["work_done"]
    sc = Scenario(make_signers(3))
    shard, _ = run(sc)
    env = shard.make_input(SUBMITTER, ITEMS, b"\x03" * 32, now=0)
    ctx = ShardContext.derive(sc.genesis.network_id, sc.genesis.params, env.msg, shard.power, shard.epoch_seed)
    me = next(s for s in sc.signers if s.public_key == ctx.members[0])
    rnd, _ = MemberRound.open(ctx, env, me, shard.verify, 0)
    with pytest.raises(LocalRoundError):
        rnd.on_verified(ctx.members[1], True, 5)


def test_wire_roundtrip_through_open_signed():
    sc = Scenario(make_signers(3))
    shard, res = run(sc)
    reveal: Signed = res.submitter.winner_reveal
    again = open_signed(reveal.encode(), sc.genesis.network_id, shard.verify)
    assert again == reveal


def test_verification_sample_seed_binds_the_accepted_commit_set():
    from moenode.core.codec import canonical

    sc = Scenario(make_signers(5))
    seen = []
    shard = sc.shard()
    shard.verify_candidate = lambda who, v: seen.append((who, v.sample_seed)) or True
    res = shard.run(SUBMITTER, ITEMS, b"\x09" * 32)
    assert res.submitter.status == "certified"
    seeds = {seed for _, seed in seen}
    assert len(seeds) == 1  # every member verifies the same sample
    ctx_env = shard.make_input(SUBMITTER, ITEMS, b"\x09" * 32, 0)
    ctx = ShardContext.derive(sc.genesis.network_id, sc.genesis.params, ctx_env.msg, shard.power, shard.epoch_seed)
    accepted = [[m, own_submission(m, ctx.shard_id, len(ITEMS), sc.loss[m]).digest()] for m in ctx.members]
    assert seeds.pop() == H("verify-sample", ctx.shard_seed + canonical(accepted))
