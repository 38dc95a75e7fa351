"""The two fidelity levels agree: same shards, same winners and producers, same balances and stakes."""

import pytest

from moenode.sim.config import override
from moenode.testing.simkit import small

from moenode.sim.market import MarketSim
from moenode.sim.message import MessageSim


def both(sc):
    msg = MessageSim(sc)
    msg.run()
    mk = MarketSim(sc)
    mk.run()
    return msg, mk


def key(t):
    return (t["shard_id"], t["members"], t["winner"], t["producer"], t["loss"], t["strikes"])


@pytest.mark.parametrize("extra", ["", "slow = 0.15\nslow_factor = 200"])
def test_levels_agree_on_winners_and_balances(extra):
    msg, mk = both(small(extra=extra))
    assert len(msg.trace) == len(mk.trace) == 40
    assert [key(t) for t in sorted(msg.trace, key=lambda t: t["k"])] == [key(t) for t in mk.trace]
    proxied = sum(t["winner"] != t["producer"] for t in mk.trace)
    assert proxied > 0  # the comparison covers proxied rounds, not only self-served ones
    assert msg.book.balances == mk.book.balances
    assert msg.book.stakes == mk.book.stakes
    msg.book.check()
    mk.book.check()
    if extra:
        assert any(t["strikes"] for t in mk.trace)  # and latency strikes


def test_levels_agree_under_byzantine_and_slow_nodes():
    sc = override(small(nodes=30, submissions=30), {
        "adversary.equivocate": 0.05, "adversary.fake": 0.05, "adversary.withhold": 0.05,
        "adversary.collapsed": 0.05, "world.slow": 0.1, "world.slow_factor": 200})
    msg, mk = both(sc)
    assert [key(t) for t in sorted(msg.trace, key=lambda t: t["k"])] == [key(t) for t in mk.trace]
    assert any(t["winner"] is None for t in mk.trace) and any(t["winner"] for t in mk.trace)
    assert msg.book.balances == mk.book.balances and msg.book.stakes == mk.book.stakes
    cls = {msg.pop.keys[i]: msg.pop.node_class(i) for i in range(len(msg.pop.keys))}
    stake0 = sc.sim.stake
    assert all(mk.book.stakes.get(k, 0) <= stake0 // 2 for k, c in cls.items() if c == "equivocate")
