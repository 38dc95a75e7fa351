"""Real-encoder mode: zoo models on the packaged corpus, measured once and cached, driving the same market level."""

import numpy as np
import pytest

from moenode.sim.config import parse
from moenode.sim.market import MarketSim


@pytest.mark.slow
def test_real_mode_runs_on_measured_losses_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("MOENODE_SIM_CACHE", str(tmp_path))
    sc = parse("""
[sim]
nodes = 12
submissions = 120
epoch_submissions = 60
chunk = 30
cbtm_clusters = 5
[world]
mode = "real"
real_models = ["minilm-l3", "adv-noise"]
real_per_domain = 4
""")
    m = MarketSim(sc)
    w = m.world
    assert w.dim == 384 and w.domains == 5 and len(list(tmp_path.glob("real-*.npz"))) == 1
    noise, l3 = w.loss_table[1].mean(), w.loss_table[0].mean()
    assert l3 < noise  # a real model beats noise on real text (noise scores about 0.5)
    assert 0.3 < noise < 0.7
    m.run()
    r = m.rec.summary(0.0, w.kind)
    assert m.book.supply() == m.book.initial
    wins = m.rec.wins.sum(axis=1)
    by_model = np.bincount(w.model_of, weights=wins, minlength=2)
    assert by_model[0] > 3 * by_model[1]  # the real model wins most items; noise only where it got lucky
    again = MarketSim(sc)  # the second run reads the cache
    assert np.array_equal(again.world.loss_table, w.loss_table)
    assert r["policies"]["market"]["mean_loss"] <= 0.5
