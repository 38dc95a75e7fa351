"""Voting power, shard size and quorum, and stake-weighted shard sampling (SPEC sections 2-3, exact).

Everything here is integer arithmetic on public inputs, so anyone holding an epoch's stake table and a submission
recomputes the same shard with no messages. The algorithms are fixed bit for bit; golden vectors pin them.
"""

from functools import lru_cache
from math import ceil, comb

from moenode.core.codec import canonical
from moenode.core.crypto import H

TOTAL_POWER = 10_000
CERT_THRESHOLD = 6_667  # voting power out of TOTAL_POWER that certifies an order or a checkpoint
FAILURE_BOUND = 10**11  # P[a byzantine third reaches quorum] <= 1e-11


def voting_power(stakes: dict[bytes, int]) -> dict[bytes, int]:
    """Integers totalling 10,000 over members with stake > 0, each capped at max(1000, ceil(10000/N))."""
    uncapped = {pk: s for pk, s in stakes.items() if s > 0}
    if not uncapped:
        return {}
    cap = max(1000, ceil(TOTAL_POWER / len(uncapped)))
    power: dict[bytes, int] = {}
    remaining = TOTAL_POWER
    while uncapped:
        total = sum(uncapped.values())
        over = [pk for pk, s in uncapped.items() if remaining * s // total >= cap]
        if not over:
            break
        for pk in over:
            power[pk] = cap
            remaining -= cap
            del uncapped[pk]
    if uncapped:
        total = sum(uncapped.values())
        floors = {pk: remaining * s // total for pk, s in uncapped.items()}
        left = remaining - sum(floors.values())
        for pk in sorted(uncapped, key=lambda pk: (-(remaining * uncapped[pk] % total), pk))[:left]:
            floors[pk] += 1
        power |= floors
    return power


def quorum(n: int) -> int:
    """q(n) = min(n-1, ceil(0.9 n)) for n >= 3, else n."""
    if n < 3:
        return n
    return min(n - 1, -(-n * 9000 // 10000))


@lru_cache(maxsize=4096)
def _n_hg(N: int) -> int:
    K = N // 3
    for n in range(1, N + 1):
        q = quorum(n)
        tail = sum(comb(K, k) * comb(N - K, n - k) for k in range(q, min(K, n) + 1))
        if FAILURE_BOUND * tail <= comb(N, n):
            return n
    return N


def shard_size(N: int) -> tuple[int, int]:
    """(n, q) for a network of N staked members: the smallest shard a byzantine third captures w.p. <= 1e-11."""
    if N < 1:
        raise ValueError("a shard needs at least one staked member")
    n = min(N, max(3, _n_hg(N)))
    return n, quorum(n)


def draw_index(shard_seed: bytes, i: int, total: int) -> int:
    return int.from_bytes(H("draw", shard_seed + i.to_bytes(4, "big")), "big") % total


def sample_shard(power: dict[bytes, int], shard_seed: bytes, n: int) -> list[bytes]:
    """Weighted sampling without replacement, by voting power; returns the members sorted by pubkey bytes."""
    pool = sorted((pk, vp) for pk, vp in power.items() if vp > 0)
    chosen: list[bytes] = []
    for i in range(min(n, len(pool))):
        total = sum(vp for _, vp in pool)
        r = draw_index(shard_seed, i, total)
        acc = 0
        for j, (pk, vp) in enumerate(pool):
            acc += vp
            if r < acc:
                chosen.append(pk)
                del pool[j]
                break
    return sorted(chosen)


def data_hash(items: list[bytes]) -> bytes:
    """H("data", canonical([H("item", item) ...])): the batch's identity."""
    return H("data", canonical([H("item", it) for it in items]))


def shard_seed(epoch_seed: bytes, data_hash_: bytes, nonce: bytes, pay_id: bytes) -> bytes:
    if len(nonce) != 32:
        raise ValueError("the nonce is 32 bytes")
    return H("shard", epoch_seed + data_hash_ + nonce + pay_id)
