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
trace = true
[world]
mode = "real"
real_models = ["minilm-l6", "spec-code", "adv-noise"]
real_per_domain = 4
""")
    m = MarketSim(sc)
    w = m.world
    assert w.dim == 384 and w.domains == 5 and len(list(tmp_path.glob("real-*.npz"))) == 1
    noise, l6 = w.loss_table[2].mean(), w.loss_table[0].mean()
    assert l6 < noise  # a real model beats noise on real text (noise scores about 0.5)
    assert 0.3 < noise < 0.7
    m.run()
    r = m.rec.summary(0.0, w.kind)
    assert m.book.supply() == m.book.initial
    wins = m.rec.wins.sum(axis=1)
    by_model = np.bincount(w.model_of, weights=wins, minlength=3)
    # the real models win most rounds. A third of these nodes serve copies of one noise model that claims the same
    # space: its copies agree with each other and with no one else, so the in-round space check passes noise over
    # wherever the real models are most of a shard, and noise wins only where its copies are at least half of it
    # (protocol/spaces.md: the check holds while honest models are the majority of a shard's candidates)
    assert by_model[:2].sum() > 2 * by_model[2]
    model = {k.hex(): w.model_of[i] for i, k in enumerate(m.pop.keys)}
    for t in m.trace:
        if t["producer"] and model[t["producer"]] == 2:
            assert 2 * sum(model[h] == 2 for h in t["members"]) >= len(t["members"])
    again = MarketSim(sc)  # the second run reads the cache
    assert np.array_equal(again.world.loss_table, w.loss_table)
    assert r["policies"]["market"]["mean_loss"] <= 0.5


@pytest.mark.slow
def test_real_mode_reveals_real_vectors_and_the_off_space_model_never_wins(tmp_path, monkeypatch):
    """adv-offspace has minilm-l6's loss bit for bit; at the message level every member checks the revealed vectors
    (the models' own, measured), so it never wins a round while minilm-l6 does."""
    from moenode.sim.message import MessageSim

    monkeypatch.setenv("MOENODE_SIM_CACHE", str(tmp_path))
    sc = parse("""
[sim]
nodes = 8
submissions = 24
fidelity = "message"
epoch_submissions = 12
chunk = 1
per_batch = 8
trace = true
[world]
mode = "real"
real_models = ["minilm-l6", "spec-code", "spec-man", "adv-offspace"]
real_per_domain = 8
""")
    m = MessageSim(sc)
    m.run()
    off = {m.pop.keys[i].hex() for i in range(len(m.pop.keys)) if m.world.model_of[i] == 3}
    winners = [t["winner"] for t in m.trace if t["winner"]]
    assert winners and not off & set(winners)


@pytest.mark.slow
def test_real_mode_reports_delivered_quality_against_each_model_alone(tmp_path, monkeypatch):
    """The comparison bench/quality.py makes on a testnet, at the simulator's scale: one index per space of what the
    submitters received. With one honest model in the space every round delivers its vectors, so the delivered
    index is that model alone, item for item; with two, the delivered MRR is reported against both."""
    monkeypatch.setenv("MOENODE_SIM_CACHE", str(tmp_path))

    def run(models: str) -> tuple[MarketSim, dict]:
        sc = parse(f"""
[sim]
nodes = 6
submissions = 120
epoch_submissions = 60
chunk = 30
[world]
mode = "real"
real_models = {models}
real_per_domain = 4
""")
        m = MarketSim(sc)
        m.run()
        return m, m.rec.summary(0.0, m.world.kind)["spaces"]["main"]["quality"]

    m, alone = run('["minilm-l6"]')
    assert set(m.world.delivered["main"]) == set(m.world.stream.tolist())  # every measured item drawn, delivered
    assert set(m.world.delivered["main"].values()) == {0}
    assert set(alone) == {"mixed", *m.world.domain_names} and alone["mixed"]["items"] == len(set(m.world.stream.tolist()))
    assert alone["mixed"]["delivered_mrr"] == alone["mixed"]["alone_mrr"]["minilm-l6"]
    assert alone["mixed"]["ratio_to_best_in_space"] == 1.0
    m, two = run('["minilm-l6", "spec-code"]')
    two = two["mixed"]
    assert set(m.world.delivered["main"].values()) == {0, 1}  # both models won rounds
    assert set(two["alone_mrr"]) == {"minilm-l6", "spec-code"} and two["delivered_mrr"] is not None
    best = max(two["alone_mrr"].values())
    assert two["ratio_to_best_in_space"] == pytest.approx(two["delivered_mrr"] / best)
