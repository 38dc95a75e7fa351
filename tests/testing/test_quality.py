"""Delivered quality: one index across batches, and what mixing spaces costs a submitter."""

import numpy as np
import pytest

from moenode.encoders.train import mrr
from moenode.testing.quality import batch_agreement, one_index_mrr, solo_vectors


def test_one_index_over_batches_is_the_plain_mrr_of_the_whole_set():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(24, 8)).astype(np.float32)
    labels = [f"l{i % 6}" for i in range(24)]
    assert one_index_mrr([v[:10], v[10:]], labels) == pytest.approx(mrr(v, labels))


def test_items_in_another_space_are_never_retrieved():
    a = np.eye(4, dtype=np.float32)[[0, 0, 1, 1]]  # two labels, perfectly separated, in 4 dims
    assert one_index_mrr([a], ["x", "x", "y", "y"]) == 1.0
    # the same items, but the second half delivered by a model of another dimension: each item's partner is there
    b = np.eye(6, dtype=np.float32)[[0, 1]]
    assert one_index_mrr([a[[0, 2]], b], ["x", "y", "x", "y"]) == 0.0
    with pytest.raises(ValueError):
        one_index_mrr([a], ["x"])


def test_batch_agreement_counts_pairs_with_the_winner():
    assert batch_agreement({"a": 0.9, "b": 0.5, "c": 0.95}, "a") == (1, 2)
    assert batch_agreement({"a": 0.9, "b": 0.9}, "b") == (1, 1)
    assert batch_agreement({"a": 0.9}, "z") == (0, 0)


def test_a_real_model_alone_retrieves_same_source_items():
    from moenode.encoders import corpus

    items = corpus.audit(corpus.audit_domains()[0])[:48]
    vecs = solo_vectors("minilm-l3", [it.text for it in items])
    assert vecs.shape == (48, 384)
    got = one_index_mrr([vecs[:16], vecs[16:]], [it.source for it in items])
    shuffled = one_index_mrr([vecs], [it.source for it in reversed(items)])
    assert got is not None and shuffled is not None and got > shuffled


def test_solo_vectors_are_kept_read_only_and_follow_the_texts():
    """A bench that submits the same batches in two spaces compares both with one embedding per model; a caller
    cannot change what the other one gets."""
    texts = ["the first text of a batch", "a second, different text"]
    a = solo_vectors("minilm-l3", texts)
    assert solo_vectors("minilm-l3", list(texts)) is a
    assert not a.flags.writeable
    b = solo_vectors("minilm-l3", texts[::-1])
    assert (b[0] == a[1]).all() and (b[1] == a[0]).all()
