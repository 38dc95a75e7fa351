"""Vector spaces in the simulator: a submission names a space, its shard is drawn from the stake that serves it (the
daemon's derivation), routing and proxies stay inside it, and in the real mode the in-round space check keeps a
good encoder in the wrong space (adv-offspace) from winning."""

from dataclasses import replace

import pytest

import moenode.core.round as core_round
from moenode.core.round import ShardContext
from moenode.core.selection import sample_shard, shard_seed, shard_size, voting_power
from moenode.sim.config import override, parse
from moenode.sim.market import MarketSim
from moenode.sim.message import MessageSim
from moenode.sim.population import item_text, nonce_of, round_ids
from moenode.testing.simkit import small

TWO_SPACES = 'spaces = ["main", "b"]'


def key(t):
    return (t["space"], t["shard_id"], t["members"], t["winner"], t["producer"], t["loss"], t["strikes"])


def serves(sim) -> dict[str, str]:
    """Public key (hex) -> the space its node serves."""
    return {k.hex(): sim.pop.serves[i] for i, k in enumerate(sim.pop.keys)}


@pytest.mark.parametrize("faults", [{}, {
    "adversary.equivocate": 0.05, "adversary.fake": 0.05, "adversary.withhold": 0.05, "adversary.collapsed": 0.05,
    "world.slow": 0.1, "world.slow_factor": 200}])
def test_both_levels_draw_every_shard_inside_its_space_and_agree(faults):
    sc = override(small(nodes=30, submissions=40, extra=TWO_SPACES), faults)
    msg, mk = MessageSim(sc), MarketSim(sc)
    msg.run()
    mk.run()
    assert [key(t) for t in sorted(msg.trace, key=lambda t: t["k"])] == [key(t) for t in mk.trace]
    space_of = serves(mk)
    assert set(space_of.values()) == {"main", "b"}
    assert {t["space"] for t in mk.trace} == {"main", "b"}  # the workload mixes the spaces
    for t in mk.trace:
        assert {space_of[h] for h in t["members"]} == {t["space"]}  # a node of space b never sits in a main shard
        if t["producer"]:
            assert space_of[t["producer"]] == t["space"]
    assert msg.book.balances == mk.book.balances and msg.book.stakes == mk.book.stakes
    spaces = mk.rec.summary(0.0, mk.world.kind)["spaces"]
    assert sum(v["rounds"] for v in spaces.values()) == 40
    assert spaces == msg.rec.summary(0.0, msg.world.kind)["spaces"]
    if faults:  # byzantine nodes are cheats, listed in the spaces they serve
        assert set().union(*(v["cheat_wins"] for v in spaces.values())) == {"equivocate", "fake", "withhold",
                                                                             "collapsed"}


def test_a_message_level_shard_is_the_daemons_derivation():
    """Every round's shard is what `ShardContext.derive` (the daemon's and the ledger's rule) gives for its Input."""
    sc = small(nodes=30, submissions=20, extra=TWO_SPACES)
    m = MessageSim(sc)
    m.run()
    power = voting_power(m.tables[0])
    rounds = [meta for meta in m.meta.values() if meta.ctx.input.epoch == 0]
    assert {meta.ctx.space.id for meta in rounds} == {"main", "b"}
    for meta in rounds:
        ctx = meta.ctx
        want = ShardContext.derive(m.net_id, m.p, ctx.input, power, m.pop.genesis.seed0(), m.pop.book)
        assert (ctx.members, ctx.q, ctx.space, ctx.shard_seed) == (want.members, want.q, want.space, want.shard_seed)


def test_a_market_level_shard_is_sample_shard_on_the_spaces_stake():
    sc = override(small(nodes=40, submissions=60, extra=TWO_SPACES, fidelity="market"),
                  {"sim.epoch_submissions": 60})
    m = MarketSim(sc)
    m.run()
    book, b = m.pop.book, sc.sim.per_batch
    power = voting_power(m.tables[0])
    for t in m.trace:
        k, space = t["k"], t["space"]
        client = m.pop.clients[k % len(m.pop.clients)]
        _, _, _, seed = round_ids(0, m.pop.genesis.seed0(), [item_text(k * b + j) for j in range(b)], nonce_of(k),
                                  client, space)
        pool = book.power_in(power, space)
        n, _ = shard_size(len(pool))
        assert t["members"] == [pk.hex() for pk in sample_shard(pool, seed, n)]


def test_proxies_and_the_winner_index_stay_inside_the_space():
    sc = parse("""
[sim]
nodes = 150
submissions = 2000
epoch_submissions = 500
chunk = 200
cbtm_clusters = 8
trace = true
space_mix = {main = 3, b = 1}
[world]
spaces = ["main", "b"]
""")
    m = MarketSim(sc)
    m.run()
    space_of = serves(m)
    proxied = [t for t in m.trace if t["producer"] and t["producer"] != t["winner"]]
    assert proxied and {t["space"] for t in proxied} == {"main", "b"}
    assert all(space_of[t["producer"]] == t["space"] for t in proxied)
    for space, index in m.index.items():
        producers = index.producer[:len(index)]
        assert len(producers) and all(m.pop.serves[p] == space for p in producers.tolist())
    spaces = m.rec.summary(0.0, m.world.kind)["spaces"]
    assert 2.5 < spaces["main"]["rounds"] / spaces["b"]["rounds"] < 3.5  # the workload's mix
    m.book.check()


@pytest.mark.parametrize("level", [MessageSim, MarketSim])
def test_a_space_no_stake_serves_is_refused_before_paying(level):
    sc = override(small(nodes=20, submissions=20, extra=TWO_SPACES), {"sim.fidelity": "market"})
    m = level(sc)
    del m.draws.pools["b"]  # as if every node of b had lost its stake
    balances = dict(m.book.balances)
    m.run()
    spaces = m.rec.summary(0.0, m.world.kind)["spaces"]
    unserved = spaces["b"]["unserved"]
    assert unserved > 0 and spaces["b"]["rounds"] == 0 and spaces["main"]["rounds"] == 20 - unserved
    assert {t["space"] for t in m.trace} == {"main"}
    paid = sum(balances[c] - m.book.balances[c] for c in m.pop.clients)
    assert paid == m.book.settled * sc.sim.fee and m.book.settled + m.book.refunded == 20 - unserved


# the real mode: measured zoo models, each in the space the zoo puts it in -----------------------------------------
REAL = """
[sim]
nodes = 15
submissions = {submissions}
fidelity = "{fidelity}"
epoch_submissions = 30
chunk = {chunk}
per_batch = 8
trace = true
[world]
mode = "real"
real_models = ["minilm-l6", "spec-code", "spec-man", "minilm-l3", "adv-offspace"]
real_per_domain = 8
"""


@pytest.fixture(scope="module")
def sim_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("simcache")


def real_run(level, monkeypatch, sim_cache, submissions=120, sequential=False, **kw):
    """A real-mode run; `sequential`: one round at a time on uniform links, as `small` runs them (where both levels
    must agree)."""
    monkeypatch.setenv("MOENODE_SIM_CACHE", str(sim_cache))
    msg = level is MessageSim
    sc = parse(REAL.format(submissions=submissions, fidelity="message" if msg else "market",
                           chunk=1 if msg or sequential else 30))
    if sequential:
        sc = replace(sc, net=small().net, params=small().params)
    m = level(sc)
    for name, value in kw.items():
        setattr(m.world, name, value)
    m.run()
    return m


def models(m) -> dict[str, str]:
    return {k.hex(): m.world.label(i) for i, k in enumerate(m.pop.keys)}


@pytest.mark.slow
@pytest.mark.parametrize("level", [MessageSim, MarketSim])
def test_real_mode_spaces_and_the_off_space_cheat_never_wins(level, monkeypatch, sim_cache):
    m = real_run(level, monkeypatch, sim_cache, submissions=60 if level is MessageSim else 120)
    model, space_of = models(m), serves(m)
    assert {space_of[h] for h, mod in model.items() if mod == "minilm-l3"} == {"l3"}
    assert {space_of[h] for h, mod in model.items() if mod != "minilm-l3"} == {"main"}  # adv-offspace claims main
    for t in m.trace:
        assert {space_of[h] for h in t["members"]} == {t["space"]}
    spaces = m.rec.summary(0.0, m.world.kind)["spaces"]
    assert spaces["main"]["cheat_wins"] == {"adv-offspace": 0} and spaces["main"]["certified"] > 0
    assert set(spaces["main"]["wins"]) <= {"minilm-l6", "spec-code", "spec-man"}
    assert set(spaces["l3"]["wins"]) == {"minilm-l3"} and spaces["l3"]["cheat_wins_total"] == 0
    assert not any(model[t["producer"]] == "adv-offspace" for t in m.trace if t["producer"])


@pytest.mark.slow
def test_real_mode_without_the_space_check_the_off_space_cheat_wins(monkeypatch, sim_cache):
    """The check is what stops adv-offspace: it has minilm-l6's loss bit for bit, so without the check it wins."""
    m = real_run(MarketSim, monkeypatch, sim_cache, reveals_vectors=False)
    assert m.rec.summary(0.0, m.world.kind)["spaces"]["main"]["cheat_wins"]["adv-offspace"] > 0
    monkeypatch.setattr(core_round, "off_space", lambda *a: "")
    m = real_run(MessageSim, monkeypatch, sim_cache)
    assert m.rec.summary(0.0, m.world.kind)["spaces"]["main"]["cheat_wins"]["adv-offspace"] > 0


@pytest.mark.slow
def test_real_mode_levels_agree_with_the_space_check(monkeypatch, sim_cache):
    """The market level's evaluation walk with the space check is the core's: same rounds, same winners, same
    refunds (split shards) as the message level, where every member runs the core's check."""
    msg = real_run(MessageSim, monkeypatch, sim_cache, submissions=40, sequential=True)
    mk = real_run(MarketSim, monkeypatch, sim_cache, submissions=40, sequential=True)
    assert [key(t) for t in sorted(msg.trace, key=lambda t: t["k"])] == [key(t) for t in mk.trace]
    assert any(t["winner"] is None for t in mk.trace)  # a split shard: two sides that disagree, refunded
    assert msg.book.balances == mk.book.balances


@pytest.mark.parametrize("bad, why", [
    ('[sim]\nspace_mix = {b = 1}', "does not list: ['b']"),
    ('[sim]\nspace_mix = {main = -1}', "weights >= 0"),
    ('[sim]\nspace_mix = {main = 0}', "no space a positive weight"),
    ('[world]\nspaces = ["Main"]', "space ids"),
])
def test_a_bad_space_setting_is_a_clear_scenario_error(bad, why):
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
        parse(bad)
