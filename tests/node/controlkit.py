"""Control API calls from the daemon tests: with a node's token, with exactly the headers a browser or a script
sends, and as another local user (uid nobody)."""

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
import trio

from moenode.testing import localuser
from moenode.testing.localuser import NOBODY, raw_http  # noqa: F401 - the daemon tests import them from here


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


def as_nobody(fn: Callable[[], object]) -> object:
    """`localuser.as_nobody`, skipped where the tests cannot switch users (not root; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("switching to uid nobody needs root (the tests run as root in CI)")
    return localuser.as_nobody(fn)
