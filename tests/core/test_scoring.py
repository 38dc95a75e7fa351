"""The exact part of the paying score: the z-score's integer arithmetic and the plan's common window."""

from math import sqrt

import numpy as np
import pytest

from moenode.core.crypto import H
from moenode.core.genesis import Params
from moenode.core.scoring import MICRO, ONE, UNSCORED, Stream, losses_from_views, make_plan, z_loss

SEED = H("test", b"core-scoring")


def ids(n: int, length: int, tag: bytes = b"") -> list[list[int]]:
    return [[1000 + Stream("ids", tag + bytes([i, length])).below(20_000) for _ in range(length)] for i in range(n)]


def test_z_loss_matches_the_real_formula_to_its_truncation():
    rng = np.random.default_rng(0)
    for _ in range(200):
        negs = [int(x) for x in rng.integers(-ONE // 2, ONE // 2, int(rng.integers(2, 40)))]
        pos = int(rng.integers(-ONE // 2, ONE))
        n, mu = len(negs), sum(negs) / len(negs)
        sd = sqrt(sum((s - mu) ** 2 for s in negs) / n)
        z = max(-10.0, min(10.0, (pos - mu) / sd))
        assert abs(z_loss(pos, negs) - (MICRO // 2 - z * 50_000)) <= 1.0


def test_z_loss_is_blind_to_shift_and_scale_but_not_to_order():
    negs = [ONE // 8, ONE // 5, -ONE // 7, ONE // 9]
    base = z_loss(ONE // 3, negs)
    assert z_loss(ONE // 3 + 12345, [s + 12345 for s in negs]) == base  # a common direction adds a constant
    assert z_loss(2 * (ONE // 3), [2 * s for s in negs]) == base
    assert z_loss(ONE // 2, negs) < base < z_loss(ONE // 6, negs)  # a closer positive always scores better


def test_z_loss_edges():
    assert z_loss(7, [7, 7, 7]) == MICRO  # no spread: a constant encoder gets the worst
    assert z_loss(ONE, [0, 1]) == 0  # clipped at z = 10
    assert z_loss(-ONE, [0, 1]) == MICRO
    assert z_loss(5, [4, 6]) == MICRO // 2  # at the negatives' mean


def test_the_window_puts_items_of_every_length_in_one_contest():
    batch = ids(3, 40, b"a") + ids(3, 70, b"b") + ids(3, 127, b"c") + ids(2, 20, b"d")
    plan = make_plan(batch, SEED, Params(), [])
    # the two 20-token items cannot reach 2 negatives at 16 and are demoted to 8 (where they stay unscored)
    assert [(b.t, b.members, b.refs) for b in plan.buckets] == [(8, [9, 10], []), (32, list(range(9)), [])]
    wide = make_plan(batch, SEED, Params(score_window=128), [])
    assert [b.t for b in wide.buckets] == [8, 32, 64]  # without the window the lengths split the batch


def test_lonely_buckets_are_demoted_and_references_only_on_request():
    batch = ids(1, 40, b"a") + ids(4, 20, b"b")
    plan = make_plan(batch, SEED, Params(), [])
    assert [(b.t, b.members) for b in plan.buckets] == [(16, [0, 1, 2, 3, 4])]  # the 40-token item joins bucket 16
    refs = ids(10, 40, b"r")
    assert all(not b.refs for b in make_plan(batch, SEED, Params(), refs).buckets)
    topped = make_plan(batch, SEED, Params(min_negatives=8), refs)
    assert sum(len(b.refs) for b in topped.buckets) > 0


def test_losses_from_views_in_one_contest():
    """Hand-made unit views: an item whose halves agree scores below one whose halves are unrelated."""
    batch = ids(24, 32, b"v")
    plan = make_plan(batch, SEED, Params(mask_views=1), [])
    (b,) = plan.buckets
    rng = np.random.default_rng(1)
    v = rng.standard_normal((plan.rows, 256))
    for m in range(3):  # the first three items' two halves point the same way
        v[b.row_b(m, 0)] = v[b.row_a(m, 0)] + 0.1 * rng.standard_normal(256)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    losses = losses_from_views(plan, v.astype("<f2"))
    assert max(losses[:3]) < min(losses[3:]) and UNSCORED not in losses


@pytest.mark.parametrize("window", [8, 16, 32, 128])
def test_rows_and_members_cover_the_batch(window):
    batch = ids(4, 9) + ids(4, 33) + ids(4, 100)
    plan = make_plan(batch, SEED, Params(score_window=window), [])
    assert sorted(i for b in plan.buckets for i in b.members) == list(range(12))
    assert all(b.t <= window for b in plan.buckets) and plan.rows == sum(b.rows for b in plan.buckets)
