"""The node's logging: HOME/node.log as JSON lines (or text), value-moving events, and quiet third parties.

Every record of HOME/node.log is one JSON object per line by default (config.toml `log_format = "json"`, or
`moenode run --log-format text` for people):

    {"ts": "2026-12-06T10:31:02.114Z", "level": "info", "logger": "moenode.payments", "msg": "stake 1000 ...",
     "event": "stake", "amount": 1000, "account": "3f2a..."}

Fields given with `extra=` (such as `peer`) are kept as keys. `event(logger, name, **fields)` is how the node
records everything that moves value or standing; each has an `event` key and its amounts as integers:

    stake      amount, account, epoch              stake placed by this node (counts from epoch + 2)
    transfer   amount, to                          a transfer this node signed
    win        shard, fee, loss_micro              this node won a round (certificate seen)
    paid       shard, amount                       a win settled: the fee reached this node
    proxy      shard, producer|member, role        a round proxied to an expert (served or sent)
    refund     shard, amount                       an unfinished round's fee came back
    strike     offender, shard, kind               evidence filed against a member
    slash      account, amount                     stake burnt by the ledger

Third-party noise is turned down here, once: faiss announces at INFO every instruction set it fails to load (ten
lines with ModuleNotFoundError on every start), and py-libp2p logs every failed dial at ERROR (hundreds of lines
while a peer is away); the node reports unreachable peers itself, once per peer (moenode.net.host).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

QUIET = {"faiss.loader": logging.WARNING, "faiss": logging.WARNING,
         "libp2p.transport.tcp.tcp": logging.CRITICAL, "multiaddr": logging.WARNING}
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonLines(logging.Formatter):
    """One JSON object per record: ts (UTC, ms), level, logger, msg, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        doc: dict[str, Any] = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z",
                               "level": record.levelname.lower(), "logger": record.name,
                               "msg": record.getMessage()}
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                doc[k] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quiet_third_parties() -> None:
    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(level)


def log_to_file(path: Path, level: str = "info", fmt: str = "json") -> None:
    """Send every record (root logger) to `path` in `fmt` ("json" or "text"); idempotent per path."""
    root = logging.getLogger()
    if not any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
        h = logging.FileHandler(path, encoding="utf-8")
        h.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
        root.addHandler(h)
    root.setLevel(level.upper())
    quiet_third_parties()


def event(logger: logging.Logger, name: str, **fields: Any) -> None:
    """Log one value-moving event at INFO: `name k=v ...` as the message, and each field as a JSON key."""
    shown = " ".join(f"{k}={v.hex()[:16] if isinstance(v, bytes) else v}" for k, v in fields.items())
    logger.info(f"{name} {shown}".strip(), extra={"event": name} | {
        k: v.hex() if isinstance(v, bytes) else v for k, v in fields.items()})
