"""Token buckets and counters (pure data; time is passed in)."""

import logging

import pytest

from moenode.net.limits import LOG_FIRST, ByteBudget, Counters, Rate, RateLimiter, TokenBucket


def test_token_bucket_burst_and_refill():
    b = TokenBucket(Rate(2.0, 3.0), now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.5)  # 0.5 s at 2/s refills one token
    assert not b.take(0.5)
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]  # refill stops at the burst


def test_rate_limiter_is_per_peer_and_kind_and_bounded():
    rl = RateLimiter({"a": Rate(0.0, 1.0), "b": Rate(0.0, 1.0)}, max_peers=2)
    assert rl.allow(b"p1", "a", 0.0) and not rl.allow(b"p1", "a", 1.0)
    assert rl.allow(b"p1", "b", 0.0)  # another kind has its own bucket
    assert rl.allow(b"p2", "a", 0.0)  # another peer too
    for i in range(10):
        rl.allow(b"x%d" % i, "a", 0.0)
    assert len(rl._buckets) <= 2 * 2


def test_counters_count_everything_and_thin_out_logs(caplog):
    c = Counters()
    with caplog.at_level(logging.WARNING, logger="moenode.net"):
        for _ in range(100):
            c.reject("rate_limited", b"\x01" * 32, "flood", where="envelope")
    assert c.rejected("rate_limited") == 100
    assert c.rejections() == {"rate_limited": 100}
    assert len(caplog.records) == LOG_FIRST + 2  # then #32 and #64
    assert all(r.peer == ("01" * 32) and r.reason == "rate_limited" for r in caplog.records)
    c.incr("sent.envelope", 3)
    assert c.snapshot() == {"rejected.rate_limited": 100, "sent.envelope": 3}


def test_byte_budget_bounds_each_peer_and_the_total():
    b = ByteBudget(total=10, per_peer=6)
    assert b.take(b"a", 6) and not b.take(b"a", 1)  # a's share is full
    assert b.take(b"b", 4) and not b.take(b"c", 1)  # the total is full
    b.give(b"a", 6)
    assert b.held == 4 and b.held_by(b"a") == 0 and b.take(b"c", 6)
    with pytest.raises(ValueError):
        b.give(b"b", 5)
    with pytest.raises(ValueError):
        ByteBudget(total=5, per_peer=6)


def test_rejections_are_tallied_per_peer_for_the_most_recent_peers():
    c = Counters(max_peers=2)
    c.reject("malformed", b"a" * 32, "x")
    c.reject("oversized", b"a" * 32, "x")
    c.reject("malformed", None, "no peer")
    c.reject("malformed", b"b" * 32, "x")
    assert c.peer_rejections(b"a" * 32) == 2 and c.peer_rejections(b"b" * 32) == 1
    c.reject("malformed", b"c" * 32, "x")  # a is the least recently refused: forgotten
    assert c.peer_rejections(b"a" * 32) == 0 and c.rejected("malformed") == 4
