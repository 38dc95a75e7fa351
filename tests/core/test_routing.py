"""The routing rule (SPEC section 5 / protocol/routing.md): integers in, one deterministic decision out."""

import random

from moenode.core.genesis import Params
from moenode.core.routing import Candidate, decide, median_low, rank, route

P = Params()  # k=32, min cos 0.5, min hits 3, margin 9500
A, B, C, ME = b"A" * 32, b"B" * 32, b"C" * 32, b"M" * 32
PRICES = {A: 1_000, B: 1_000, C: 1_000, ME: 0}


def hits(producer: bytes, losses: list[int], cos: int = 900_000) -> list[tuple[bytes, int, int]]:
    return [(producer, loss, cos) for loss in losses]


def test_median_low():
    assert median_low([5]) == 5
    assert median_low([3, 1, 2]) == 2
    assert median_low([4, 1, 3, 2]) == 2


def test_cold_region_goes_to_self():
    d = route(500_000, [[]], PRICES, P, me=ME)
    assert not d.proxy and d.producer is None and d.expected_loss_micro == 500_000
    # too few hits, or hits that are too far away, are no evidence either
    assert not route(500_000, [hits(A, [10_000, 10_000])], PRICES, P, me=ME).proxy
    assert not route(500_000, [hits(A, [10_000] * 5, cos=499_999)], PRICES, P, me=ME).proxy


def test_proxies_to_the_best_expert_beyond_the_margin():
    item = hits(A, [100_000, 110_000, 120_000]) + hits(B, [200_000] * 4)
    d = route(300_000, [item], PRICES, P, me=ME)
    assert d.proxy and d.producer == A and d.expected_loss_micro == 110_000 and d.price_bps == 1_000
    # own estimate 0.95 * 110_000 = 104_500 or lower: stay
    assert not route(104_500, [item], PRICES, P, me=ME).proxy
    assert route(104_501, [item], PRICES, P, me=ME).proxy


def test_members_self_and_overpriced_experts_are_skipped():
    item = hits(A, [100_000] * 3) + hits(B, [150_000] * 3)
    assert route(300_000, [item], PRICES, P, me=ME, exclude=[A]).producer == B
    assert route(300_000, [item], PRICES, P, me=A).producer == B
    dear = {**PRICES, A: P.max_producer_share_bps + 1}
    assert route(300_000, [item], dear, P, me=ME).producer == B
    assert route(300_000, [item], {B: 1_000}, P, me=ME).producer == B  # A never advertised
    assert route(300_000, [item], PRICES, P, me=ME, max_price_bps=500).producer is None


def test_only_the_k_nearest_count():
    near_b = hits(B, [200_000] * 3, cos=990_000)
    far_a = hits(A, [10_000] * 3, cos=600_000)
    p = Params(routing_k=3)
    assert route(900_000, [near_b + far_a], PRICES, p, me=ME).producer == B
    assert route(900_000, [near_b + far_a], PRICES, P, me=ME).producer == A


def test_batch_coverage_rule():
    # A covers 1 of 3 items: not enough evidence for the batch; B covers 2 of 3
    items = [hits(A, [10_000] * 3) + hits(B, [90_000] * 3), hits(B, [90_000] * 3), []]
    r = rank(items, PRICES, P)
    assert [c.producer for c in r] == [B] and r[0].covered == 2 and r[0].loss_micro == 90_000


def test_ties_break_by_price_then_coverage_then_pubkey():
    item = hits(A, [100_000] * 3) + hits(B, [100_000] * 3)
    assert [c.producer for c in rank([item], PRICES, P)] == [A, B]
    assert [c.producer for c in rank([item], {A: 2_000, B: 1_000}, P)] == [B, A]


def test_order_of_neighbours_does_not_matter_and_rank_then_decide_is_route():
    rng = random.Random(7)
    producers = [bytes([i]) * 32 for i in range(12)]
    prices = {p: rng.randrange(0, 9_000) for p in producers}
    for _ in range(200):
        items = [[(rng.choice(producers), rng.randrange(0, 1_000_000), rng.randrange(-1_000_000, 1_000_001))
                  for _ in range(rng.randrange(0, 60))] for _ in range(rng.randrange(1, 5))]
        own = rng.randrange(0, 1_000_000)
        members = rng.sample(producers, 3)
        me = members[0]
        d = route(own, items, prices, P, me=me, exclude=members)
        shuffled = [rng.sample(it, len(it)) for it in items]
        assert route(own, shuffled, prices, P, me=me, exclude=members) == d
        ranked = rank(items, prices, P, exclude=members)
        assert decide(own, ranked, P, me=me) == d
        assert all(isinstance(c, Candidate) and c.producer not in members for c in ranked)
        if d.proxy:
            assert own * 10_000 > P.routing_margin_bps * d.expected_loss_micro


# the plan a member executes: its own estimate from its own history near the batch, then the experts to ask ---------
from moenode.core.routing import Plan, own_estimate, plan  # noqa: E402


def test_own_estimate_comes_from_own_history_in_the_region_then_the_average():
    region = [hits(ME, [80_000, 90_000, 100_000]), hits(ME, [60_000] * 3)]
    assert own_estimate(region, ME, P) == ((90_000 + 60_000) // 2, "region")
    # entries of other producers in the member's history list are not its own evidence
    assert own_estimate([hits(A, [1] * 3)], ME, P, 70_000) == (70_000, "average")
    # a region the member has covered on fewer than half of the items is not known to it
    assert own_estimate([hits(ME, [1] * 3), [], []], ME, P, 70_000) == (70_000, "average")
    assert own_estimate([[]], ME, P) == (None, "none")


def test_plan_compares_the_expert_with_the_members_own_score_in_that_region():
    """A member's running average mixes regions whose losses differ threefold; in a region where it scores 0.30 it
    must proxy to an expert that won at 0.20 there, even if its average over all batches is 0.15."""
    winners = [hits(A, [200_000] * 3) + hits(B, [250_000] * 3)]
    mine = [hits(ME, [300_000] * 3)]
    assert not route(150_000, winners, PRICES, P, me=ME).proxy  # the old rule, fed the running average
    pl = plan(winners, mine, PRICES, P, ME, members=[ME, C], own_average_micro=150_000)
    assert pl.proxy and pl.own_source == "region" and pl.own_estimate_micro == 300_000
    assert [c.producer for c in pl.experts] == [A, B] and pl.expected_loss_micro == 200_000
    # each expert asked must beat the own estimate by the margin: 0.95 x 0.25 (B) is not below 0.235
    pl = plan(winners, [hits(ME, [235_000] * 3)], PRICES, P, ME, members=[ME])
    assert [c.producer for c in pl.experts] == [A]
    assert plan(winners, mine, PRICES, P, ME, members=[ME], tries=1).experts[0].producer == A


def test_plan_stays_home_when_cold_unknown_or_the_expert_sits_in_the_shard():
    winners = [hits(A, [200_000] * 3)]
    mine = [hits(ME, [300_000] * 3)]
    assert plan([[]], mine, PRICES, P, ME, members=[ME]) == Plan((), 300_000, "region",
                                                                  "cold: no expert outside the shard qualifies")
    assert not plan(winners, mine, PRICES, P, ME, members=[ME, A]).proxy  # A is in the shard
    # a member with no history of its own takes the region's norm: it proxies to an expert better than that
    region = [hits(A, [200_000] * 3) + hits(B, [430_000] * 3) + hits(C, [400_000])]
    pl = plan(region, [[]], PRICES, P, ME, members=[ME])
    assert pl.proxy and pl.own_source == "region norm" and pl.own_estimate_micro == 400_000
    assert [c.producer for c in pl.experts] == [A]
    assert plan([[]], [[]], PRICES, P, ME, members=[ME]).own_source == "none"
    pl = plan(winners, [hits(ME, [150_000] * 3)], PRICES, P, ME, members=[ME])
    assert not pl.proxy and pl.reason == "own estimate within the margin" and pl.expected_loss_micro == 150_000
