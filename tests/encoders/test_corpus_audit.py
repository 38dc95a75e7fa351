"""The scorer on the shipped corpus: degenerate encoders lose, L6 beats L3 and every adversary but the off-space one
(which ties it exactly), specialists win home.

The default run covers two domains on small batches; the slow run covers every domain on larger ones.
"""

from functools import lru_cache

import numpy as np
import pytest

from moenode.core.crypto import H
from moenode.core.genesis import Params
from moenode.encoders import corpus
from moenode.encoders import scoring, zoo

P = Params()
SEED = H("test", b"corpus-audit")
FAST = ("code_py", "legal")


@lru_cache(maxsize=None)
def losses(model: str, domain: str, n: int) -> np.ndarray:
    items = [it.text for it in corpus.split(domain, "eval")[:n]]
    s = scoring.score(zoo.load(model), items, SEED, P, tuple(scoring.reference_texts()))
    return np.array(s.losses)


def check_domain(domain: str, n: int) -> None:
    l6 = losses("minilm-l6", domain, n)
    assert (l6 < scoring.UNSCORED).all()  # corpus items have >= 8 tokens
    for name in ("adv-constant", "adv-zero"):
        assert (losses(name, domain, n) == scoring.MICRO).all(), name
    noise = losses("adv-noise", domain, n)
    assert 0.4 < noise.mean() / scoring.MICRO < 0.6
    l3 = losses("minilm-l3", domain, n)
    assert l6.mean() < l3.mean() and (l6 < l3).sum() > (l6 > l3).sum()
    for adv in zoo.ADVERSARIES:
        other = losses(adv, domain, n)
        if adv == "adv-offspace":  # L6's dot products in another space: the loss cannot tell it from L6 (the
            # rotated vectors round to other float16 values, which moves a z-score by a few millionths)
            assert np.abs(l6 - other).max() <= 100
            continue
        assert (l6 < other).mean() > 0.5, f"{domain}: L6 beats {adv} on only {(l6 < other).mean():.2f} of items"


def check_specialist(name: str, n: int) -> None:
    domain = zoo.SPECIALIST_DOMAINS[name]
    l6, spec = losses("minilm-l6", domain, n), losses(name, domain, n)
    assert (spec < l6).sum() > (spec > l6).sum(), f"{name} wins {(spec < l6).mean():.2f}, loses {(spec > l6).mean():.2f}"


@pytest.mark.parametrize("domain", FAST)
def test_domain_fast(domain):
    check_domain(domain, 32)


def test_specialist_fast():
    check_specialist("spec-legal", 32)


@pytest.mark.slow
@pytest.mark.parametrize("domain", corpus.domains())
def test_domain_full(domain):
    check_domain(domain, 96)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(zoo.SPECIALIST_DOMAINS))
def test_specialist_full(name):
    check_specialist(name, 96)
