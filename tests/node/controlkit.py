"""Control API calls from the daemon tests: with a node's token, with exactly the headers a browser or a script
sends, and as another local user (uid nobody)."""

import json
import urllib.error
import urllib.request
from collections.abc import Callable

import trio


def http(url: str, method: str = "GET", body: dict | None = None, timeout: float = 120.0, token: str = "",
         headers: dict[str, str] | None = None) -> tuple[int, object]:
    """A control API call; `token` is sent as the bearer token, and a body as application/json."""
    data = None if body is None else json.dumps(body).encode()
    sent = ({"Authorization": f"Bearer {token}"} if token else {}) | \
        ({"Content-Type": "application/json"} if data is not None else {}) | (headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status, ctype = r.read(), r.status, r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        raw, status, ctype = e.read(), e.code, e.headers.get("content-type", "")
    return status, (json.loads(raw) if "json" in ctype else raw.decode())


async def ahttp(node, path: str, method: str = "GET", body: dict | None = None, **kw) -> tuple[int, object]:
    """A control API call to a running `Node`, with its token."""
    return await trio.to_thread.run_sync(lambda: http(node.control_url + path, method, body, token=node.control_token,
                                                      **kw))


NOBODY = 65534


def as_nobody(fn: Callable[[], object]) -> object:
    """`fn()` in a forked child that runs as uid and gid nobody (another local user): its return value (JSON), or
    {"error": repr} if it raised. Blocking: call it through trio.to_thread.run_sync from a trio test."""
    import os

    import pytest

    if os.geteuid() != 0:
        pytest.skip("switching to uid nobody needs root (the tests run as root in CI)")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run, report, and leave without running any of the parent's cleanup
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = {"uid": os.getuid(), "result": fn()}
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
            out = {"error": repr(e)}
        try:
            os.write(w, json.dumps(out).encode())
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks) or b'{"error": "the child said nothing"}')
    assert "error" not in out and out["uid"] == NOBODY, out
    return out["result"]


def raw_http(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    """One request with exactly these headers (no Host or others added), as a browser or a script might send."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body or method == "POST":
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()
