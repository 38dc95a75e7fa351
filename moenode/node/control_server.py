"""The node's local control API: HTTP/1.1 with JSON bodies on 127.0.0.1 only (trio + h11), token required.

Contract (what `moenode submit/status/transfer/stake` and the testnet rely on):

    GET  /status    200 {"peer_id", "account", "network", "addrs", "peers": int, "peer_accounts", "epoch", "model",
                         "model_id", "spaces" (the spaces this node serves), "stake", "voting_power", "balance", "sequence", "rounds": {status: count, ...,
                         "active"}, "submissions", "wins", "certificates", "proxies": {"sent", "served", "refused",
                         "fallbacks", "wins"}, "strikes", "rejections": {reason: count}, "sync": {"state", ...},
                         "index": {"entries", "producers"}, "latency_ms": {"rounds", "p50", "max"}, "adverts",
                         "uptime_s"}
    GET  /metrics   200 Prometheus text exposition (a per-node CollectorRegistry)
    POST /submit    {"texts": [str, ...], "fee"?: int, "deadline_ms"?: int (members may take this long to commit;
                     0..round_abort_ms, 0 = the genesis timers), "space"?: str}
                    200 {"embeddings": base64 of items x dim little-endian float32, "dim", "items", "winner": hex,
                         "producer": hex, "model_id": hex, "space": str, "model_ids": [hex per row], "loss": float, "loss_micro": int, "shard_id": hex,
                         "certificate": hex (canonical Certificate), "shard": {"members", "signatures"},
                         "elapsed_ms", "attempts": [{"shard_id",
                         "status", "reason", "refunded", "elapsed_ms", "pay_ms"}, ...]}
                    402 {"error"} payment could not be certified; 502 {"error", "attempts"} no certificate
    POST /transfer  {"to": hex account, "amount": int}  200 {"order_id": hex, "balance": int}
    POST /stake     {"amount": int, "model"?: str}      200 {"order_id": hex, "balance": int, "bonding": int,
                                                             "spaces": [the spaces the Stake declared: the model's]}

Every error is {"error": message} with a 4xx/5xx status. Bodies are capped at 8 MiB.

Who may call it. The API moves the node's money, so a request must come from the node's operator, and binding
127.0.0.1 is not enough for that: every local user and every web page the operator opens can reach a loopback port.
So each request, /metrics included, passes four checks before anything else (`Guard`), in this order:
1. `Host` is `127.0.0.1:PORT` or `localhost:PORT` (421): a page on a DNS-rebound name carries its own host name;
2. no `Origin` header (403): browsers send one with every cross-origin POST and every fetch, scripts never need one;
3. `Authorization: Bearer TOKEN`, compared in constant time (401): the token is 32 random bytes in
   `HOME/control.token`, mode 0600, created once by the daemon and kept across restarts, so only the node's user
   (and root) can read it; the control client (`moenode.client`: the CLI, the testnet tools) reads it from the home;
4. a POST's `Content-Type` is `application/json` (415): a cross-site form or `text/plain` fetch cannot send it
   without a CORS preflight, which this server never answers.
A refused request is answered without reading its body, on a connection that then closes, and counted by reason
(`control_refused_<host|origin|token|content_type>`). `HOME/run.json`, which names the port, is 0600 too.

Anyone can connect, though, token or not, so connections are capped (`MAX_CONNECTIONS`): over the cap, a new
connection takes the place of the one that has waited longest for its next request head (counted as
`control_evicted`), and if every connection is inside a request the new one is closed (`control_refused_busy`).
So connections that send nothing cannot use up the node's file descriptors (1,100 of them cut a node running under
the usual limit of 1,024 off from its peers), and a client that sends its request at once always gets in.

Why a token and not a unix socket: the socket would give the same uid check, but Prometheus scrapes only TCP, and
every HTTP client speaks TCP; a bearer token in a 0600 file is what Prometheus' `credentials_file` expects.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import h11
import trio

from moenode.node.context import Metrics

if TYPE_CHECKING:
    from moenode.node.config import Config
    from moenode.node.payments import Payments
    from moenode.node.submitter import Submitter

log = logging.getLogger("moenode.control")

MAX_BODY = 8 << 20
READ_CHUNK = 65536
IDLE_TIMEOUT = 60.0
MAX_CONNECTIONS = 64  # control connections open at once


@dataclass(frozen=True)
class Operations:
    """All the control API sees of the node: its token and counters, /status and the counters /metrics exports, and
    the parts that carry out a submission (`submitter`), a transfer or a stake (`payments`), with the node's config
    (the default fee and attempts of a submission, the model a stake names). A server without them serves /status
    and /metrics only."""

    control_token: str
    metrics: Metrics
    status: Callable[[], dict[str, Any]]
    counters: Callable[[], dict[str, int]]
    config: Config | None = None
    submitter: Submitter | None = None
    payments: Payments | None = None

    def doing(self) -> tuple[Config, Submitter, Payments]:
        if self.config is None or self.submitter is None or self.payments is None:
            raise HTTPError(503, "this server serves /status and /metrics only")
        return self.config, self.submitter, self.payments


class HTTPError(Exception):
    def __init__(self, status: int, message: str, extra: dict | None = None):
        super().__init__(message)
        self.status, self.extra = status, extra or {}


class Guard:
    """The checks every request passes before it is read further (see the module docstring)."""

    def __init__(self, token: str, port: int):
        self.token = token.encode()
        self.hosts = {f"127.0.0.1:{port}".encode(), f"localhost:{port}".encode()}

    def refusal(self, req: h11.Request) -> tuple[str, HTTPError] | None:
        """(reason, error) if `req` must be refused, else None."""
        headers: dict[bytes, list[bytes]] = {}
        for name, value in req.headers:  # h11 lower-cases the names
            headers.setdefault(name, []).append(value)
        host = headers.get(b"host", [])
        if len(host) != 1 or host[0].lower() not in self.hosts:
            return "host", HTTPError(421, "the Host header must be 127.0.0.1:PORT or localhost:PORT")
        if b"origin" in headers:
            return "origin", HTTPError(403, "requests from web pages (with an Origin header) are refused")
        auth = headers.get(b"authorization", [])
        scheme, _, given = auth[0].partition(b" ") if len(auth) == 1 else (b"", b"", b"")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
            return "token", HTTPError(401, "missing or wrong token: send 'Authorization: Bearer <HOME/control.token>'")
        if req.method == b"POST":
            ctype = headers.get(b"content-type", [b""])[0].partition(b";")[0].strip().lower()
            if ctype != b"application/json":
                return "content_type", HTTPError(415, "a POST body must be Content-Type: application/json")
        return None


class Slots:
    """At most `cap` connections. Over it, a new connection takes the slot of the one that has waited longest for
    its next request head; if none is waiting (all are inside a request), the new one gets no slot."""

    def __init__(self, cap: int):
        self.cap, self.taken = cap, 0
        self.waiting: OrderedDict[int, trio.CancelScope] = OrderedDict()  # by connection, oldest first

    def take(self) -> str | None:
        """Take a slot: None, or "evicted" if an idle connection was closed for it, or "busy" if there is none."""
        if self.taken < self.cap:
            self.taken += 1
            return None
        if not self.waiting:
            return "busy"
        _, idle = self.waiting.popitem(last=False)
        idle.cancel()  # its handler returns, closes its stream and gives its slot back
        self.taken += 1
        return "evicted"

    def give_back(self) -> None:
        self.taken -= 1

    @contextmanager
    def head(self, scope: trio.CancelScope) -> Iterator[None]:
        """While the connection waits for a request head, a new one may take its slot (cancelling `scope`)."""
        self.waiting[id(scope)] = scope
        try:
            yield
        finally:
            self.waiting.pop(id(scope), None)


async def serve(ops: Operations, port: int = 0, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    try:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    except OSError as e:  # taken since moenode.node.ports checked it: still one line, not a traceback
        from moenode.node.config import ConfigError

        raise ConfigError(f"control port {port} on 127.0.0.1: {e.strerror}; choose another (config.toml [node] "
                          "control_port, 0 picks a free one)") from None
    bound = listeners[0].socket.getsockname()[1]
    url = f"http://127.0.0.1:{bound}"
    from moenode.node.metrics import make_registry

    registry = make_registry(ops)
    guard = Guard(ops.control_token, bound)
    task_status.started(url)
    await trio.serve_listeners(partial(_connection, ops, registry, guard, Slots(MAX_CONNECTIONS)), listeners)


async def _connection(ops: Operations, registry: Any, guard: Guard, slots: Slots, stream: trio.SocketStream) -> None:
    taken = slots.take()
    if taken is not None:
        ops.metrics.inc(f"control_{'evicted' if taken == 'evicted' else 'refused_busy'}")
    if taken == "busy":
        with trio.move_on_after(1):
            await stream.aclose()
        return
    try:
        await _serve_connection(ops, registry, guard, slots, stream)
    finally:
        slots.give_back()


async def _serve_connection(ops: Operations, registry: Any, guard: Guard, slots: Slots, stream: trio.SocketStream
                            ) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    try:
        while True:
            req, refused, body = None, None, b""
            with trio.move_on_after(IDLE_TIMEOUT) as idle:
                with slots.head(idle):
                    req = await _read_head(conn, stream)
                refused = guard.refusal(req) if req is not None else None
                if req is not None and refused is None:
                    body = await _read_body(conn, stream)
            if idle.cancelled_caught or req is None:
                return
            if refused is not None:  # answered unread, then the connection closes
                reason, err = refused
                _count_refusal(ops, reason, req, err)
                await _respond(conn, stream, *_json(err.status, {"error": str(err)}), close=True)
                return
            await _respond(conn, stream, *await _route(ops, registry, req, body))
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as e:
        log.debug("control connection ended: %r", e)
    finally:
        with trio.move_on_after(1):
            await stream.aclose()


async def _respond(conn: h11.Connection, stream: trio.SocketStream, status: int, ctype: str, payload: bytes,
                   close: bool = False) -> None:
    headers = [("content-type", ctype), ("content-length", str(len(payload))), ("server", "moenode")]
    if status == 401:
        headers.append(("www-authenticate", 'Bearer realm="moenode"'))
    if close:
        headers.append(("connection", "close"))
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=payload)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


def _count_refusal(ops: Operations, reason: str, req: h11.Request, err: HTTPError) -> None:
    name = f"control_refused_{reason}"
    ops.metrics.inc(name)
    n = ops.metrics.get(name)
    if n <= 3 or not n & (n - 1):  # a flood logs its first few, then only the 2^k-th
        log.warning("control API refused %s %s (%s): %s (#%d)", req.method.decode(errors="replace"),
                    req.target.decode(errors="replace")[:64], reason, err, n)


async def _receive(conn: h11.Connection, stream: trio.SocketStream) -> Any:
    """The next h11 event, reading from the socket as it needs."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(READ_CHUNK))  # b"" marks the end of the stream


async def _read_head(conn: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
    """The next request's line and headers; None when the client closed the connection."""
    event = await _receive(conn, stream)
    return event if isinstance(event, h11.Request) else None


async def _read_body(conn: h11.Connection, stream: trio.SocketStream) -> bytes:
    body = bytearray()
    while True:
        event = await _receive(conn, stream)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:  # the connection closed mid-body
            raise h11.RemoteProtocolError("the request body was cut short")


def _json(status: int, obj: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(obj).encode()


async def _route(ops: Operations, registry: Any, req: h11.Request, body: bytes) -> tuple[int, str, bytes]:
    method, path = req.method.decode(), req.target.decode().split("?", 1)[0]
    routes = {
        ("GET", "/status"): lambda: _status(ops),
        ("POST", "/submit"): lambda: _submit(ops, _body(body)),
        ("POST", "/transfer"): lambda: _transfer(ops, _body(body)),
        ("POST", "/stake"): lambda: _stake(ops, _body(body)),
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


async def _status(ops: Operations) -> dict:
    return ops.status()


async def _submit(ops: Operations, obj: dict) -> dict:
    from moenode.node.payments import PaymentError
    from moenode.node.submitter import SubmitError

    from moenode.core.round import batch_problem

    config, submitter, payments = ops.doing()
    texts = obj.get("texts")
    p = submitter.ctx.params
    if not isinstance(texts, list):
        raise HTTPError(400, "'texts' must be a list of strings")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise HTTPError(400, f"texts[{i}] must be a non-empty string")
    problem = batch_problem(texts, p)
    if problem:
        raise HTTPError(400, problem)
    fee = _int(obj, "fee", config.submit_fee, low=max(1, p.min_fee))
    wait_ms = _int(obj, "deadline_ms", 0, low=0)
    if wait_ms > p.round_abort_ms:
        raise HTTPError(400, f"'deadline_ms' must be at most the network's round_abort_ms ({p.round_abort_ms})")
    space = obj.get("space", "")
    if not isinstance(space, str):
        raise HTTPError(400, "'space' must be a space id")
    extra = set(obj) - {"texts", "fee", "deadline_ms", "space"}
    if extra:
        raise HTTPError(400, f"unknown fields {sorted(extra)}")
    try:
        space = submitter.submit_space(space)
    except SubmitError as e:
        raise HTTPError(400, str(e)) from None
    try:
        final, attempts = await submitter.submit(texts, fee, config.submit_attempts, wait_ms, space)
    except PaymentError as e:
        raise HTTPError(402, f"payment failed: {e}") from None
    except SubmitError as e:
        raise HTTPError(502, str(e), {"attempts": [a.summary() for a in e.attempts]}) from None
    out = final.outcome
    assert out is not None and out.certificate is not None and out.winner_reveal is not None
    report = out.certificate.report
    payload = out.winner_reveal.msg.submission.payload  # type: ignore[attr-defined]
    # the shard as the ledger derives it: a space that one node serves gives a shard of one, whose work nobody else
    # checked (the round has checked the certificate's signatures already)
    members, _ = payments.ledger.shard_of(report)
    return {
        "embeddings": base64.b64encode(payload.embeddings).decode(), "dim": payload.dim,
        "items": len(payload.item_losses), "winner": report.winner.hex(), "producer": report.producer.hex(),
        "model_id": report.model_id.hex(), "space": report.space,
        "model_ids": [report.model_id.hex()] * len(payload.item_losses), "loss": report.loss_micro / 1e6, "loss_micro": report.loss_micro,
        "shard_id": report.shard_id.hex(), "certificate": out.certificate.encode().hex(),
        "shard": {"members": len(members), "signatures": len(out.certificate.signatures)},
        "elapsed_ms": sum(a.elapsed_ms for a in attempts), "attempts": [a.summary() for a in attempts],
    }


def _account(v: Any) -> bytes:
    """A recipient someone can spend from: an Ed25519 public key, never an escrow account."""
    from moenode.core.crypto import is_ed25519_public_key
    from moenode.core.orders import is_escrow

    try:
        b = bytes.fromhex(v) if isinstance(v, str) else b""
    except ValueError:
        b = b""
    if len(b) != 32:
        raise HTTPError(400, "'to' must be a 64-hex-digit account id")
    if is_escrow(b):
        raise HTTPError(400, "'to' is an escrow account: a balance there could never be spent")
    if not is_ed25519_public_key(b):
        raise HTTPError(400, "'to' is not an Ed25519 public key, so no one could spend from it (a typo?)")
    return b


async def _transfer(ops: Operations, obj: dict) -> dict:
    from moenode.node.payments import PaymentError

    to, amount = _account(obj.get("to")), _int(obj, "amount")
    _, _, payments = ops.doing()
    me = payments.me
    if to == me:
        raise HTTPError(400, "cannot transfer to yourself")
    bal = payments.ledger.balance(me)
    if amount > bal:
        raise HTTPError(400, f"amount {amount} exceeds the balance {bal}")
    try:
        cert = await payments.transfer(to, amount)
    except PaymentError as e:
        raise HTTPError(402, str(e)) from None
    return {"order_id": cert.id.hex(), "balance": payments.ledger.balance(me)}


async def _stake(ops: Operations, obj: dict) -> dict:
    from moenode.node.payments import PaymentError, model_spaces

    amount = _int(obj, "amount")
    config, _, payments = ops.doing()
    model = obj.get("model")
    if model is not None and model != config.model:
        raise HTTPError(400, f"this node serves {config.model!r}; change config.toml to serve {model!r}")
    led, me = payments.ledger, payments.me
    bal = led.balance(me)
    if amount > bal:
        raise HTTPError(400, f"amount {amount} exceeds the balance {bal}")
    try:
        spaces = model_spaces(payments.ctx.genesis, config.model)
        cert = await payments.stake(amount, spaces)
    except PaymentError as e:
        raise HTTPError(402, str(e)) from None
    return {"order_id": cert.id.hex(), "balance": led.balance(me), "bonding": led.bonding.get(me, 0),
            "spaces": list(spaces)}


