"""What another local user of the machine can do to a node's control API: send HTTP requests with exactly the
headers it chooses (as a browser or a script would), and act as a different uid.

The daemon's tests and the attack suite (`moenode.testing.attacks`) use it. Standard library only.
"""

import http.client
import json
import os
from collections.abc import Callable

NOBODY = 65534


def as_nobody(fn: Callable[[], object]) -> object:
    """`fn()` in a forked child that runs as uid and gid nobody (another local user): its return value (JSON), or
    {"error": repr} if it raised. Blocking: call it through trio.to_thread.run_sync from a trio test."""
    if os.geteuid() != 0:
        raise PermissionError("switching to uid nobody needs root")
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
    if "error" in out or out.get("uid") != NOBODY:
        raise RuntimeError(f"as uid nobody: {out}")
    return out["result"]


def raw_http(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    """One request with exactly these headers (no Host or others added), as a browser or a script might send."""
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
