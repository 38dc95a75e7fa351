"""Per-peer token buckets and rejection counters.

Theory of operation: every inbound unit of work (an envelope, a request, a gossip message) first takes one token
from the sending peer's bucket for that kind. A bucket holds at most `burst` tokens and refills at `rate` per
second; an empty bucket means the unit is rejected, counted as `rate_limited` and logged with the peer id. Time is
passed in (`now`, seconds, from trio's clock in the caller), so the buckets are plain data and easy to test.
The table of buckets is bounded: the least recently used peer is forgotten first.

`Counters` is the one place where the networking layer counts what it did and what it refused. `snapshot()` is a
plain `dict[str, int]` (`rejected.<reason>`, `<event>`) that the node exports as it likes. Every rejection is
counted; the first 20 of a reason are logged, then only the 32nd, 64th, 128th, ... so a flood cannot flood the log.
"""

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass

log = logging.getLogger("moenode.net")
LOG_FIRST = 20  # rejections of one reason logged in full before logging thins out


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

    def __init__(self, limits: dict[str, Rate], max_peers: int = 4096):
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


def short(peer: bytes | None) -> str:
    return peer.hex()[:16] if peer else "-"


class Counters:
    """Event and rejection counts. `reject` also logs a structured record carrying the peer id."""

    def __init__(self) -> None:
        self._c: Counter[str] = Counter()

    def incr(self, name: str, n: int = 1) -> None:
        self._c[name] += n

    def reject(self, reason: str, peer: bytes | None, detail: str, *, where: str = "") -> None:
        key = "rejected." + reason
        self._c[key] += 1
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
            extra={"peer": peer.hex() if peer else None, "reason": reason, "where": where},
        )

    def rejected(self, reason: str) -> int:
        return self._c["rejected." + reason]

    def get(self, name: str) -> int:
        return self._c[name]

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self._c.items()))

    def rejections(self) -> dict[str, int]:
        return {k.removeprefix("rejected."): v for k, v in sorted(self._c.items()) if k.startswith("rejected.")}
