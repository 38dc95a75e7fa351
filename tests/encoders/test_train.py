"""Fitting a specialist (`moenode.encoders.train`) with the real minilm-l6: the alignment terms keep it in its space."""

import numpy as np
import pytest

from moenode.encoders import corpus, train, zoo
from moenode.encoders.runtime import full_ids, normalise


@pytest.fixture(scope="module")
def l6():
    return zoo.load("minilm-l6")


@pytest.fixture(scope="module")
def legal():
    return [it.text for it in corpus.split("legal", "adapter")[:40]]


def cosines(l6, w: np.ndarray, texts: list[str]) -> np.ndarray:
    pooled = l6.pooled_ids(full_ids(texts))
    return (normalise(pooled) * normalise(pooled @ w)).sum(1)


def test_general_text_keeps_other_domains_in_place(l6, legal):
    """The alignment term over general public text keeps texts of other domains (held out: the eval split of code)
    closer to the base model's vectors than a fit on in-domain text alone."""
    public = train.general_texts()[::8]
    other = [it.text for it in corpus.split("code_py", "eval")[:60]]
    alone = train.train_adapter(l6, legal, "legal", None, steps=60)
    kept = train.train_adapter(l6, legal, "legal", None, steps=60, public=public)
    assert kept.general == train.GENERAL and alone.general == 0.0
    assert np.median(cosines(l6, kept.w, other)) > np.median(cosines(l6, alone.w, other))
    assert np.percentile(cosines(l6, kept.w, other), 5) > np.percentile(cosines(l6, alone.w, other), 5)


def test_general_texts_leave_out_what_admission_and_evaluation_use():
    general = set(train.general_texts())
    assert general and len(general) < len(corpus.load())
    for d in corpus.domains():
        assert not general & {it.text for it in corpus.split(d, "reference")}
        assert not general & {it.text for it in corpus.split(d, "eval")}
