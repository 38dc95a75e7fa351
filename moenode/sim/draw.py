"""Shard draws at scale: the exact `selection.sample_shard`, in O(n log N) per shard instead of O(n N).

Theory of operation: `sample_shard` walks the pool (sorted by pubkey) accumulating voting power and takes the first
entry whose running sum exceeds `r = draw_index(seed, i, total)`, then removes it. With the prefix sums `C` of the
full pool and the removed set R, the running sum over the remaining pool at position j is `C[j] - W(j)`, where W(j)
is the power of removed entries at positions <= j. The entry taken is the smallest j with `C[j] - W(j) > r`.
Walking the removed positions k in ascending order, every k whose preceding sum `C[k-1]` is <= the running target
lies at or before the answer, so its power joins the target; the first k beyond it ends the walk, and
`bisect(C, target)` is the answer (never a removed position: the target includes every removed entry up to it).
The draws hash exactly the bytes of `draw_index`, so the result is bit-for-bit `sample_shard`
(tests/sim/test_draw.py checks it against the original on random stake tables).

A round's shard is drawn from the stake that serves its space: `SpaceShards` takes each space's pool from the
daemon's own rule (`SpaceBook.power_in`, as `ShardContext.derive` does) and sizes the shard by that pool
(`shard_size`); a space no staked node serves has no pool, and a submission to it is refused before it pays.
"""

import hashlib
from bisect import bisect_right, insort
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from moenode.core.selection import shard_size
from moenode.core.spaces import Space, SpaceBook

DRAW_PREFIX = b"moenode/draw\x00"  # H("draw", .) inlined: the same bytes, without two calls per draw


class ShardSampler:
    """Built once per epoch from that epoch's voting power."""

    def __init__(self, power: dict[bytes, int]):
        pool = sorted((pk, vp) for pk, vp in power.items() if vp > 0)
        self.keys = [pk for pk, _ in pool]
        self.vp = [vp for _, vp in pool]
        self.cum = list(accumulate(self.vp))
        self.before = [0, *self.cum[:-1]]  # power of the entries before each position
        self.total = self.cum[-1] if self.cum else 0

    def indices(self, shard_seed: bytes, n: int) -> list[int]:
        """Pool positions of the drawn members, in draw order."""
        cum, before, vp = self.cum, self.before, self.vp
        removed: list[int] = []  # sorted positions
        taken: list[int] = []
        total = self.total
        blake, prefix = hashlib.blake2b, DRAW_PREFIX + shard_seed
        for i in range(min(n, len(cum))):
            t = int.from_bytes(blake(prefix + i.to_bytes(4, "big"), digest_size=32).digest(), "big") % total
            for k in removed:  # a removed entry at or before the answer shifts the target by its power
                if before[k] > t:
                    break
                t += vp[k]
            j = bisect_right(cum, t)
            insort(removed, j)
            taken.append(j)
            total -= vp[j]
        return taken

    def sample(self, shard_seed: bytes, n: int) -> list[bytes]:
        """Exactly `sample_shard(power, shard_seed, n)`."""
        return sorted(self.keys[j] for j in self.indices(shard_seed, n))


@dataclass(frozen=True)
class SpacePool:
    """One space's shard draw in one epoch: its sampler, shard size and quorum, and each pool entry's node."""

    space: Space
    sampler: ShardSampler
    n: int
    q: int
    node: np.ndarray  # pool position -> node index


class SpaceShards:
    """Per space, the pool its shards are drawn from in one epoch (built from that epoch's voting power)."""

    def __init__(self, book: SpaceBook, power: dict[bytes, int], index_of: dict[bytes, int]):
        self.pools: dict[str, SpacePool] = {}
        for space in book.spaces:
            sampler = ShardSampler(book.power_in(power, space.id))
            if sampler.keys:
                n, q = shard_size(len(sampler.keys))
                node = np.array([index_of[k] for k in sampler.keys], dtype=np.int64)
                self.pools[space.id] = SpacePool(space, sampler, n, q, node)

    def get(self, space: str) -> SpacePool | None:
        """The space's pool, or None when no staked node serves it."""
        return self.pools.get(space)


class Uniforms:
    """Uniform doubles from one generator, drawn in blocks of `block`.

    The values are exactly those of one `rng.random()` call per number (and of `rng.random(n)` for `many`): the
    generator's double stream does not depend on how the calls are sized. One call per message costs more than
    the rest of the link model, hence the blocks. Every draw from `rng` must then go through this object.
    """

    def __init__(self, rng: np.random.Generator, block: int = 4096):
        self.rng, self.block = rng, block
        self.buf: list[float] = []
        self.pos = 0

    def one(self) -> float:
        pos = self.pos
        if pos == len(self.buf):
            self.buf, pos = self.rng.random(self.block).tolist(), 0
        self.pos = pos + 1
        return self.buf[pos]

    def many(self, n: int) -> np.ndarray:
        left = self.buf[self.pos:self.pos + n]
        self.pos += len(left)
        if len(left) == n:
            return np.array(left, dtype=np.float64)
        return np.concatenate([np.array(left, dtype=np.float64), self.rng.random(n - len(left))])
