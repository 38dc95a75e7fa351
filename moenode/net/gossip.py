"""Gossip: GossipSub topics for small, network-wide control messages.

Theory of operation: four topics, each namespaced by the network id so testnets never mix:
`moenode/<net hex16>/{adverts,certs,orders,checkpoints}`. GossipSub speaks `/meshsub/1.1.0` and `/meshsub/1.0.0`
only (1.2's IDONTWANT costs 2x CPU and 15x latency in py-libp2p), degree 6/4/12, a 1 s heartbeat, libp2p's spam
protection off (it also throttles our own publishes) and strict signing on: every message is signed by its
origin's host key, so the origin's account id is authenticated before our validators run (a message whose
signature fails is counted as `bad_signature` against the peer that forwarded it, and dropped).

Each subscribed topic gets a validator that runs before a message is delivered or forwarded: size cap of the
topic, a per-forwarder token bucket, the origin must be an Ed25519 peer, then the caller's `check(data) -> bool`
(it may also raise a ProtocolError to name the reason). It runs once for a message it accepts (a later copy is
dropped as seen) and again for every copy of one it refused, so each copy is counted and rate limited. A
rejection is counted and logged; the message is neither delivered nor relayed. A refusal costs only the check:
py-libp2p's own validation step, which quoted the whole message into every refusal's error, is replaced. A drain task per subscription hands accepted messages to the
caller's async `handler(origin_account_id, data)`, skipping our own publishes.

py-libp2p drops messages silently when its per-peer outbound queue (32 RPCs) or a subscription channel (32) is
full, so both are enlarged when this module is imported, and `publish` paces bursts. Gossip is for small,
infrequent messages; bulk data goes over direct streams.

What peers send is contained (`guard.py`): py-libp2p reads each inbound pubsub stream through `Guard.watch` (an RPC
frame declares at most `MAX_RPC` bytes, holds them from the partial-message budget while it arrives, and must
arrive in time), and the Pubsub and GossipSub services run their tasks through `ContainedTasks`, so a message that
makes py-libp2p raise is counted against its peer instead of stopping the service. A message whose origin key
cannot even be parsed is counted as `bad_signature`.
"""

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import trio
from libp2p.abc import IHost
from libp2p.exceptions import ValidationError
from libp2p.peer.id import ID
from libp2p.pubsub import pubsub as _pubsub_mod
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue

from moenode.core.errors import ProtocolError
from moenode.core.messages import Advert, Certificate
from moenode.net.framing import KiB, MiB
from moenode.net.guard import ContainedTasks, Guard
from moenode.net.identity import account_id_of
from moenode.net.limits import Counters, RateLimiter, short

log = logging.getLogger("moenode.net")

QUEUE_SIZE = 1024
# Process-wide: py-libp2p reads these module globals when it creates a peer queue or a subscription (the queue's
# class is replaced by a partial that sets its size).
_pubsub_mod.RpcQueue = functools.partial(RpcQueue, max_size=QUEUE_SIZE)  # type: ignore[misc,assignment]
_pubsub_mod.SUBSCRIPTION_CHANNEL_SIZE = QUEUE_SIZE

TOPICS = ("adverts", "certs", "orders", "checkpoints")
DEFAULT_TOPIC_CAPS = {
    "adverts": Advert.MAX_BYTES,
    "certs": Certificate.MAX_BYTES,
    "orders": 16 * KiB,
    "checkpoints": 256 * KiB,
}
MAX_RPC = 2 * MiB  # inbound pubsub RPC frame cap; the largest topic payload (a certificate) is under 1 MiB

GossipHandler = Callable[[bytes, bytes], Awaitable[None]]  # (origin account id, data)
Check = Callable[[bytes], bool]


def topic_name(net_id: bytes, kind: str) -> str:
    if kind not in TOPICS:
        raise ValueError(f"unknown topic {kind!r}; topics are {TOPICS}")
    return f"moenode/{net_id.hex()[:16]}/{kind}"


@dataclass(frozen=True)
class GossipConfig:
    topic_caps: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TOPIC_CAPS))
    publish_pace: float = 0.01  # seconds between two publishes of this node
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat: int = 1


class _CountingPubsub(ContainedTasks, Pubsub):
    """Pubsub that reports what strict signing drops: py-libp2p discards a message whose origin signature does not
    verify before any topic validator sees it, and says nothing (or raises, if the origin key does not parse). We
    check first (the message is then checked again by py-libp2p: gossip is small and infrequent) so that the drop
    is counted and logged like any other. Inbound streams are read through the guard's watch."""

    on_bad_signature: Callable[[ID, rpc_pb2.Message], None] = staticmethod(lambda forwarder, msg: None)
    guard: Guard

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder != self.my_id and not self._is_msg_seen(msg) and not _signature_ok(msg):
            self.on_bad_signature(msg_forwarder, msg)
            return
        await super().push_msg(msg_forwarder, msg)

    async def stream_handler(self, stream) -> None:
        async with self.guard.watch(stream, MAX_RPC) as watched:
            await super().stream_handler(watched)  # type: ignore[arg-type]

    async def validate_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """Run the topic's validators; a refusal raises a ValidationError that does not quote the message.

        py-libp2p 0.8.1 formats the whole message (protobuf text, about four characters a byte) into the error of
        every refusal: one 1.2 MB message that our validator refused held a node's event loop for 1.3 s. It also
        caches refusals by message id, so a copy sent again skipped our validator (its count and its rate limit)
        but not the formatting. Our validators are synchronous and cheap, so each copy simply runs them again."""
        for topic_validator in self.get_msg_validators(msg):
            check = topic_validator.validator
            if topic_validator.is_async:  # py-libp2p types every validator as returning bool | Awaitable[bool]
                ok = await cast(Awaitable[bool], check(msg_forwarder, msg))
            else:
                ok = cast(bool, check(msg_forwarder, msg))
            if not ok:
                raise ValidationError("refused by a topic validator")


class _ContainedGossipSub(ContainedTasks, GossipSub):
    """GossipSub whose tasks are contained (see `guard.ContainedTasks`)."""


def _signature_ok(msg: rpc_pb2.Message) -> bool:
    try:
        return bool(_pubsub_mod.signature_validator(msg))
    except Exception:  # noqa: BLE001 - py-libp2p raises whatever its key parser raised on a garbage `key`
        return False


class Gossip:
    """GossipSub and Pubsub services plus our topic validators and drain tasks."""

    def __init__(
        self, host: IHost, net_id: bytes, counters: Counters, limiter: RateLimiter, config: GossipConfig, guard: Guard
    ):
        self.host, self.net_id, self.counters, self.limiter, self.config = host, net_id, counters, limiter, config
        self.router = _ContainedGossipSub(
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=config.degree,
            degree_low=config.degree_low,
            degree_high=config.degree_high,
            heartbeat_initial_delay=0.1,
            heartbeat_interval=config.heartbeat,
            spam_protection_enabled=False,  # our validator's token bucket replaces it
        )
        self.pubsub = _CountingPubsub(host, self.router, strict_signing=True, max_inbound_rpc_size=MAX_RPC)
        self.pubsub.on_bad_signature = self._bad_signature
        self.pubsub.guard = guard
        for service in (self.pubsub, self.router):
            service.on_task_failure = (  # type: ignore[method-assign]
                lambda peer, exc, task: guard.report(exc, peer, where=f"gossip task {task}"))
        self._me = host.get_id()
        self._nursery: trio.Nursery | None = None
        self._publish_lock = trio.Lock()
        self._last_publish = -1e9

    def topic(self, kind: str) -> str:
        return topic_name(self.net_id, kind)

    def _bad_signature(self, forwarder: ID, msg: rpc_pb2.Message) -> None:
        try:
            fwd: bytes | None = account_id_of(forwarder)
        except ProtocolError:
            fwd = None
        where = "gossip/" + ",".join(t.rsplit("/", 1)[-1] for t in msg.topicIDs)[:64]
        self.counters.reject("bad_signature", fwd, "the origin's signature does not verify", where=where)

    def _validator(self, kind: str, cap: int, check: Check | None) -> Callable[[ID, rpc_pb2.Message], bool]:
        where = f"gossip/{kind}"

        def validate(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            if forwarder == self._me:  # our own publish, checked in publish()
                return True
            try:
                fwd = account_id_of(forwarder)
                if len(msg.data) > cap:
                    self.counters.reject("oversized", fwd, f"{len(msg.data)} bytes > {cap}", where=where)
                    return False
                if not self.limiter.allow(fwd, "gossip", trio.current_time()):
                    self.counters.reject("rate_limited", fwd, "gossip message dropped", where=where)
                    return False
                account_id_of(ID(msg.from_id))
                if check is not None and not check(msg.data):
                    self.counters.reject("malformed", fwd, "schema check failed", where=where)
                    return False
            except ProtocolError as e:
                self.counters.reject(e.reason, None, str(e), where=where)
                return False
            except Exception:  # a bug in the caller's check must not take the pubsub service down
                self.counters.incr("handler_error")
                log.exception("gossip validator for %s failed", kind)
                return False
            return True

        return validate

    async def subscribe(self, kind: str, handler: GossipHandler, check: Check | None = None) -> None:
        """Validate messages of topic `kind` with its cap, a per-peer rate limit and `check`; deliver accepted
        ones from other nodes to `handler(origin, data)` in a drain task that lives as long as the host."""
        if self._nursery is None:
            raise RuntimeError("subscribe inside open_host()")
        topic = self.topic(kind)
        cap = self.config.topic_caps[kind]
        self.pubsub.set_topic_validator(topic, self._validator(kind, cap, check), False)
        sub = await self.pubsub.subscribe(topic)
        self._nursery.start_soon(self._drain, kind, sub, handler)

    async def _drain(self, kind: str, sub, handler: GossipHandler) -> None:
        where = f"gossip/{kind}"
        while True:
            msg = await sub.get()
            origin_id = ID(msg.from_id)
            if origin_id == self._me:
                continue
            try:
                origin = account_id_of(origin_id)
            except ProtocolError as e:  # the validator already refused it; this is belt and braces
                self.counters.reject(e.reason, None, str(e), where=where)
                continue
            self.counters.incr(f"received.gossip.{kind}")
            try:
                await handler(origin, msg.data)
            except ProtocolError as e:
                self.counters.reject(e.reason, origin, str(e), where=where)
            except Exception:
                self.counters.incr("handler_error")
                log.exception("%s handler failed for %s", where, short(origin), extra={"peer": origin.hex()})

    async def publish(self, kind: str, data: bytes) -> None:
        """Publish to topic `kind`. Oversized data is a local bug (ValueError). Publishes are paced."""
        cap = self.config.topic_caps[kind]
        if len(data) > cap:
            raise ValueError(f"{kind}: {len(data)} bytes exceeds the topic cap of {cap}")
        async with self._publish_lock:
            wait = self._last_publish + self.config.publish_pace - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            await self.pubsub.publish(self.topic(kind), data)
            self._last_publish = trio.current_time()
        self.counters.incr(f"published.{kind}")

    def mesh_peers(self, kind: str) -> list[bytes]:
        """Accounts in our mesh for a topic (useful to wait for the mesh to form)."""
        peers = self.router.mesh.get(self.topic(kind), set())
        return [account_id_of(p) for p in peers]

    def topic_peers(self, kind: str) -> list[bytes]:
        """Connected accounts known to be subscribed to a topic."""
        peers = self.pubsub.peer_topics.get(self.topic(kind), set())
        return [account_id_of(p) for p in peers]
