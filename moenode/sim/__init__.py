"""The simulator: thousands of nodes driving the real sans-IO protocol core on a virtual clock.

Two fidelity levels share one synthetic world (`moenode.sim.world`), one balance book (`moenode.sim.book`), one
shard sampler (`moenode.sim.draw`) and one winner index (`moenode.sim.index`): the message level
(`moenode.sim.message`) runs every message of every round through `moenode.core.round`; the market level
(`moenode.sim.market`) abstracts a round into one step but keeps the real selection, routing, scoring order and split
arithmetic. Both follow the protocol's vector spaces: each node serves its model's space, each submission names one,
and its shard, routing and proxies stay inside it (`moenode.sim.population`, `moenode.sim.draw.SpaceShards`).
`moenode.sim.scenario` loads TOML scenarios (the bundled ones are in `SCENARIOS`) and writes results;
`moenode.sim.report` draws the plots and the HTML page. `moenode sim` (`moenode.cli.sim`) runs them.
"""

from pathlib import Path

SCENARIOS = Path(__file__).parent / "scenarios"  # the bundled scenario files (package data)
