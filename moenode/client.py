"""The control client: what a command, a tool or a test uses to talk to a running daemon.

Theory of operation: a running daemon writes `HOME/run.json` (its pid, peer id, addresses and control URL) and keeps
the secret of its control API in `HOME/control.token` (one line of 64 lowercase hex digits); both are readable by
the node's user only (`moenode.node.control_server` serves the API, `moenode.store.keys` creates the token).
`Control.for_home(home)` reads both, refuses a stale run.json whose pid is gone, and speaks HTTP/JSON to 127.0.0.1:
GET /status, GET /metrics, POST /submit, /transfer, /stake, each with the token as a bearer credential. Every
failure, from an unreachable node to an HTTP error, is one `ControlError` whose message says what to do.

This module imports nothing but the standard library (numpy only inside `decode_embeddings`, when a caller wants
the vectors), so it can be used from anywhere: the CLI, the testing tools, scripts. The secret-file checks the
daemon applies to its own files (`read_private`, `parse_token`) live here so both sides read the token the same way.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

RUN_FILE = "run.json"
TOKEN_FILE = "control.token"
TOKEN_BYTES = 32


class ControlError(RuntimeError):
    """The daemon answered with an error, or could not be reached."""


# --- the home's files ------------------------------------------------------------------------------------------
def read_private(path: str | os.PathLike, missing: str, error: type[Exception] = ControlError) -> tuple[Path, str]:
    """(path, text) of a secret file: refused with `error` if it is missing, unreadable or readable by others (as
    ssh does), with a one-line message that names the file and the fix."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{p}: {missing}") from None
    except OSError as e:
        raise error(f"{p}: cannot read it ({e.strerror}); run this as the user the node runs as") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(f"{p}: permissions {stat.filemode(st.st_mode)} are too open; run `chmod 600 {p}`")
    try:
        return p, p.read_text(encoding="ascii")
    except PermissionError:
        raise error(f"{p}: permission denied; run this as the user the node runs as") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{p}: cannot read it ({e})") from None


def parse_token(path: Path, text: str, error: type[Exception] = ControlError) -> str:
    """The control token in a token file's text (hex), or `error` naming the file."""
    token = text.strip()
    try:
        ok = len(bytes.fromhex(token)) == TOKEN_BYTES and token == token.lower()
    except ValueError:
        ok = False
    if not ok:
        raise error(f"{path}: not a control token ({2 * TOKEN_BYTES} lowercase hex digits); delete it and "
                    "restart the node to make a new one")
    return token


def read_token(home: Path) -> str:
    """The node's control token (HOME/control.token). Raises ControlError."""
    return parse_token(*read_private(home / TOKEN_FILE, "no control token (the node writes it when it starts)"))


def read_run(home: Path) -> dict[str, Any] | None:
    """The daemon's run.json, or None while it is not up (or is mid-write). ControlError if it is not ours to read."""
    try:
        return json.loads((home / RUN_FILE).read_text())
    except PermissionError:
        raise ControlError(f"{home / RUN_FILE}: permission denied; run this as the user the node runs as") from None
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the client ------------------------------------------------------------------------------------------------
@dataclass
class Control:
    """Client of one daemon's control API (127.0.0.1 only), authenticated by the node's control token."""

    url: str
    token: str = field(repr=False)
    timeout: float = 10.0

    @classmethod
    def for_home(cls, home: Path, timeout: float = 10.0) -> Control:
        run = read_run(home)
        if run is None:
            raise ControlError(f"no node is running in {home} (no {home / RUN_FILE}); start one with "
                               f"`moenode run --home {home}`")
        pid = run.get("pid")
        if isinstance(pid, int) and not pid_alive(pid):
            raise ControlError(f"the node of {home} (pid {pid}) is gone; its run.json is stale. "
                               f"See {home / 'node.log'}")
        return cls(run["control_url"], read_token(home), timeout)

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                raw = r.read()
                ctype = r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except (ValueError, AttributeError):
                pass
            raise ControlError(f"{method} {path}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ControlError(f"{method} {path}: cannot reach {self.url}: {getattr(e, 'reason', e)}") from None
        if "json" not in ctype and path == "/metrics":
            return raw.decode()
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status")

    def metrics(self) -> str:
        return self._call("GET", "/metrics")

    def submit(self, texts: Sequence[str], fee: int | None = None, timeout: float = 300.0,
               deadline_ms: int = 0, space: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"texts": list(texts)}
        if fee is not None:
            body["fee"] = fee
        if deadline_ms:
            body["deadline_ms"] = deadline_ms
        if space:
            body["space"] = space
        return self._call("POST", "/submit", body, timeout=timeout)

    def transfer(self, to: str, amount: int, timeout: float = 60.0) -> dict[str, Any]:
        return self._call("POST", "/transfer", {"to": to, "amount": amount}, timeout=timeout)

    def stake(self, amount: int, model: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        body: dict[str, Any] = {"amount": amount}
        if model:
            body["model"] = model
        return self._call("POST", "/stake", body, timeout=timeout)


# --- answers ---------------------------------------------------------------------------------------------------
def decode_embeddings(result: dict[str, Any]) -> np.ndarray:
    """The float32 (items, dim) array of a /submit answer (imports numpy when called)."""
    import numpy as np

    dim = int(result["dim"])
    arr = np.frombuffer(base64.b64decode(result["embeddings"]), dtype="<f4")
    return arr.reshape(-1, dim) if dim else arr.reshape(0, 0)


def peer_count(status: dict[str, Any]) -> int:
    """How many peers a /status answer reports (its `peers` is a list, a map or a count)."""
    peers = status.get("peers", 0)
    return len(peers) if isinstance(peers, (list, dict)) else int(peers or 0)


# --- vector files ------------------------------------------------------------------------------------------------
def write_vectors(path: str | os.PathLike, vectors: Any, space: str, model_ids: Sequence[str],
                  shard_ids: Sequence[str] = ()) -> Path:
    """Save vectors for an index as .npz: `vectors` float32 (n, dim), `space` (the space id), `model_ids` (the hex id
    of the model that computed each row) and `shard_ids` (each row's round; "" for rows embedded locally)."""
    import numpy as np

    p = Path(path)
    if p.suffix != ".npz":
        raise ValueError(f"{p}: vector files are .npz (vectors, space id, model id per row); name it {p.stem}.npz")
    arr = np.ascontiguousarray(vectors, np.float32)
    if arr.ndim != 2 or len(model_ids) != len(arr) or (shard_ids and len(shard_ids) != len(arr)):
        raise ValueError("vectors must be (n, dim) with one model id (and shard id) per row")
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        np.savez(f, vectors=arr, space=np.array(space), model_ids=np.array(list(model_ids), dtype="U64"),
                 shard_ids=np.array(list(shard_ids) or [""] * len(arr), dtype="U64"))
    return p


def read_vectors(*paths: str | os.PathLike) -> dict[str, Any]:
    """Load one or more vector files into one index's worth: {"vectors", "space", "model_ids", "shard_ids"}. Files
    from different spaces are refused: their vectors cannot share an index."""
    import numpy as np

    parts = []
    for path in paths:
        with np.load(Path(path), allow_pickle=False) as z:
            parts.append({k: z[k] for k in ("vectors", "space", "model_ids", "shard_ids")})
    spaces = sorted({str(p["space"]) for p in parts})
    if len(spaces) != 1:
        raise ValueError(f"these files hold vectors of different spaces ({', '.join(spaces)}): one index needs one")
    dims = sorted({p["vectors"].shape[1] for p in parts})
    if len(dims) != 1:
        raise ValueError(f"these files hold vectors of different dimensions {dims}")
    return {"vectors": np.concatenate([p["vectors"] for p in parts]), "space": spaces[0],
            "model_ids": np.concatenate([p["model_ids"] for p in parts]),
            "shard_ids": np.concatenate([p["shard_ids"] for p in parts])}
