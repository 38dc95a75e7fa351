"""Admission to a space on the reference texts: the shipped specialists are in minilm-l6's space, the off-space
cheat and minilm-l3 are not."""

import numpy as np
import pytest

from moenode.encoders import scoring, spaces, zoo

REFERENCE = scoring.reference_texts()[:200]


@pytest.fixture(scope="module")
def l6():
    return zoo.load("minilm-l6").embed(REFERENCE)


@pytest.mark.parametrize("name", sorted(zoo.SPECIALIST_DOMAINS))
def test_shipped_specialists_are_admitted_to_l6s_space(l6, name):
    a = spaces.admission(l6, zoo.load(name).embed(REFERENCE))
    assert a.admitted, a.describe("minilm-l6")
    assert zoo.space_of(name) == "main"


@pytest.mark.parametrize("name", ["adv-offspace", "minilm-l3"])
def test_other_spaces_are_refused(l6, name):
    a = spaces.admission(l6, zoo.load(name).embed(REFERENCE))
    assert not a.admitted and a.p5_micro < 700_000, a.describe("minilm-l6")


def test_shipped_specialists_share_one_space_pairwise():
    """Any two models of the space put the same held-out text (the audit set, never fitted on) at nearly the same
    vector, specialist against specialist included: p5 >= 0.95 and median >= 0.98 for every pair."""
    from moenode.encoders import corpus
    from moenode.encoders.runtime import normalise

    texts = [it.text for d in corpus.audit_domains() for it in corpus.audit(d)[:50]]
    names = ["minilm-l6", *sorted(zoo.SPECIALIST_DOMAINS)]
    vec = {n: normalise(zoo.load(n).embed(texts)) for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            c = (vec[a] * vec[b]).sum(1)
            p5, med = np.percentile(c, 5), np.median(c)
            assert p5 >= 0.95 and med >= 0.98, f"{a} | {b}: same-text cosine p5 {p5:.4f}, median {med:.4f}"
