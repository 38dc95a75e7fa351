"""What the command modules share: one-line errors, JSON output, value formatting for tables, logging set-up.

Errors are one line on stderr and exit code 1 (2 for bad usage); `--json` output goes to stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer


def fail(msg: str, code: int = 1) -> NoReturn:
    console(stderr=True).print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


PIPE_WIDTH = 1_000  # columns of a table printed into a pipe or a file: as wide as its content, never cut


def console(stderr: bool = False):
    """A rich Console: the terminal's width on a TTY (tables fold to fit), else wide enough that nothing is cut
    (`moenode testnet status | cat` used to show `no… │ mi… │ 60…` at 80 columns)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)


def out_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def setup_logging(level: str = "info") -> None:
    """key=value lines on stderr: time, level, logger, message (the daemon formats its own log file)."""
    import logging

    from moenode.node.logs import quiet_third_parties

    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s")
    quiet_third_parties()


def short(v: Any, n: int = 16) -> str:
    s = str(v)
    return s if len(s) <= n + 1 else s[:n] + "…"


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(short(x, 24) for x in v) if len(v) <= 4 else f"{len(v)} ({', '.join(short(x, 12) for x in v[:3])}, …)"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return "-" if v is None else str(v)
