"""The message level: real rounds for every node, real Ed25519 in the consistency run, faults and their effects."""

import numpy as np

from moenode.core.checkpoint import check_evidence
from moenode.core.crypto import ed25519_verify
from moenode.sim.config import override
from moenode.sim.market import MarketSim
from moenode.sim.message import MessageSim, Network
from moenode.testing.simkit import small


def key(t):
    return (t["shard_id"], t["members"], t["winner"], t["producer"], t["loss"], t["strikes"])


def test_ed25519_consistency_with_the_cheap_signer_run():
    """With real keys and signatures every message is verified by Ed25519; outcomes equal the market level's."""
    sc = override(small(nodes=12, submissions=8), {"net.ed25519": True})
    msg = MessageSim(sc)
    assert msg.verify is ed25519_verify
    msg.run()
    mk = MarketSim(sc)
    mk.run()
    assert [key(t) for t in sorted(msg.trace, key=lambda t: t["k"])] == [key(t) for t in mk.trace]
    assert sum(1 for t in msg.trace if t["winner"]) == 8
    assert msg.book.balances == mk.book.balances
    assert not msg.rejections  # nothing failed a signature check


def test_deterministic_for_a_seed():
    sc = override(small(nodes=20, submissions=10), {"net.latency_spread": 0.5, "net.jitter": 0.3,
                                                     "net.interval_ms": 300})
    a, b = MessageSim(sc), MessageSim(sc)
    ra, rb = a.run(), b.run()
    assert ra["events"] == rb["events"] and a.trace == b.trace and a.book.balances == b.book.balances


def test_equivocation_is_proven_and_slashed():
    sc = override(small(nodes=24, submissions=12), {"adversary.equivocate": 0.1})
    m = MessageSim(sc)
    m.run()
    assert not m.book.items  # every item was checkpointed, including the last partial epoch's
    equiv = [i for i in range(sc.sim.nodes) if m.pop.behaviour[i] == "equivocate"]
    served = {i for t in m.trace for i in range(sc.sim.nodes) if m.pop.keys[i].hex() in t["members"]}
    hit = [i for i in equiv if i in served]
    assert hit and all(m.book.stakes.get(m.pop.keys[i], 0) <= sc.sim.stake // 2 for i in hit)
    assert all(m.pop.keys[i].hex() != t["winner"] for t in m.trace for i in equiv)


def test_evidence_found_by_members_proves_itself():
    sc = override(small(nodes=24, submissions=4), {"adversary.equivocate": 0.1})
    m = MessageSim(sc)
    found = []
    orig = m._effects

    def spy(who, sid, out):
        from moenode.core.round import EvidenceFound
        found.extend(e.evidence for e in out if isinstance(e, EvidenceFound))
        return orig(who, sid, out)

    m._effects = spy
    m.run()
    assert found
    for ev in found[:5]:
        offender = check_evidence(ev, m.net_id, m.verify)
        assert m.pop.behaviour[m.pop.index_of[offender]] == "equivocate"


def test_churn_loss_and_partition_keep_supply_and_honest_earnings():
    sc = override(small(nodes=40, submissions=30), {
        "net.loss": 0.01, "net.churn": 0.05, "net.churn_period_ms": 100_000, "net.interval_ms": 2_000,
        "net.latency_spread": 0.5, "net.jitter": 0.2,
        "net.partitions": [{"start_ms": 10_000, "end_ms": 30_000, "share": 0.3}]})
    m = MessageSim(sc)
    m.run()
    m.book.check()
    r = m.rec.summary(0.0, m.world.kind)
    assert 0 < m.book.settled < 30 or m.book.refunded > 0  # faults cost some rounds, not all
    assert r["classes"]["honest"]["earned_per_node"] > 0


def test_latency_slashing_hits_slow_nodes_not_honest_ones():
    sc = override(small(nodes=30, submissions=20), {"world.slow": 0.2, "world.slow_factor": 200})
    m = MessageSim(sc)
    m.run()
    cls = m.rec.summary(0.0, m.world.kind)["classes"]
    assert cls["slow"]["strikes_per_node"] > 0 and cls["slow"]["slashed_per_node"] > 0
    assert cls["honest"]["strikes_per_node"] == 0 and cls["honest"]["slashed_per_node"] == 0
    m.book.check()


def test_a_shards_links_drawn_at_once_equal_links_drawn_one_by_one():
    sc = override(small(nodes=30), {"net.latency_spread": 0.5})
    at_once, one_by_one = Network(sc, 34, np.random.default_rng(0)), Network(sc, 34, np.random.default_rng(0))
    nodes = [3, 17, 5, 29, 33, 0]
    at_once.warm(nodes)
    medians = [at_once.median(a, b) for a in nodes for b in nodes if a != b]
    assert medians == [one_by_one.median(a, b) for a in nodes for b in nodes if a != b]
    assert len(set(medians)) == len(medians) // 2  # one median per link, either way round
