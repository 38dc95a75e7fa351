"""The simulator: thousands of nodes driving the real sans-IO protocol core on a virtual clock.

Two fidelity levels share one synthetic world (`sim.world`), one balance book (`sim.book`), one shard sampler
(`sim.draw`) and one winner index (`sim.index`): the message level (`sim.message`) runs every message of every round
through `moenode.core.round`; the market level (`sim.market`) abstracts a round into one step but keeps the real
selection, routing, scoring order and split arithmetic. `sim.scenario` loads TOML scenarios and writes results;
`sim.report` draws the plots and the HTML page.
"""
