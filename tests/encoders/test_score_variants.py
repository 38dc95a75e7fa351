"""The research variants of the score: the cached-view path reproduces the paying score exactly, and the graded
losses and label helpers behave at their edges."""

import numpy as np
import pytest


from moenode.core.crypto import H
from moenode.core.genesis import Params
from moenode.encoders import score_variants as sv
from moenode.encoders import corpus, scoring, train, zoo
from moenode.encoders.runtime import content_ids

SEED = H("test", b"score-variants")


@pytest.fixture(scope="module")
def small():
    items = [it.text for it in corpus.split("legal", "eval")[:10]]
    refs = [it.text for it in corpus.split("code_py", "reference")[:20]]
    ids = content_ids(items + refs, 128)
    tab = sv.view_table(ids, [False] * len(items) + [True] * len(refs), "mask", SEED)
    enc = zoo.load("minilm-l6")
    return items, refs, ids, tab, enc, scoring.to_f16(enc.embed_ids(tab.seqs))


def test_cached_views_reproduce_the_paying_score(small):
    """The research path (float z over cached rows) gives the paying score's integer losses, to their rounding."""
    items, refs, ids, tab, enc, views = small
    for min_neg, window in ((8, 128), (0, 32)):
        groups = sv.protocol_groups(list(range(len(items))), ids, list(range(len(items), len(ids))), SEED, 2,
                                    min_neg, window)
        if min_neg:
            assert len(groups) > 1 and any(g.n_batch < len(g.c) for g in groups)  # several buckets, a top-up
        got = sv.item_losses(views, tab, groups, 2, ["z"])["z"]
        p = Params(mask_views=2, min_negatives=min_neg, score_window=window)
        want = scoring.score(enc, items, SEED, p, refs).losses
        scored = [i for i in range(len(items)) if want[i] != scoring.UNSCORED]
        assert len(scored) >= len(items) - 2 and set(scored) <= set(got)
        research = [scoring.MICRO // 2 + got[i] * 50_000 for i in scored]
        assert np.allclose(research, [want[i] for i in scored], atol=1.0), (research, want)
    both = sv.item_losses(views, tab, groups, 2, ["z"], both=True)["z"]
    assert both.keys() == got.keys() and any(abs(both[i] - got[i]) > 1e-6 for i in got)  # a second direction


def test_batch_groups_without_references_or_peers(small):
    items, refs, ids, tab, enc, views = small
    n = len(items)
    plain = sv.batch_groups(list(range(n)), ids)
    assert all(g.n_batch == len(g.c) for g in plain)  # no reference candidates
    for g in plain:  # every other item of the bucket is a negative
        assert (g.neg.sum(1) == len(g.q) - 1).all()
    ladder = sv.batch_groups(list(range(n)), ids, ladder=True)
    assert sum(g.neg.sum() for g in ladder) > sum(g.neg.sum() for g in plain)  # longer items join shorter buckets
    alone = sv.batch_groups(list(range(n)), ids, peers=False, ref=list(range(n, len(ids))), n_ref=5, seed=SEED)
    for g in alone:
        assert not g.neg[:, : g.n_batch].any() and (g.neg[:, g.n_batch :].sum(1) == len(g.c) - g.n_batch).all()
    capped = sv.batch_groups(list(range(n)), ids, cap=16)  # one short window: items of every length meet
    assert {g.t for g in capped} <= {8, 16} and max(len(g.q) for g in capped) >= n - 2
    sample = sv.batch_groups(list(range(n)), ids, queries=[0, 3, 5])
    assert sorted(int(x) for g in sample for x in g.q) == [0, 3, 5]
    batch_rows, ref_rows = sv.rows_used(tab, alone, 4)
    assert batch_rows and ref_rows and batch_rows.isdisjoint(ref_rows)


def test_losses_at_their_edges():
    pos = np.array([[0.5, 0.2]])
    s = np.array([[[0.4, 0.5, 0.45], [0.3, 0.1, 0.2]]])
    neg = np.array([[True, True, False], [True, True, True]])
    assert sv.loss_count(pos, s, neg).tolist() == [[0.5, 2 / 3]]  # a tie counts against the query
    assert np.allclose(sv.loss_ramp(1e-9)(pos, s, neg), sv.loss_count(pos, s, neg))
    assert np.allclose(sv.loss_ramp(0.2)(pos, s, neg), [[(0.5 + 1.0) / 2, (1.0 + 0.5 + 1.0) / 3]], atol=1e-5)
    flat = np.zeros((1, 2, 3))
    assert (sv.loss_z(np.zeros((1, 2)), flat, neg) == 10).all()  # a constant encoder gets the worst z
    assert (sv.loss_count(np.zeros((1, 2)), flat, neg) == 1).all()
    assert np.allclose(sv.loss_gap(pos, s, neg), [[0.0, 0.1]])


def test_reciprocal_ranks_agree_with_the_training_audit():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(30, 8))
    lab = [f"s{i // 3}" for i in range(29)] + ["alone"]
    rr = sv.reciprocal_ranks(v, lab)
    assert np.isnan(rr[-1]) and np.isclose(np.nanmean(rr), train.mrr(v, lab))
    d, lo, hi = sv.bootstrap_diff(rr, rr, lab)
    assert d == lo == hi == 0.0


def test_block_patterns_are_contiguous_halves():
    p = sv.family_pattern("blocks", SEED, 32, 3)
    assert len(p) == 16 and all(len({x // 4 for x in p}) == 4 for _ in [0])
    assert all(p[i + 1] - p[i] == 1 for i in range(len(p) - 1) if (i + 1) % 4)
