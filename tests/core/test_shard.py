"""One shard session per node: the early buffer, the replay rules, the payment check as an input, and the table."""

import pytest

from moenode.core.crypto import Ed25519Signer, ed25519_verify
from moenode.core.errors import NotInShard, Replay, StateError
from moenode.core.messages import Commit, OptOut, seal
from moenode.core.round import Outcome, Send, ShardContext, Work
from moenode.core.shard import EarlyBounds, Refused, ShardTable
from moenode.testing.roundkit import Scenario, make_signers, own_submission

SUBMITTER = Ed25519Signer.from_entropy(b"shard-submitter")
ITEMS = ["one", "two"]


def setup(n=12, **table):
    sc = Scenario(make_signers(n))
    shard = sc.shard()
    env = shard.make_input(SUBMITTER, ITEMS, b"\x07" * 32, 0)
    ctx = ShardContext.derive(sc.genesis.network_id, sc.genesis.params, env.msg, shard.power, shard.epoch_seed)
    signers = {s.public_key: s for s in sc.signers}
    me, *others = ctx.members
    return sc, ctx, env, ShardTable(signers[me], ed25519_verify, **table), [signers[m] for m in others]


def commit(signer, ctx, tag=b"x"):
    return seal(Commit(ctx.shard_id, tag * 32), signer, ctx.net)


def test_messages_that_outrun_the_input_wait_for_it():
    sc, ctx, env, table, others = setup()
    early = commit(others[0], ctx)
    assert table.receive(others[0].public_key, early, 0) == [] and ctx.shard_id in table.early
    session, out = table.open_member(ctx, env, 1)
    assert any(isinstance(e, Work) for e in out) and ctx.shard_id not in table.early
    assert session.member.commits == {others[0].public_key: b"x" * 32}  # read once the round was open
    assert table.early_bytes == 0


def test_the_early_buffer_is_bounded_and_keeps_only_stakers():
    sc, ctx, env, table, others = setup(staked=lambda pk: pk != b"\x00" * 32)
    table.bounds = EarlyBounds(per_shard=2)
    for i, s in enumerate(others[:3]):
        table.receive(s.public_key, commit(s, ctx, bytes([i])), 0)
    assert len(table.early[ctx.shard_id]) == 2 and table.dropped == 1
    stranger = seal(Commit(ctx.shard_id, b"y" * 32), others[0], ctx.net)
    unstaked = ShardTable(table.signer, ed25519_verify, staked=lambda pk: False)
    with pytest.raises(NotInShard):
        unstaked.receive(others[0].public_key, stranger, 0)


def test_an_early_message_refused_once_read_comes_back_as_refused():
    sc, ctx, env, table, others = setup()
    outsider = seal(Commit(ctx.shard_id, b"x" * 32), SUBMITTER, ctx.net)  # staked or not, it is not in the shard
    table.receive(b"peer", outsider, 0)
    _, out = table.open_member(ctx, env, 1)
    refused = [e for e in out if isinstance(e, Refused)]
    assert len(refused) == 1 and isinstance(refused[0].error, NotInShard) and refused[0].peer == b"peer"


def test_replays_are_refused_but_a_node_in_both_roles_takes_the_copies_it_is_sent():
    sc, ctx, env, table, others = setup()
    table.open_member(ctx, env, 0)
    c = commit(others[0], ctx)
    table.receive(others[0].public_key, c, 1)
    with pytest.raises(Replay):
        table.receive(others[0].public_key, c, 2)
    with pytest.raises(Replay):
        table.check_input(env)
    other = sc.shard().make_input(SUBMITTER, ITEMS, b"\x07" * 32, 5)  # same shard, another deadline
    with pytest.raises(StateError):
        table.check_input(other)


def test_a_node_in_both_roles_takes_the_copies_it_is_sent():
    sc = Scenario(make_signers(12))
    shard = sc.shard()
    me = sc.signers[0]
    for i in range(100):  # a nonce whose shard we are a member of, with ourselves as the submitter
        env = shard.make_input(me, ITEMS, bytes([i]) * 32, 0)
        ctx = ShardContext.derive(sc.genesis.network_id, sc.genesis.params, env.msg, shard.power, shard.epoch_seed)
        if me.public_key in ctx.members:
            break
    table = ShardTable(me, ed25519_verify)
    table.submit(ctx, env, 0)
    other = next(s for s in sc.signers if s.public_key in ctx.members and s is not me)
    optout = seal(OptOut(ctx.shard_id, "busy"), other, ctx.net)
    table.receive(other.public_key, optout, 1)  # our member round is not open: kept for it too
    assert len(table.early[ctx.shard_id]) == 1 and table.sessions[ctx.shard_id].submitter.optouts
    session, _ = table.open_member(ctx, env, 2)
    assert other.public_key in session.member.optouts  # the copy that waited reached our member round
    assert table.receive(other.public_key, optout, 3) == []  # both roles: copies arrive by design


def test_the_payment_check_is_an_input():
    sc, ctx, env, table, others = setup()
    session, out = table.open_member(ctx, env, 0, payment_problem="no such escrow")
    outcome = next(e for e in out if isinstance(e, Outcome))
    assert outcome.status == "opted_out" and outcome.reason == "payment: no such escrow" and outcome.role == "member"
    assert all(isinstance(e.env.msg, OptOut) for e in out if isinstance(e, Send))
    assert session.finished and session.finished_at == 0


def test_closed_shards_drop_stragglers_and_refuse_their_input():
    sc, ctx, env, table, others = setup()
    session, _ = table.open_member(ctx, env, 0, payment_problem="x")
    assert table.prune(0) == [] and table.prune(table.bounds.linger_ms + 1) == [ctx.shard_id]
    assert table.receive(others[0].public_key, commit(others[0], ctx), 1) == []
    with pytest.raises(Replay):
        table.open_member(ctx, env, 2)


def test_the_submitters_session_sends_the_input_and_ends_with_its_role():
    sc, ctx, env, _, _ = setup()
    table = ShardTable(SUBMITTER, ed25519_verify)
    session, out = table.submit(ctx, env, 0)
    assert [e.to for e in out] == list(ctx.members) and session.deadline == ctx.input.deadline_ms
    outcome = next(e for e in session.handle_timer(ctx.input.deadline_ms) if isinstance(e, Outcome))
    assert outcome.role == "submitter" and outcome.status == "failed" and session.finished
    assert session.work_done(own_submission(SUBMITTER.public_key, ctx.shard_id, 2, 1), 1) == []
