"""Vector spaces in the protocol: the genesis's spaces, shards drawn from the stake that serves a space, and the
in-round check that keeps a candidate from another space from winning."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import moenode.core.round as round_mod
from moenode.core.errors import SchemaError
from moenode.core.genesis import genesis_to_toml, parse_genesis
from moenode.core.messages import Input, shard_id
from moenode.core.round import LocalRoundError, ShardContext
from moenode.core.selection import data_hash, quorum, sample_shard, shard_seed, shard_size, voting_power
from moenode.core.spaces import Space, cosines_micro, off_space
from moenode.core.checkpoint import CheckpointCert
from moenode.core.orders import Stake
from moenode.testing.ledgerkit import EPOCH_MS, T0, Net
from moenode.testing.roundkit import Scenario, make_signers

from tests.core.test_round import run

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "spaces.json").read_text())


def test_vectors_genesis_pools_and_draws():
    g = parse_genesis(VECTORS["genesis_toml"])
    assert g.network_id.hex() == VECTORS["network_id"]
    power = voting_power(g.initial_stakes())
    for d in VECTORS["draws"]:
        pool = g.space_book.power_in(power, d["space"])
        assert sorted(pk.hex() for pk in pool) == d["pool"]
        members = sample_shard(pool, shard_seed(g.seed0(), data_hash([b"one text"]), bytes.fromhex(d["nonce"]),
                                                bytes.fromhex(d["pay_id"])), shard_size(len(pool))[0])
        assert [m.hex() for m in members] == d["members"] and quorum(len(members)) == d["q"]


def test_vectors_cosines_and_verdicts():
    mats = {k: np.frombuffer(bytes.fromhex(v), "<f2").reshape(VECTORS["shape"]).astype(np.float32)
            for k, v in VECTORS["matrices"].items()}
    for c in VECTORS["cosines"]:
        assert cosines_micro(mats[c["a"]], mats[c["b"]]) == c["cosines_micro"]
    space = Space(**VECTORS["round_space"])
    for v in VECTORS["verdicts"]:
        cands = {bytes([i]) * 32: (space.dim, mats[n].tobytes()) for i, n in enumerate(v["candidates"])}
        assert [off_space(space, m, cands) == "" for m in sorted(cands)] == v["wins_allowed"]


def test_genesis_spaces_round_trip_and_default():
    g = parse_genesis(VECTORS["genesis_toml"])
    assert parse_genesis(genesis_to_toml(g)) == g
    assert [s.id for s in g.spaces] == ["main", "mpnet"] and g.spaces[1].round_p5_micro == 850_000
    plain = parse_genesis('[network]\nname = "x"\ngenesis_time_ms = 0\n[[accounts]]\npubkey = "' + "11" * 32
                          + '"\nstake = 5\n')
    assert plain.spaces == (Space(),) and plain.space_book.serves(b"\x11" * 32) == ("main",)
    assert plain.space_book.serves(b"\x22" * 32) == ("main",)  # an account staked later serves the default


@pytest.mark.parametrize("bad, why", [
    ('[[spaces]]\nid = "a"\n[[spaces]]\nid = "a"\n', "repeat"),
    ('[[spaces]]\nid = "Bad Id"\n', "space id"),
    ('[[spaces]]\nid = "a"\ndim = -1\n', "dim"),
    ('[[spaces]]\nid = "a"\ncolour = 1\n', "unknown keys"),
])
def test_genesis_refuses_bad_spaces(bad, why):
    text = '[network]\nname = "x"\ngenesis_time_ms = 0\n' + bad + '[[accounts]]\npubkey = "' + "11" * 32 + \
        '"\nstake = 5\n'
    with pytest.raises(SchemaError, match=why):
        parse_genesis(text)


def test_genesis_refuses_an_account_in_an_unknown_space():
    text = ('[network]\nname = "x"\ngenesis_time_ms = 0\n[[spaces]]\nid = "a"\n[[accounts]]\npubkey = "'
            + "11" * 32 + '"\nstake = 5\nspaces = ["b"]\n')
    with pytest.raises(SchemaError, match="does not list"):
        parse_genesis(text)


def test_the_space_is_bound_into_the_shard_id():
    dh = data_hash([b"x"])
    assert shard_id(0, dh, b"\x01" * 32, b"\x02" * 32, "main") != shard_id(0, dh, b"\x01" * 32, b"\x02" * 32, "b")


def _two_space_scenario(n: int = 8):
    sc = Scenario(make_signers(n))
    g = sc.genesis
    other = {a.pubkey for a in g.accounts[n // 2:]}
    accounts = [replace(a, spaces=("other",)) if a.pubkey in other else a for a in g.accounts]
    sc.genesis = replace(g, accounts=tuple(accounts), spaces=(Space("main"), Space("other")))
    assert parse_genesis(genesis_to_toml(sc.genesis)) == sc.genesis
    return sc, other


def test_shards_are_drawn_from_the_stake_that_serves_the_space():
    sc, other = _two_space_scenario()
    for space, pool in (("main", {a.pubkey for a in sc.genesis.accounts} - other), ("other", other)):
        shard = sc.shard(space=space)
        res = shard.run(make_signers(1, b"sub")[0], ["a text"], b"\x03" * 32)
        assert res.submitter.status == "certified", res.submitter.reason
        assert set(res.members) <= pool
        assert res.submitter.certificate.report.space == space


def test_an_unknown_space_or_one_nobody_serves_draws_no_shard():
    sc, _ = _two_space_scenario()
    inp = Input(shard_id=b"\x00" * 32, epoch=0, submitter=b"\x01" * 32, pay_id=b"\x02" * 32, pay_cert=b"", fee=1,
                data_hash=b"\x03" * 32, nonce=b"\x04" * 32, modality="text", deadline_ms=1, items=("x",),
                space="nowhere")
    power = voting_power(sc.genesis.initial_stakes())
    with pytest.raises(SchemaError, match="not one of this network"):
        ShardContext.derive(b"n" * 32, sc.genesis.params, inp, power, b"s" * 32, sc.genesis.space_book)
    book = sc.genesis.space_book
    nobody = type(book)(book.spaces, {pk: ("main",) for pk in power})
    with pytest.raises(LocalRoundError, match="no staked members serve space other"):
        ShardContext.derive(b"n" * 32, sc.genesis.params, Input(**{**inp.__dict__, "space": "other"}), power,
                            b"s" * 32, nobody)


def test_a_candidate_from_another_space_never_wins(monkeypatch):
    """An encoder in the wrong space with the lowest loss: the in-round check keeps it from winning; turned off, it
    wins (so the check is what stops it)."""
    sc = Scenario(make_signers(5))
    _, res = run(sc)
    members = sorted(res.members)
    sc.offspace.add(members[2])
    _, res = run(sc)
    cert = res.submitter.certificate
    assert res.submitter.status == "certified" and cert.report.winner != members[2]
    assert members[2] not in cert.report.faulty and members[2] not in cert.report.strikes
    monkeypatch.setattr(round_mod, "off_space", lambda *a: "")
    _, res = run(sc)
    assert res.submitter.certificate.report.winner == members[2]


def test_two_candidates_that_disagree_fail_the_round():
    sc = Scenario(make_signers(2))  # n = 2, q = 2
    _, res = run(sc)
    sc.offspace.add(sorted(res.members)[0])
    _, res = run(sc)
    assert res.submitter.status == "failed"
    assert all("no candidate in space main" in o.reason for o in res.members.values())


def test_a_candidate_of_the_wrong_dimension_cannot_win():
    space = Space(dim=4)
    v = np.eye(4, dtype=np.float32)
    cands = {b"a" * 32: (4, v.tobytes()), b"b" * 32: (2, np.eye(2, 4, dtype=np.float32)[:, :2].tobytes())}
    assert off_space(space, b"a" * 32, cands) == ""
    assert "2 dimensions" in off_space(space, b"b" * 32, cands)


def _checkpoint(net: Net, epoch: int) -> None:
    cp = net.ledger.propose_checkpoint(epoch)
    now = (epoch + 1) * EPOCH_MS + 1
    data = CheckpointCert(cp, tuple(sorted((a.me, a.sign_checkpoint(cp, now)) for a in net.authorities))).encode()
    for a in net.authorities:
        assert a.accept_checkpoint(data) == "applied"


def test_a_stake_declares_the_spaces_its_model_serves_from_the_table_it_joins():
    net = Net(n=4, spaces=(Space("main"), Space("other")))
    joiner = net.user_keys[0]
    me = joiner.public_key
    net.run(Stake(me, 0, 0, 5_000, ("other",)), joiner)
    led = net.ledger
    assert [i.kind for i in led.propose_checkpoint(0).items] == ["serve", "stake"]
    _checkpoint(net, 0)  # fixes the table of epoch 2: the stake and the declaration join it together
    assert led.space_book_at(1).serves(me) == ("main",)  # before: an account the genesis does not list
    assert led.space_book_at(2).serves(me) == ("other",)
    assert set(led.space_book_at(2).power_in(led.power_at(2), "other")) == {me}
    assert me not in led.space_book_at(2).power_in(led.power_at(2), "main")
    assert len(net.digests()) == 1
    before = led.state_digest()
    net.run(Stake(me, 1, 1, 1_000, ("main", "other")), joiner, now=EPOCH_MS + 1)
    _checkpoint(net, 1)
    assert led.space_book_at(3).serves(me) == ("main", "other") and led.space_book_at(2).serves(me) == ("other",)
    net.run(Stake(me, 2, 2, 1_000), joiner, now=2 * EPOCH_MS + 1)  # no spaces: the declaration stands
    _checkpoint(net, 2)
    assert led.space_book_at(4).serves(me) == ("main", "other")
    assert led.state_digest() != before and len(net.digests()) == 1
    with pytest.raises(KeyError):
        led.space_book_at(5)


def test_a_stake_that_names_an_unknown_space_or_an_unsorted_list_is_refused():
    net = Net(n=4, spaces=(Space("main"), Space("other")))
    joiner = net.user_keys[0]
    me = joiner.public_key
    with pytest.raises(SchemaError, match="not one of this network"):
        net.ledger.check_order(net.seal(Stake(me, 0, 0, 5_000, ("nowhere",)), joiner), T0)
    with pytest.raises(SchemaError, match="unique and sorted"):
        net.seal(Stake(me, 0, 0, 5_000, ("other", "main")), joiner)
    body = Stake(me, 0, 0, 5_000, ("other",)).to_body()
    assert Stake.from_body(body).spaces == ("other",)
    with pytest.raises(SchemaError, match="a space id"):
        Stake.from_body({**body, "spaces": ["Not A Space"]})


def test_pair_verdicts_equal_the_check_and_stay_bounded():
    from moenode.core.spaces import PairVerdicts, agrees, payload_vectors

    rng = np.random.default_rng(3)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    unit = lambda v: (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("<f4")  # noqa: E731
    near, far = unit(base + 0.05 * rng.standard_normal(base.shape)), unit(rng.standard_normal(base.shape))
    payloads = [(8, unit(base).tobytes()), (8, near.tobytes()), (8, far.tobytes()), (4, unit(base[:, :4]).tobytes())]
    verdicts = PairVerdicts(size=3)
    for a in payloads:
        for b in payloads:
            want = agrees(payload_vectors(a[1], a[0]), payload_vectors(b[1], b[0]), 900_000)
            assert verdicts(a, b, 900_000) == want == verdicts(b, a, 900_000)
            assert len(verdicts._seen) <= 3
    assert verdicts(payloads[0], payloads[1], 900_000) and not verdicts(payloads[0], payloads[2], 900_000)
