"""The genesis: network name, clock origin, epoch length, protocol parameters and the initial accounts.

Theory of operation: a genesis is parsed from TOML text (the caller reads the file), every parameter missing from the
file takes its default, and every value is checked against its bound. The canonical encoding of the resulting dict
is the genesis's identity: `network_id = H("network", canonical(genesis))`, carried by every signed body, topic and
protocol id, so two testnets never mix. Epochs and epoch seeds derive from it; times are integer milliseconds.
"""

import tomllib
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from moenode.core.codec import canonical
from moenode.core.crypto import H
from moenode.core.errors import SchemaError
from moenode.core.messages import MAX_ITEM_BYTES, MAX_ITEMS
from moenode.core.spaces import Space, SpaceBook, parse_account_spaces, parse_spaces


@dataclass(frozen=True)
class Params:
    """Protocol parameters. Each has a default and an inclusive (low, high) bound in `BOUNDS`."""

    max_batch_items: int = 256
    max_item_bytes: int = 8192
    commit_timeout_ms: int = 60_000  # input -> commit, plus commit_ms_per_mib of batch
    commit_ms_per_mib: int = 1_000
    grace_min_ms: int = 1_000
    grace_cap_ms: int = 60_000
    vote_timeout_ms: int = 30_000
    reveal_timeout_ms: int = 60_000
    verify_timeout_ms: int = 120_000
    report_timeout_ms: int = 60_000
    round_abort_ms: int = 3_600_000
    mask_views: int = 2  # M, split-half patterns per bucket
    min_negatives: int = 0  # reference items top a bucket up to this many negatives (0: in-batch negatives only)
    score_window: int = 32  # tokens of an item the score sees (spec 5.4): one contest for the whole batch
    verify_views: int = 4  # views re-run per verified item
    verify_items: int = 4  # items sampled for re-execution
    verify_cos_micro: int = 999_000
    winner_bps: int = 9_000
    min_fee: int = 1
    latency_bps_per_strike: int = 10
    latency_cap_bps: int = 100
    equivocation_slash_bps: int = 5_000
    reveal_mismatch_slash_bps: int = 500
    routing_k: int = 32
    routing_min_cos_micro: int = 500_000
    routing_min_hits: int = 3
    routing_margin_bps: int = 9_500
    index_epochs: int = 64
    index_max_entries: int = 200_000
    max_producer_share_bps: int = 9_000
    router_model: str = "static-l3"  # a table lookup (protocol/routing.md 6.1)


BOUNDS: dict[str, tuple[int, int]] = {
    "max_batch_items": (1, MAX_ITEMS),  # within the Input schema's hard caps (moenode.core.messages)
    "max_item_bytes": (64, MAX_ITEM_BYTES),
    "commit_timeout_ms": (50, 3_600_000),
    "commit_ms_per_mib": (0, 600_000),
    "grace_min_ms": (0, 600_000),
    "grace_cap_ms": (0, 600_000),
    "vote_timeout_ms": (50, 3_600_000),
    "reveal_timeout_ms": (50, 3_600_000),
    "verify_timeout_ms": (50, 3_600_000),
    "report_timeout_ms": (50, 3_600_000),
    "round_abort_ms": (1_000, 86_400_000),
    "mask_views": (1, 32),
    "min_negatives": (0, 255),
    "score_window": (8, 128),
    "verify_views": (1, 64),
    "verify_items": (1, 256),
    "verify_cos_micro": (0, 1_000_000),
    "winner_bps": (0, 10_000),
    "min_fee": (0, 1 << 62),
    "latency_bps_per_strike": (0, 10_000),
    "latency_cap_bps": (0, 10_000),
    "equivocation_slash_bps": (0, 10_000),
    "reveal_mismatch_slash_bps": (0, 10_000),
    "routing_k": (1, 1024),
    "routing_min_cos_micro": (-1_000_000, 1_000_000),
    "routing_min_hits": (1, 1024),
    "routing_margin_bps": (0, 20_000),
    "index_epochs": (1, 1 << 20),
    "index_max_entries": (1, 1 << 26),
    "max_producer_share_bps": (0, 10_000),
}


@dataclass(frozen=True)
class Account:
    pubkey: bytes
    balance: int = 0
    stake: int = 0
    model_id: str = ""  # a zoo name or a hex model id; empty for accounts that do not serve
    price: int = 0
    spaces: tuple[str, ...] = ()  # the spaces its model serves; () is the network's default space

    def as_dict(self) -> dict[str, Any]:
        return {"pubkey": self.pubkey, "balance": self.balance, "stake": self.stake,
                "model_id": self.model_id, "price": self.price, "spaces": list(self.spaces)}


@dataclass(frozen=True)
class Genesis:
    name: str
    genesis_time_ms: int
    epoch_ms: int = 3_600_000
    params: Params = field(default_factory=Params)
    accounts: tuple[Account, ...] = ()
    spaces: tuple[Space, ...] = (Space(),)  # the first is the default space

    # identity -------------------------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "genesis_time_ms": self.genesis_time_ms,
            "epoch_ms": self.epoch_ms,
            "params": {f.name: getattr(self.params, f.name) for f in fields(Params)},
            "accounts": [a.as_dict() | {"spaces": list(self.space_book.serves(a.pubkey))} for a in self.accounts],
            "spaces": [s.as_dict() for s in self.spaces],
        }

    def encoded(self) -> bytes:
        return canonical(self.as_dict())

    @cached_property
    def network_id(self) -> bytes:
        return H("network", self.encoded())

    # time -----------------------------------------------------------------------------------------------------
    def epoch(self, now_ms: int) -> int:
        """epoch(t) = (t - genesis_time) // epoch_len; negative before genesis."""
        return (now_ms - self.genesis_time_ms) // self.epoch_ms

    def epoch_start(self, epoch: int) -> int:
        return self.genesis_time_ms + epoch * self.epoch_ms

    def seed0(self) -> bytes:
        return H("epoch", self.encoded())

    def initial_stakes(self) -> dict[bytes, int]:
        return {a.pubkey: a.stake for a in self.accounts if a.stake > 0}

    def supply(self) -> int:
        return sum(a.balance + a.stake for a in self.accounts)

    def with_accounts(self, accounts: list[Account]) -> "Genesis":
        return replace(self, accounts=tuple(accounts))

    @cached_property
    def space_book(self) -> SpaceBook:
        """The spaces and who serves which (an account without a declaration serves the default space)."""
        default = (self.spaces[0].id,)
        return SpaceBook(self.spaces, {a.pubkey: a.spaces or default for a in self.accounts})


def next_epoch_seed(epoch: int, prev_seed: bytes, checkpoint_digest: bytes = b"") -> bytes:
    """epoch_seed[E] = H("epoch", E as 8 bytes big-endian || checkpoint_digest[E-1] || epoch_seed[E-1])."""
    if epoch < 1:
        raise ValueError("epoch 0's seed is the genesis seed")
    return H("epoch", epoch.to_bytes(8, "big") + checkpoint_digest + prev_seed)


def epoch_seeds(genesis: Genesis, upto: int, checkpoint_digests: dict[int, bytes] | None = None) -> list[bytes]:
    """Seeds for epochs 0..upto, given the checkpoint digests known so far (missing ones count as empty)."""
    digests = checkpoint_digests or {}
    seeds = [genesis.seed0()]
    for e in range(1, upto + 1):
        seeds.append(next_epoch_seed(e, seeds[-1], digests.get(e - 1, b"")))
    return seeds


# parsing ------------------------------------------------------------------------------------------------------
def _int(section: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"genesis: {section}.{key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise SchemaError(f"genesis: {section}.{key} = {value} is outside [{low}, {high}]")
    return int(value)


def _hex(section: str, key: str, value: Any, size: int) -> bytes:
    try:
        b = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise SchemaError(f"genesis: {section}.{key} must be hex") from None
    if len(b) != size:
        raise SchemaError(f"genesis: {section}.{key} must be {size} bytes, got {len(b)}")
    return b


def parse_genesis(text: str) -> Genesis:
    """Parse and validate genesis TOML. Raises SchemaError naming the offending key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SchemaError(f"genesis: not valid TOML: {e}") from None
    net = doc.get("network", {})
    unknown = set(doc) - {"network", "params", "accounts", "spaces"}
    if unknown:
        raise SchemaError(f"genesis: unknown sections {sorted(unknown)}")
    name = net.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise SchemaError("genesis: network.name must be a string of 1..64 characters")
    gtime = _int("network", "genesis_time_ms", net.get("genesis_time_ms"), 0, 1 << 53)
    epoch_ms = _int("network", "epoch_ms", net.get("epoch_ms", 3_600_000), 1_000, 30 * 86_400_000)
    params = _parse_params(doc.get("params", {}))
    spaces = parse_spaces(doc.get("spaces"))
    accounts = _parse_accounts(doc.get("accounts", []), spaces)
    return Genesis(name=name, genesis_time_ms=gtime, epoch_ms=epoch_ms, params=params, accounts=accounts,
                   spaces=spaces)


def _parse_params(raw: dict[str, Any]) -> Params:
    extra = set(raw) - {f.name for f in fields(Params)}
    if extra:
        raise SchemaError(f"genesis: unknown params {sorted(extra)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "router_model":
            if not isinstance(value, str) or not 1 <= len(value) <= 128:
                raise SchemaError("genesis: params.router_model must be a model name")
            values[key] = value
        else:
            values[key] = _int("params", key, value, *BOUNDS[key])
    params = Params(**values)
    if params.grace_min_ms > params.grace_cap_ms:
        raise SchemaError("genesis: params.grace_min_ms exceeds params.grace_cap_ms")
    return params


def _parse_accounts(raw: list[Any], spaces: tuple[Space, ...]) -> tuple[Account, ...]:
    """The `[[accounts]]` tables, sorted by public key; at least one must stake."""
    accounts: list[Account] = []
    seen: set[bytes] = set()
    for i, a in enumerate(raw):
        sect = f"accounts[{i}]"
        if not isinstance(a, dict):
            raise SchemaError(f"genesis: {sect} must be a table")
        extra = set(a) - {"pubkey", "balance", "stake", "model_id", "price", "spaces"}
        if extra:
            raise SchemaError(f"genesis: {sect} has unknown keys {sorted(extra)}")
        pk = _hex(sect, "pubkey", a.get("pubkey"), 32)
        if pk in seen:
            raise SchemaError(f"genesis: {sect} repeats pubkey {pk.hex()}")
        seen.add(pk)
        model_id = a.get("model_id", "")
        if not isinstance(model_id, str) or len(model_id) > 128:
            raise SchemaError(f"genesis: {sect}.model_id must be a string")
        accounts.append(Account(
            pubkey=pk,
            balance=_int(sect, "balance", a.get("balance", 0), 0, 1 << 62),
            stake=_int(sect, "stake", a.get("stake", 0), 0, 1 << 62),
            model_id=model_id,
            price=_int(sect, "price", a.get("price", 0), 0, 1 << 62),
            spaces=parse_account_spaces(a.get("spaces"), spaces, sect),
        ))
    if not any(a.stake > 0 for a in accounts):
        raise SchemaError("genesis: at least one account must have stake")
    return tuple(sorted(accounts, key=lambda a: a.pubkey))


def toml_value(v: Any) -> str:
    """A TOML literal of a bool, int, str or list/tuple of them (the genesis and config.toml writers share it)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as a TOML value")


def genesis_to_toml(g: Genesis) -> str:
    """The TOML text whose parse is `g` (round-trips through parse_genesis)."""
    lines = ["[network]", f"name = {toml_value(g.name)}", f"genesis_time_ms = {g.genesis_time_ms}",
             f"epoch_ms = {g.epoch_ms}", "", "[params]"]
    lines += [f"{f.name} = {toml_value(getattr(g.params, f.name))}" for f in fields(Params)]
    for a in g.accounts:
        lines += ["", "[[accounts]]", f'pubkey = "{a.pubkey.hex()}"', f"balance = {a.balance}",
                  f"stake = {a.stake}", f"model_id = {toml_value(a.model_id)}", f"price = {a.price}"]
        lines += [f"spaces = {toml_value(a.spaces)}"] if a.spaces else []
    for sp in g.spaces:
        lines += ["", "[[spaces]]"] + [f"{k} = {toml_value(v)}" for k, v in sp.as_dict().items()]
    return "\n".join(lines) + "\n"
