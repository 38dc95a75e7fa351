from collections import Counter
from math import comb

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moenode.core.crypto import H
from moenode.core.selection import quorum, sample_shard, shard_size, voting_power

KNOWN = {3: (3, 2), 4: (3, 2), 7: (4, 3), 10: (5, 4), 20: (8, 7), 50: (17, 16), 100: (24, 22), 1000: (33, 30)}


@pytest.mark.parametrize("N", sorted(KNOWN))
def test_shard_size_known_values(N):
    assert shard_size(N) == KNOWN[N]


def test_shard_size_meets_the_failure_bound():
    for N in (5, 30, 77, 300):
        n, q = shard_size(N)
        K = N // 3
        if n >= 3 and n < N:
            tail = sum(comb(K, k) * comb(N - K, n - k) for k in range(q, min(K, n) + 1))
            assert 10**11 * tail <= comb(N, n)


def test_small_networks():
    assert shard_size(1) == (1, 1)
    assert shard_size(2) == (2, 2)
    assert quorum(1) == 1 and quorum(3) == 2 and quorum(10) == 9
    with pytest.raises(ValueError):
        shard_size(0)


@given(st.dictionaries(st.binary(min_size=32, max_size=32), st.integers(0, 10**12), min_size=1, max_size=60))
def test_voting_power_totals_and_caps(stakes):
    power = voting_power(stakes)
    staked = [pk for pk, s in stakes.items() if s > 0]
    if not staked:
        assert power == {}
        return
    assert sum(power.values()) == 10_000
    assert set(power) == set(staked)
    cap = max(1000, -(-10_000 // len(staked)))
    if len(staked) * cap >= 10_000:
        assert max(power.values()) <= cap


def test_voting_power_proportional_when_uncapped():
    stakes = {bytes([i]) * 32: 100 for i in range(20)}
    assert set(voting_power(stakes).values()) == {500}


def test_sample_shard_is_deterministic_sorted_and_weighted():
    power = voting_power({bytes([i]) * 32: (1000 if i < 5 else 10) for i in range(30)})
    s1 = sample_shard(power, H("shard", b"a"), 5)
    assert s1 == sample_shard(power, H("shard", b"a"), 5) == sorted(s1) and len(set(s1)) == 5
    counts: Counter = Counter()
    for i in range(300):
        counts.update(sample_shard(power, H("shard", i.to_bytes(4, "big")), 3))
    # stake is capped at 1000 power each for the 5 heavy nodes, still 5x the light ones' 200
    heavy = [counts[bytes([i]) * 32] for i in range(5)]
    light = [counts[bytes([i]) * 32] for i in range(5, 30)]
    assert min(heavy) > max(light)


def test_sample_more_than_pool():
    power = voting_power({b"a" * 32: 1, b"b" * 32: 1})
    assert sample_shard(power, b"s" * 32, 5) == [b"a" * 32, b"b" * 32]
