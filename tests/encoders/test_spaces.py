"""Admission to a space on the reference texts: the shipped specialists are in minilm-l6's space, the off-space
cheat and minilm-l3 are not."""

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
