"""Shard draws at scale: the exact `selection.sample_shard`, in O(n log N) per shard instead of O(n N).

Theory of operation: `sample_shard` walks the pool (sorted by pubkey) accumulating voting power and takes the first
entry whose running sum exceeds `r = draw_index(seed, i, total)`, then removes it. With the prefix sums `C` of the
full pool and the removed set R, the running sum over the remaining pool at position j is `C[j] - W(j)`, where W(j)
is the power of removed entries at positions <= j. The entry taken is the smallest j with `C[j] - W(j) > r`; it is
found by the fixed-point iteration `j <- bisect(C, r + W(j))`, which only moves forward and stops at that j (a
removed position never satisfies the inequality first, because the sum does not grow across it). The draws
themselves call the real `draw_index`, so the result is bit-for-bit `sample_shard` (tests/sim/test_draw.py checks
it against the original on random stake tables).
"""

from bisect import bisect_right, insort
from itertools import accumulate

from moenode.core.selection import draw_index


class ShardSampler:
    """Built once per epoch from that epoch's voting power."""

    def __init__(self, power: dict[bytes, int]):
        pool = sorted((pk, vp) for pk, vp in power.items() if vp > 0)
        self.keys = [pk for pk, _ in pool]
        self.vp = [vp for _, vp in pool]
        self.cum = list(accumulate(self.vp))
        self.total = self.cum[-1] if self.cum else 0

    def indices(self, shard_seed: bytes, n: int) -> list[int]:
        """Pool positions of the drawn members, in draw order."""
        cum, vp = self.cum, self.vp
        removed: list[int] = []
        taken: list[int] = []
        total = self.total
        for i in range(min(n, len(cum))):
            r = draw_index(shard_seed, i, total)
            j = bisect_right(cum, r)
            while True:
                w = 0
                for k in removed:
                    if k > j:
                        break
                    w += vp[k]
                j2 = bisect_right(cum, r + w)
                if j2 == j:
                    break
                j = j2
            insort(removed, j)
            taken.append(j)
            total -= vp[j]
        return taken

    def sample(self, shard_seed: bytes, n: int) -> list[bytes]:
        """Exactly `sample_shard(power, shard_seed, n)`."""
        return sorted(self.keys[j] for j in self.indices(shard_seed, n))
