"""The world a scenario asks for: the synthetic one (`moenode.sim.world`) or measured encoders (`moenode.sim.real`)."""

from moenode.sim.real import RealWorld
from moenode.sim.world import SyntheticWorld, World, WorldConfig


def make_world(cfg: WorldConfig, seed: int, n: int) -> World:
    if cfg.mode == "real":
        return RealWorld(cfg, seed, n)
    if cfg.mode != "synthetic":
        raise ValueError(f"world.mode must be 'synthetic' or 'real', not {cfg.mode!r}")
    return SyntheticWorld(cfg, seed, n)
