"""Scenario configuration: one dataclass tree, loaded from TOML, with every default written here.

A scenario file has `[sim]` (size, fidelity, seed, economics), `[world]` (the synthetic world, `moenode.sim.world`),
`[params]` (protocol parameter overrides, checked against `genesis.BOUNDS`), `[net]` (the message-level network
model), `[adversary]` (byzantine fractions) and optionally `[[variants]]`, each a table of dotted overrides
(`"sim.proxy" = false`) run on the same seed and item stream.
"""

import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

from moenode.core.genesis import BOUNDS, Params
from moenode.core.spaces import SPACE_ID
from moenode.sim.world import WorldConfig


@dataclass
class SimConfig:
    name: str = "scenario"
    nodes: int = 200
    submissions: int = 2_000
    per_batch: int = 1
    fidelity: str = "market"  # market | message
    seed: int = 1
    fee: int = 1_000
    stake: int = 100_000
    client_balance: int = 10**15
    epoch_submissions: int = 500
    index_cap: int = 50_000
    chunk: int = 256
    warmup: float = 0.2  # share of the run before routing_ratio is measured
    proxy: bool = True
    invest: float = 0.0  # share of operators who invest
    invest_rate: float = 0.2
    cbtm_clusters: int = 16
    oracle_shortlist: int = 48
    link_ms: int = 40  # market level: one hop
    proxy_wait_ms: int = 1_000  # how long a member waits for its expert before working itself
    verify_ms: int = 20
    trace: bool = False  # keep per-submission outcomes (fidelity tests)
    space_mix: dict = field(default_factory=dict)  # space id -> weight in the workload; {}: the share of nodes


@dataclass
class NetConfig:
    latency_ms: int = 40  # median one-way latency
    latency_spread: float = 0.5  # log-normal sigma of per-link medians
    jitter: float = 0.1
    bandwidth_mbps: float = 100.0
    loss: float = 0.0  # per message: the chance of a retransmission (200 ms + 3 median latencies), repeated
    partitions: list = field(default_factory=list)  # [{start_ms, end_ms, share}]
    churn: float = 0.0  # share of nodes offline at any time
    churn_period_ms: int = 60_000
    interval_ms: int = 200  # between submissions
    decode: bool = True  # every envelope's bytes through open_signed (once, shared by its recipients)
    ed25519: bool = False


@dataclass
class AdversaryConfig:
    equivocate: float = 0.0
    fake: float = 0.0
    collapsed: float = 0.0
    withhold: float = 0.0


@dataclass
class Scenario:
    sim: SimConfig = field(default_factory=SimConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    params: Params = field(default_factory=Params)
    net: NetConfig = field(default_factory=NetConfig)
    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)
    variants: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""


def _fill(cls: Any, raw: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    extra = set(raw) - set(known)
    if extra:
        raise ValueError(f"scenario: unknown keys in [{where}]: {sorted(extra)}")
    if cls is Params:
        for k, v in raw.items():
            if k in BOUNDS and not BOUNDS[k][0] <= v <= BOUNDS[k][1]:
                raise ValueError(f"scenario: params.{k} = {v} is outside {BOUNDS[k]}")
    return cls(**raw)


def check_spaces(sc: Scenario) -> Scenario:
    """The synthetic world's space ids and the workload's mix (the real mode's spaces come from the zoo, and a mix
    naming one the zoo does not know is refused when the run starts)."""
    ids = sc.world.spaces
    if not ids or not all(isinstance(v, str) and SPACE_ID.fullmatch(v) for v in ids):
        raise ValueError(f"scenario: world.spaces must list space ids (a-z, 0-9 and '-'), got {ids!r:.80}")
    mix = sc.sim.space_mix
    if not isinstance(mix, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                                            for v in mix.values()):
        raise ValueError("scenario: sim.space_mix must map space ids to weights >= 0, e.g. {main = 3, b = 1}")
    if mix and not any(v > 0 for v in mix.values()):
        raise ValueError("scenario: sim.space_mix gives no space a positive weight")
    unknown = set(mix) - set(ids)
    if sc.world.mode == "synthetic" and unknown:
        raise ValueError(f"scenario: sim.space_mix names spaces world.spaces does not list: {sorted(unknown)}")
    return sc


def parse(text: str) -> Scenario:
    doc = tomllib.loads(text)
    extra = set(doc) - {"sim", "world", "params", "net", "adversary", "variants", "description"}
    if extra:
        raise ValueError(f"scenario: unknown sections {sorted(extra)}")
    return check_spaces(Scenario(
        sim=_fill(SimConfig, doc.get("sim", {}), "sim"),
        world=_fill(WorldConfig, doc.get("world", {}), "world"),
        params=_fill(Params, doc.get("params", {}), "params"),
        net=_fill(NetConfig, doc.get("net", {}), "net"),
        adversary=_fill(AdversaryConfig, doc.get("adversary", {}), "adversary"),
        variants=list(doc.get("variants", [])),
        description=str(doc.get("description", "")),
    ))


def override(sc: Scenario, changes: dict[str, Any]) -> Scenario:
    """A copy of `sc` with dotted keys replaced ("sim.proxy": False, "adversary.fake": 0.1); `label` is ignored."""
    parts: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        if key == "label":
            continue
        section, _, name = key.partition(".")
        if not name or section not in {"sim", "world", "params", "net", "adversary"}:
            raise ValueError(f"scenario: bad override key {key!r}")
        parts.setdefault(section, {})[name] = value
    out = sc
    for section, vals in parts.items():
        cur = getattr(out, section)
        assert is_dataclass(cur)
        merged = {f.name: getattr(cur, f.name) for f in fields(cur)} | vals
        out = replace(out, **{section: _fill(type(cur), merged, section)})
    return check_spaces(out)
