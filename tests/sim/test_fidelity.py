"""The two fidelity levels agree: same shards, same winners and producers, same balances and stakes."""

import pytest

from sim.market import MarketSim
from sim.message import MessageSim
from simkit import small


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
