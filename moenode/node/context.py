"""What every part of the daemon shares: who we are, the network's rules, the clock, the counters, and two doors.

Theory of operation: the daemon (`moenode.node.daemon`) is the composition root. It builds one frozen `Context`
and hands it, with the few collaborators each part uses, to the parts (`rounds`, `payments`, `epochs`, `sync`,
`certificates`, `adverts`); no part holds the daemon or reaches through it.

* `signer`, `genesis` (so the network id and the params) name this node and its network.
* `clock` is the one clock: `clock.now_ms()` is wall time in integer milliseconds (what the protocol's epochs and
  deadlines are written in), and every timer is trio's (`trio.sleep`, `trio.move_on_after`, `trio.current_time`),
  so a test that runs a part under `trio.testing.MockClock` with a `Clock.following_trio` wall clock runs it on
  virtual time, timers and wall clock together.
* `metrics` counts events by name (exported by `moenode.node.metrics`).
* `reject(peer, error, where)` counts a peer's bad message by reason and logs it with the peer id.
* `spawn(fn, *args)` starts a task in the node's nursery (tasks end with the node).

`NetLink` holds the libp2p host once the daemon has opened it (parts are built before the host exists, and some
tests run them with a host of their own); `Tasks` holds the nursery `spawn` starts tasks in.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from moenode.core.crypto import Signer
from moenode.core.errors import ProtocolError
from moenode.core.genesis import Genesis, Params

REASON_ALIASES = {"schema": "malformed"}  # the node reports schema violations as malformed messages


class Metrics:
    """The node's own event counters (the net layer keeps its own; /metrics exports both)."""

    def __init__(self) -> None:
        self.c: Counter[str] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        self.c[name] += n

    def get(self, name: str) -> int:
        return self.c[name]


def wall_ms() -> int:
    """The system's wall clock in integer milliseconds."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Clock:
    """Wall time for the protocol (`now_ms`); timers run on trio's clock, which a test may replace."""

    now_ms: Callable[[], int] = wall_ms

    @staticmethod
    def timer() -> float:
        """Seconds on trio's clock (monotonic; virtual under a MockClock): for pacing and intervals."""
        return trio.current_time()

    @classmethod
    def following_trio(cls, start_ms: int, trio_start: float = 0.0) -> Clock:
        """A wall clock that reads `start_ms` at trio time `trio_start` and then moves with trio's clock, so that
        under a MockClock the protocol's deadlines and the node's timers share one virtual time."""
        return cls(lambda: start_ms + round((trio.current_time() - trio_start) * 1000))


class Tasks:
    """The nursery the node's tasks run in, once it runs."""

    def __init__(self) -> None:
        self.nursery: trio.Nursery | None = None

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self.nursery is not None, "the node is not running"
        self.nursery.start_soon(fn, *args)


class NetLink:
    """The node's libp2p host (`moenode.net.NetHost`), or None while none is open."""

    def __init__(self) -> None:
        self.host: Any = None

    def connected(self) -> list[bytes]:
        return list(self.host.connected()) if self.host is not None else []

    def reject(self, peer: bytes | None, e: ProtocolError, where: str) -> None:
        """Count a peer's bad message by reason, logged with the peer id (by the net layer's counters)."""
        if self.host is not None:
            self.host.counters.reject(REASON_ALIASES.get(e.reason, e.reason), peer, str(e), where=where)


@dataclass(frozen=True)
class Context:
    signer: Signer
    genesis: Genesis
    clock: Clock
    metrics: Metrics
    reject: Callable[[bytes | None, ProtocolError, str], None]
    spawn: Callable[..., None]

    @property
    def account(self) -> bytes:
        return self.signer.public_key

    @property
    def net_id(self) -> bytes:
        return self.genesis.network_id

    @property
    def params(self) -> Params:
        return self.genesis.params

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def epoch(self) -> int:
        """The current epoch (0 before the genesis time)."""
        return max(0, self.genesis.epoch(self.clock.now_ms()))
