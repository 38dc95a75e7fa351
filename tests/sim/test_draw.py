"""The fast shard sampler is bit-for-bit the protocol's sample_shard; block draws are the generator's stream."""

import random

import numpy as np

from moenode.core.crypto import H
from moenode.core.selection import sample_shard, voting_power
from moenode.sim.draw import ShardSampler, Uniforms


def test_fast_sampler_equals_sample_shard():
    rng = random.Random(3)
    for trial in range(40):
        n_nodes = rng.choice([3, 7, 20, 60, 300])
        stakes = {H("pk", bytes([trial, i % 256, i // 256])): rng.choice([0, 1, 5, 100, 1_000, 50_000])
                  for i in range(n_nodes)}
        power = voting_power(stakes) if any(stakes.values()) else {}
        if not power:
            continue
        sampler = ShardSampler(power)
        for s in range(10):
            seed = H("seed", bytes([trial, s]))
            n = rng.randrange(1, 40)
            assert sampler.sample(seed, n) == sample_shard(power, seed, n)


def test_block_draws_are_the_generators_own_stream():
    """One `random()` per number, or `random(n)`, whatever the blocks: runs stay the same for a seed."""
    ref, blocks = np.random.default_rng(5), Uniforms(np.random.default_rng(5), block=7)
    want = [ref.random() for _ in range(30)] + ref.random(11).tolist() + [ref.random() for _ in range(9)]
    got = [blocks.one() for _ in range(30)] + blocks.many(11).tolist() + [blocks.one() for _ in range(9)]
    assert got == want
    assert blocks.many(3).tolist() == ref.random(3).tolist()
