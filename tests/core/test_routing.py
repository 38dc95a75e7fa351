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


def test_plan_asks_experts_in_rank_order_while_the_rule_would_proxy():
    from moenode.core.routing import plan

    items = [hits(A, [100_000] * 3) + hits(B, [200_000] * 3) + hits(C, [600_000] * 3)]
    ranked = rank(items, PRICES, P, exclude={ME})
    asked = plan(500_000, ranked, P, ME, tries=3)
    assert [d.producer for d in asked] == [A, B]  # C is not better than our own estimate by the margin
    assert plan(500_000, ranked, P, ME, tries=1) == [route(500_000, items, PRICES, P, me=ME)]
    assert plan(50_000, ranked, P, ME, tries=3) == []


def test_own_loss_starts_at_the_regions_median_then_follows_our_losses():
    from moenode.core.routing import OwnLoss

    est = OwnLoss()
    assert est.estimate([]) == 1_000_000
    assert est.estimate([hits(A, [300, 100]), hits(B, [200])]) == 200
    est.learn(1_000)
    assert est.estimate([hits(A, [1])]) == 1_000
    est.learn(2_000)
    assert est.average == 1_250
