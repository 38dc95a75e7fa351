"""The node's home directory and its `config.toml`.

Theory of operation: a home directory holds everything one node owns, at fixed names the ops tooling relies on:

    HOME/config.toml     this file's schema (below); every key optional, defaults are sane for a local node
    HOME/key             the Ed25519 seed (moenode.store.keys; 0600)
    HOME/genesis.toml    the network's genesis (its hash is the network id)
    HOME/ledger.sqlite   the ledger store (certified orders, locks, checkpoints)
    HOME/certs.sqlite    the shard certificates this node verified (for restarts and sync)
    HOME/index/          winner index snapshots
    HOME/node.log        the node's log (JSON lines unless log_format = "text")
    HOME/peers.json      the peers it learnt, tried again at the next start (moenode.node.peers)
    HOME/control.token   the secret every control API request carries (moenode.store.keys; 0600)
    HOME/run.json        written atomically (0600) once the node is up, removed on clean exit
    HOME/node.lock       locked by the running daemon, so a second one on this home is refused

`load_config(home)` reads and validates the file; an unknown key, a wrong type or an out-of-range value is a
`ConfigError` that names the key. `write_default_config(home, **overrides)` writes a commented file that loads
back to the same values. Paths in `[paths]` are relative to the home unless absolute.
"""

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from moenode.client import RUN_FILE, TOKEN_FILE
from moenode.core.genesis import toml_value
from moenode.core.spaces import SPACE_ID

LOCK_FILE = "node.lock"  # held by the running daemon (moenode.node.daemon.hold_home)
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")  # HOME/node.log: one JSON object per line, or plain lines for people


class ConfigError(ValueError):
    """config.toml is missing a required value, has an unknown key, or holds a value of the wrong type or range."""


@dataclass(frozen=True)
class Config:
    # [node]
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    model: str = "minilm-l6"  # the encoder this node serves (a zoo name or an .onnx path)
    price_bps: int = 5_000  # the producer share this node asks when it serves as a proxy expert
    control_port: int = 0  # 0 picks a free port; run.json says which
    log_level: str = "info"
    log_format: str = "json"
    serve_proxies: bool = True
    advert_interval_s: int = 30
    # [submit]
    submit_fee: int = 10
    submit_attempts: int = 2
    submit_space: str = ""  # the space a submit names when it names none ("": the network's default space)
    # [paths]
    genesis: str = "genesis.toml"
    ledger: str = "ledger.sqlite"
    certs: str = "certs.sqlite"
    index: str = "index"
    log: str = "node.log"
    home: Path = field(default=Path("."), compare=False)

    def path(self, name: str) -> Path:
        p = Path(getattr(self, name))
        return p if p.is_absolute() else self.home / p

    @property
    def key_path(self) -> Path:
        return self.home / "key"

    @property
    def run_path(self) -> Path:
        return self.home / RUN_FILE

    @property
    def token_path(self) -> Path:
        return self.home / TOKEN_FILE


SECTIONS: dict[str, tuple[str, ...]] = {
    "node": ("listen", "bootstrap", "model", "price_bps", "control_port", "log_level", "log_format",
             "serve_proxies",
             "advert_interval_s"),
    "submit": ("submit_fee", "submit_attempts", "submit_space"),
    "paths": ("genesis", "ledger", "certs", "index", "log"),
}
RANGES: dict[str, tuple[int, int]] = {
    "price_bps": (0, 10_000),
    "control_port": (0, 65_535),
    "advert_interval_s": (1, 86_400),
    "submit_fee": (1, (1 << 62) - 1),
    "submit_attempts": (1, 10),
}


def _check(key: str, value: Any) -> Any:
    default = getattr(Config, key)
    where = f"config.toml: {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        low, high = RANGES[key]
        if not low <= value <= high:
            raise ConfigError(f"{where} = {value} is outside [{low}, {high}]")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where} must be a list of non-empty strings")
        if any(not v.startswith("/") for v in value):
            raise ConfigError(f"{where}: every entry must be a multiaddr such as /ip4/127.0.0.1/tcp/4001")
        if key == "bootstrap" and any("/p2p/" not in v for v in value):
            raise ConfigError(f"{where}: every bootstrap address must end in /p2p/<peer id>")
        if key == "listen" and not value:
            raise ConfigError(f"{where} needs at least one address")
        return tuple(value)
    if key == "submit_space":
        if not isinstance(value, str) or (value and not SPACE_ID.fullmatch(value)):
            raise ConfigError(f"{where} must be a space id (a-z, 0-9, '-'; \"\" for the network's default)")
        return value
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string")
    if key == "log_level" and value.lower() not in LOG_LEVELS:
        raise ConfigError(f"{where} must be one of {', '.join(LOG_LEVELS)}")
    if key == "log_format" and value.lower() not in LOG_FORMATS:
        raise ConfigError(f"{where} must be one of {', '.join(LOG_FORMATS)}")
    return value.lower() if key in ("log_level", "log_format") else value


def parse_config(text: str, home: Path) -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config.toml: not valid TOML: {e}") from None
    extra = set(doc) - set(SECTIONS)
    if extra:
        raise ConfigError(f"config.toml: unknown sections {sorted(extra)} (known: {sorted(SECTIONS)})")
    values: dict[str, Any] = {}
    for section, keys in SECTIONS.items():
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"config.toml: [{section}] must be a table")
        unknown = set(table) - set(keys)
        if unknown:
            raise ConfigError(f"config.toml: unknown keys in [{section}]: {sorted(unknown)}")
        for key, value in table.items():
            values[key] = _check(key, value)
    return Config(home=home, **values)


def load_config(home: str | os.PathLike) -> Config:
    """The home's config (defaults if config.toml does not exist). Raises ConfigError."""
    h = Path(home)
    p = h / "config.toml"
    if not p.exists():
        return Config(home=h)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read ({e})") from None
    return parse_config(text, h)


def config_to_toml(cfg: Config) -> str:
    lines = ["# moenode node configuration; every key is optional (see moenode/node/config.py)"]
    for section, keys in SECTIONS.items():
        lines += ["", f"[{section}]"] + [f"{k} = {toml_value(getattr(cfg, k))}" for k in keys]
    return "\n".join(lines) + "\n"


def _values(given: dict[str, Any]) -> dict[str, Any]:
    """Config field values as given by a caller: lists become the tuples the frozen Config holds."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}


def write_default_config(home: str | os.PathLike, **overrides: Any) -> Config:
    """Write HOME/config.toml (atomically; never over an existing one) and return what it loads as."""
    h = Path(home)
    h.mkdir(parents=True, exist_ok=True)
    known = {f.name for f in fields(Config)} - {"home"}
    bad = set(overrides) - known
    if bad:
        raise ConfigError(f"unknown config keys {sorted(bad)}")
    cfg = replace(Config(home=h), **_values(overrides))
    p = h / "config.toml"
    if p.exists():
        raise ConfigError(f"{p} already exists")
    atomic_write(p, config_to_toml(cfg).encode("utf-8"))
    return parse_config(p.read_text(encoding="utf-8"), h)


def update_config(home: str | os.PathLike, **changes: Any) -> Config:
    """Rewrite HOME/config.toml with `changes` applied (atomically), keeping every other value; returns it."""
    cfg = replace(load_config(home), **_values(changes))
    atomic_write(Path(home) / "config.toml", config_to_toml(cfg).encode("utf-8"))
    return cfg


def model_setting(model: str) -> str:
    """What config.toml stores for `--model`: a zoo name as given, a file path made absolute (so the node finds it
    from any working directory)."""
    p = Path(model).expanduser()
    if model.endswith(".onnx") or p.exists() or "/" in model:
        return str(p.resolve())
    return model


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
