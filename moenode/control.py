"""The node's local control API: HTTP/1.1 with JSON bodies on 127.0.0.1 only (trio + h11).

Contract (what `moenode submit/status/transfer/stake` and the testnet rely on):

    GET  /status    200 {"peer_id", "account", "network", "addrs", "peers": int, "peer_accounts", "epoch", "model",
                         "model_id", "stake", "voting_power", "balance", "sequence", "rounds": {status: count, ...,
                         "active"}, "submissions", "wins", "certificates", "proxies": {"sent", "served", "refused",
                         "fallbacks", "wins"}, "strikes", "rejections": {reason: count}, "sync": {"state", ...},
                         "index": {"entries", "producers"}, "latency_ms": {"rounds", "p50", "max"}, "adverts",
                         "uptime_s"}
    GET  /metrics   200 Prometheus text exposition (a per-node CollectorRegistry)
    POST /submit    {"texts": [str, ...], "fee"?: int}
                    200 {"embeddings": base64 of items x dim little-endian float32, "dim", "items", "winner": hex,
                         "producer": hex, "model_id": hex, "loss": float, "loss_micro": int, "shard_id": hex,
                         "certificate": hex (canonical Certificate), "elapsed_ms", "attempts": [{"shard_id",
                         "status", "reason", "refunded", "elapsed_ms", "pay_ms"}, ...]}
                    402 {"error"} payment could not be certified; 502 {"error", "attempts"} no certificate
    POST /transfer  {"to": hex account, "amount": int}  200 {"order_id": hex, "balance": int}
    POST /stake     {"amount": int, "model"?: str}      200 {"order_id": hex, "balance": int, "bonding": int}

Every error is {"error": message} with a 4xx/5xx status. Bodies are capped at 8 MiB. The server binds 127.0.0.1
(never a public interface): it moves the node's money, so only local processes may reach it.
"""

from __future__ import annotations

import base64
import json
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import h11
import trio

if TYPE_CHECKING:
    from moenode.node.daemon import Node

log = logging.getLogger("moenode.control")

MAX_BODY = 8 << 20
READ_CHUNK = 65536
IDLE_TIMEOUT = 60.0


class HTTPError(Exception):
    def __init__(self, status: int, message: str, extra: dict | None = None):
        super().__init__(message)
        self.status, self.extra = status, extra or {}


async def serve(node: Node, port: int = 0, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    bound = listeners[0].socket.getsockname()[1]
    url = f"http://127.0.0.1:{bound}"
    registry = make_registry(node)
    task_status.started(url)
    await trio.serve_listeners(partial(_connection, node, registry), listeners)


async def _connection(node: Node, registry: Any, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    try:
        while True:
            with trio.move_on_after(IDLE_TIMEOUT) as idle:
                req, body = await _read_request(conn, stream)
            if idle.cancelled_caught or req is None:
                return
            status, ctype, payload = await _route(node, registry, req, body)
            headers = [("content-type", ctype), ("content-length", str(len(payload))), ("server", "moenode")]
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
            await stream.send_all(conn.send(h11.Data(data=payload)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as e:
        log.debug("control connection ended: %r", e)
    finally:
        with trio.move_on_after(1):
            await stream.aclose()


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request | None, bytes]:
    req: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(READ_CHUNK)
            conn.receive_data(data)  # b"" marks the end of the stream
            if not data and req is None:
                return None, b""
            continue
        if isinstance(event, h11.Request):
            req = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            return req, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""


def _json(status: int, obj: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(obj).encode()


async def _route(node: Node, registry: Any, req: h11.Request, body: bytes) -> tuple[int, str, bytes]:
    method, path = req.method.decode(), req.target.decode().split("?", 1)[0]
    routes = {
        ("GET", "/status"): lambda: _status(node),
        ("POST", "/submit"): lambda: _submit(node, _body(body)),
        ("POST", "/transfer"): lambda: _transfer(node, _body(body)),
        ("POST", "/stake"): lambda: _stake(node, _body(body)),
    }
    try:
        if (method, path) == ("GET", "/metrics"):
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
        handler = routes.get((method, path))
        if handler is None:
            known = {p for _, p in routes} | {"/metrics"}
            raise HTTPError(405 if path in known else 404, f"{method} {path} is not part of the control API")
        return _json(200, await handler())
    except HTTPError as e:
        return _json(e.status, {"error": str(e), **e.extra})
    except Exception as e:  # a bug must not take the control server down; say what failed
        log.exception("control %s %s failed", method, path)
        return _json(500, {"error": f"internal error: {e!r:.300}"})


def _body(body: bytes) -> dict:
    try:
        obj = json.loads(body or b"{}")
    except ValueError as e:
        raise HTTPError(400, f"the body is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise HTTPError(400, "the body must be a JSON object")
    return obj


def _int(obj: dict, key: str, default: int | None = None, low: int = 1) -> int:
    v = obj.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < low or v >= 1 << 62:
        raise HTTPError(400, f"{key!r} must be an integer >= {low}")
    return v


async def _status(node: Node) -> dict:
    return node.status()


async def _submit(node: Node, obj: dict) -> dict:
    from moenode.node.payments import PaymentError
    from moenode.node.rounds import SubmitError

    texts = obj.get("texts")
    p = node.params
    if not isinstance(texts, list) or not 1 <= len(texts) <= p.max_batch_items:
        raise HTTPError(400, f"'texts' must be a list of 1..{p.max_batch_items} strings")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise HTTPError(400, f"texts[{i}] must be a non-empty string")
        if len(t.encode("utf-8")) > p.max_item_bytes:
            raise HTTPError(400, f"texts[{i}] exceeds {p.max_item_bytes} bytes")
    fee = _int(obj, "fee", node.config.submit_fee, low=max(1, p.min_fee))
    extra = set(obj) - {"texts", "fee"}
    if extra:
        raise HTTPError(400, f"unknown fields {sorted(extra)}")
    assert node.rounds is not None
    try:
        final, attempts = await node.rounds.submit(texts, fee, node.config.submit_attempts)
    except PaymentError as e:
        raise HTTPError(402, f"payment failed: {e}") from None
    except SubmitError as e:
        raise HTTPError(502, str(e), {"attempts": [a.summary() for a in e.attempts]}) from None
    out = final.outcome
    assert out is not None and out.certificate is not None and out.winner_reveal is not None
    report = out.certificate.report
    payload = out.winner_reveal.msg.submission.payload  # type: ignore[attr-defined]
    return {
        "embeddings": base64.b64encode(payload.embeddings).decode(), "dim": payload.dim,
        "items": len(payload.item_losses), "winner": report.winner.hex(), "producer": report.producer.hex(),
        "model_id": report.model_id.hex(), "loss": report.loss_micro / 1e6, "loss_micro": report.loss_micro,
        "shard_id": report.shard_id.hex(), "certificate": out.certificate.encode().hex(),
        "elapsed_ms": sum(a.elapsed_ms for a in attempts), "attempts": [a.summary() for a in attempts],
    }


def _account(v: Any) -> bytes:
    try:
        b = bytes.fromhex(v) if isinstance(v, str) else b""
    except ValueError:
        b = b""
    if len(b) != 32:
        raise HTTPError(400, "'to' must be a 64-hex-digit account id")
    return b


async def _transfer(node: Node, obj: dict) -> dict:
    from moenode.node.payments import PaymentError

    to, amount = _account(obj.get("to")), _int(obj, "amount")
    if to == node.account:
        raise HTTPError(400, "cannot transfer to yourself")
    bal = node.payments.ledger.balance(node.account)
    if amount > bal:
        raise HTTPError(400, f"amount {amount} exceeds the balance {bal}")
    try:
        cert = await node.payments.transfer(to, amount)
    except PaymentError as e:
        raise HTTPError(402, str(e)) from None
    return {"order_id": cert.id.hex(), "balance": node.payments.ledger.balance(node.account)}


async def _stake(node: Node, obj: dict) -> dict:
    from moenode.node.payments import PaymentError

    amount = _int(obj, "amount")
    model = obj.get("model")
    if model is not None and model != node.config.model:
        raise HTTPError(400, f"this node serves {node.config.model!r}; change config.toml to serve {model!r}")
    bal = node.payments.ledger.balance(node.account)
    if amount > bal:
        raise HTTPError(400, f"amount {amount} exceeds the balance {bal}")
    try:
        cert = await node.payments.stake(amount)
    except PaymentError as e:
        raise HTTPError(402, str(e)) from None
    led = node.payments.ledger
    return {"order_id": cert.id.hex(), "balance": led.balance(node.account),
            "bonding": led.bonding.get(node.account, 0)}


# metrics ------------------------------------------------------------------------------------------------------------------
def make_registry(node: Node) -> Any:
    """A registry of this node only, read at scrape time (several nodes can share one process)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class NodeCollector:
        def collect(self):  # noqa: ANN202 - prometheus_client's protocol
            for name, value in sorted(node.counters().items()):
                c = CounterMetricFamily(f"moenode_{_metric_name(name)}", f"count of {name}")
                c.add_metric([], value)
                yield c
            st = node.status()
            for key in ("peers", "balance", "stake", "voting_power", "epoch", "strikes", "wins"):
                g = GaugeMetricFamily(f"moenode_{key}", f"current {key}")
                g.add_metric([], st[key])
                yield g
            g = GaugeMetricFamily("moenode_index_entries", "winner index entries")
            g.add_metric([], st["index"]["entries"])
            yield g
            rej = CounterMetricFamily("moenode_rejected", "peer messages rejected, by reason", labels=["reason"])
            for reason, v in sorted(st["rejections"].items()):
                rej.add_metric([reason], v)
            yield rej

    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector())
    return reg


def _metric_name(name: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in name).lower()
    return out[:-6] if out.endswith("_total") else out
