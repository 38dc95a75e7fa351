"""Per-peer token buckets, a byte budget, and rejection counters.

Theory of operation: every inbound unit of work (an envelope, a request, a gossip message) first takes one token
from the sending peer's bucket for that kind. A bucket holds at most `burst` tokens and refills at `rate` per
second; an empty bucket means the unit is rejected, counted as `rate_limited` and logged with the peer id. Time is
passed in (`now`, seconds, from trio's clock in the caller), so the buckets are plain data and easy to test.
The table of buckets is bounded: the least recently used peer is forgotten first.

`ByteBudget` bounds memory that peers make us hold (bytes of messages still arriving): at most `total` bytes in
all and `per_peer` for any one peer. It is plain data too; waiting for room is the caller's business.

`Counters` is the one place where the networking layer counts what it did and what it refused. `snapshot()` is a
plain `dict[str, int]` (`rejected.<reason>`, `<event>`) that the node exports as it likes. Every rejection is
counted, in total by reason and against the peer (`peer_rejections`, for the most recently seen peers); the first
20 of a reason are logged, then only the 32nd, 64th, 128th, ... so a flood cannot flood the log.
"""

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass

log = logging.getLogger("moenode.net")
LOG_FIRST = 20  # rejections of one reason logged in full before logging thins out
MAX_PEERS = 4096  # peers remembered by the rate limiter and the per-peer tallies


@dataclass(frozen=True)
class Rate:
    """`rate` tokens per second, at most `burst` banked."""

    rate: float
    burst: float


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, limit: Rate, now: float):
        self.rate, self.burst = limit.rate, limit.burst
        self.tokens, self.stamp = limit.burst, now

    def take(self, now: float, cost: float = 1.0) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class RateLimiter:
    """One bucket per (peer, kind); at most `max_peers` peers remembered."""

    def __init__(self, limits: dict[str, Rate], max_peers: int = MAX_PEERS):
        self.limits = limits
        self.max_peers = max_peers
        self._buckets: OrderedDict[tuple[bytes, str], TokenBucket] = OrderedDict()

    def allow(self, peer: bytes, kind: str, now: float) -> bool:
        key = (peer, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.limits[kind], now)
            if len(self._buckets) > self.max_peers * max(1, len(self.limits)):
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)


class ByteBudget:
    """Bytes held on behalf of peers: at most `total` in all and `per_peer` for one peer."""

    def __init__(self, total: int, per_peer: int):
        if not 0 < per_peer <= total:
            raise ValueError("a byte budget needs 0 < per_peer <= total")
        self.total, self.per_peer = total, per_peer
        self.held = 0
        self._by_peer: dict[bytes, int] = {}

    def take(self, peer: bytes, n: int) -> bool:
        mine = self._by_peer.get(peer, 0)
        if self.held + n > self.total or mine + n > self.per_peer:
            return False
        self.held += n
        self._by_peer[peer] = mine + n
        return True

    def give(self, peer: bytes, n: int) -> None:
        left = self._by_peer[peer] - n
        if left < 0:
            raise ValueError("returned more than was taken")
        if left:
            self._by_peer[peer] = left
        else:
            del self._by_peer[peer]
        self.held -= n

    def held_by(self, peer: bytes) -> int:
        return self._by_peer.get(peer, 0)


def short(peer: bytes | None) -> str:
    return peer.hex()[:16] if peer else "-"


class Counters:
    """Event and rejection counts. `reject` also logs a structured record carrying the peer id."""

    def __init__(self, max_peers: int = MAX_PEERS) -> None:
        self._c: Counter[str] = Counter()
        self._by_peer: OrderedDict[bytes, int] = OrderedDict()
        self._max_peers = max_peers

    def incr(self, name: str, n: int = 1) -> None:
        self._c[name] += n

    def reject(
        self, reason: str, peer: bytes | None, detail: str, *, where: str = "", exc: BaseException | None = None
    ) -> None:
        """Count a refused input by reason and against `peer`; log it (with `exc`'s traceback, if given)."""
        key = "rejected." + reason
        self._c[key] += 1
        if peer is not None:
            self._by_peer[peer] = self._by_peer.pop(peer, 0) + 1
            if len(self._by_peer) > self._max_peers:
                self._by_peer.popitem(last=False)
        n = self._c[key]
        if n > LOG_FIRST and n & (n - 1):  # a flood logs the first few, then only the 2^k-th: bounded log volume
            return
        log.warning(
            "rejected %s from %s%s: %s (#%d)",
            reason,
            short(peer),
            f" on {where}" if where else "",
            detail,
            n,
            exc_info=exc,
            extra={"peer": peer.hex() if peer else None, "reason": reason, "where": where},
        )

    def peer_rejections(self, peer: bytes) -> int:
        """Inputs refused from `peer` (0 for a peer not among the most recently refused)."""
        return self._by_peer.get(peer, 0)

    def rejected(self, reason: str) -> int:
        return self._c["rejected." + reason]

    def get(self, name: str) -> int:
        return self._c[name]

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self._c.items()))

    def rejections(self) -> dict[str, int]:
        return {k.removeprefix("rejected."): v for k, v in sorted(self._c.items()) if k.startswith("rejected.")}
