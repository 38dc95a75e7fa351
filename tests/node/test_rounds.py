"""The round driver's work over the real network: what a member computes for one round, and what it spares.

Three staked minilm-l6 members with a non-empty winner index (so each routes the batch first). Real hosts, real
models; the router and the verifier are wrapped only to count their calls, and still run.
"""

import dataclasses

import pytest
import trio

from moenode.core.crypto import H
from moenode.encoders import zoo
from moenode.node.stages import STAGES
from moenode.testing.nodekit import PARAMS, TEXTS, cluster, make_genesis, seed

pytestmark = pytest.mark.slow


async def test_a_member_routes_once_and_does_not_re_execute_its_own_winning_payload(tmp_path, monkeypatch):
    seeds = [seed(i, "work") for i in range(3)]
    # a loaded machine: every member commits, however slow its embedding
    params = dataclasses.replace(PARAMS, commit_timeout_ms=300_000, grace_min_ms=300_000, grace_cap_ms=300_000,
                                 round_abort_ms=900_000)
    genesis = make_genesis([(s, 1_000, "minilm-l6") for s in seeds], params)
    router = zoo.load(PARAMS.router_model)
    full_batch_routings = []
    embed = router.embed

    def counting_embed(texts):
        if len(texts) == len(TEXTS):
            full_batch_routings.append(1)
        return embed(texts)

    async with cluster(tmp_path, genesis) as c:
        ms = await c.start_all([c.add(s, "minilm-l6") for s in seeds])
        for m in ms:  # a history in this region, produced by the members themselves: route, then do it ourselves
            vecs = await trio.to_thread.run_sync(m.node.compute.routing_vectors, TEXTS)
            m.node.index.add(H("past", b"0"), vecs, ms[0].account, [500_000] * len(TEXTS), 0)
        verified = []
        for m in ms:
            real = m.node.compute.verify

            def counting_verify(*a, _real=real, _who=m.account):
                verified.append(_who)
                return _real(*a)

            m.node.compute.verify = counting_verify
        monkeypatch.setattr(router, "embed", counting_embed)
        before = STAGES.snapshot()
        final, _ = await ms[0].node.submitter.submit(TEXTS, 100, 1)
        report = final.outcome.certificate.report
        with trio.fail_after(30):  # every member has reported, so every verification has run
            while sum(m.node.metrics.get("rounds_certified") for m in ms) < 3:
                await trio.sleep(0.05)
        assert sum(m.node.metrics.get("verify_own_skipped") for m in ms) == 1
    assert len(full_batch_routings) == 3  # once per member: the payload reuses the vectors that chose the route
    assert report.winner not in verified and len(verified) == 2  # the winner knows its own payload
    after = STAGES.snapshot()
    # the default score draws no reference negatives (in-batch only, scoring.md 5.5), so that stage stays idle
    for stage in ("member_embed", "routing_vectors", "scoring_views", "verification", "codec_signatures"):
        assert after[stage]["calls"] > before[stage]["calls"], stage
        assert after[stage]["cpu_s"] > before[stage]["cpu_s"], stage
