"""Vector spaces: whether a model's vectors live in an anchor model's space, decided exactly on revealed vectors.

Theory of operation. A space is an anchor model and the models derived from it (adapters, fine-tunes, heads) whose
vectors of the same text stay close to the anchor's, so vectors from different members of a space can share one
index. "Close" is the same-text cosine: for each text, the cosine between the two models' vectors of it. Two
decisions use it, and both are computed here from float16-rounded vectors with integer arithmetic only, so every
node that holds the same bytes reaches the same verdict:

- **Admission** (`admission`): on public text (the reference split every node ships), the candidate's same-text
  cosines to the anchor must have a low quantile (p5) and a median at or above their bounds.
- **The in-round check** (`in_space`): on a batch, a candidate is in the space iff its same-item cosines to the
  anchor's vectors of the batch (the space's anchor as router: the routing vectors every payload carries and
  re-execution verifies) have their p5 at or above a bound. Without anchor vectors it falls back to the candidates
  themselves: a candidate is in the space iff it agrees (same rule, pairwise) with at least half of the others
  and with at least one; two candidates that disagree are both held back (nothing on the batch says which one left
  the space), and a majority of colluders in one foreign space would pass: the anchor's vectors are what make the
  check robust.

Exact arithmetic. A float16 value with |v| <= 1 is an integer multiple of 2^-24, so `v * 2^24` is an exact integer.
For rows that are unit within 2^-8 (as `scoring.check_rows` asks of views), a dot product in those units is an integer below
2^49, exact in float64 whatever the order of the sums. The cosine of two rows is then reported as
`floor(10^6 * dot / sqrt(|a|^2 |b|^2))`, computed with Python integers (`math.isqrt`). A row that is zero, or not a
valid row, has cosine -10^6 (it agrees with nothing). A quantile q of n values is the order statistic of rank
`floor(q * n)` (0-based) of the ascending values: "p5 >= bound" means at most floor(n / 20) items fall below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moenode.encoders.scoring import FIX, MICRO, NORM_TOL, ONE, to_f16

NO_COSINE = -MICRO  # the cosine of a zero or invalid row with anything: agrees with no bound
P5_BPS, MEDIAN_BPS = 500, 5000  # quantiles in basis points
ADMIT_P5_MICRO = 950_000  # admission on public text: p5 of same-text cosine to the anchor
ADMIT_MEDIAN_MICRO = 980_000  # ... and its median
ROUND_P5_MICRO = 900_000  # the in-round check: p5 over the batch's items, candidate against the anchor


def f16_rows(v: np.ndarray) -> np.ndarray:
    """The float16 rounding of vectors (what is revealed and checked)."""
    return to_f16(np.asarray(v, np.float32))


def _valid(v16: np.ndarray) -> np.ndarray:
    """Per row: finite, components within [-1, 1], and unit within 2^-8 (a zero row is not valid here)."""
    finite = np.isfinite(v16).all(1)
    fx = np.where(finite[:, None], v16.astype(np.float64), 0.0) * FIX
    n2 = np.einsum("ij,ij->i", fx, fx)
    return finite & (np.abs(fx) <= FIX).all(1) & (np.abs(n2 - ONE) <= NORM_TOL)


def cosines_micro(a: np.ndarray, b: np.ndarray) -> list[int]:
    """Same-row cosines of two float16 matrices of equal shape, as floor(10^6 cos), exact (see the module doc)."""
    a16, b16 = f16_rows(a), f16_rows(b)
    if a16.shape != b16.shape or a16.ndim != 2:
        raise ValueError(f"same-text cosines need two (n, dim) matrices of one shape, got {a16.shape} {b16.shape}")
    ok = _valid(a16) & _valid(b16)
    fa = np.where(ok[:, None], a16.astype(np.float64) * FIX, 0.0)
    fb = np.where(ok[:, None], b16.astype(np.float64) * FIX, 0.0)
    dots, na, nb = np.einsum("ij,ij->i", fa, fb), np.einsum("ij,ij->i", fa, fa), np.einsum("ij,ij->i", fb, fb)
    out = []
    for good, d, x, y in zip(ok.tolist(), dots.tolist(), na.tolist(), nb.tolist()):
        out.append(_floor_cos(int(d), int(x) * int(y)) if good else NO_COSINE)
    return out


def _floor_cos(dot: int, norms2: int) -> int:
    """floor(10^6 * dot / sqrt(norms2)) for norms2 > 0, in integers."""
    num = abs(dot) * MICRO
    k = math.isqrt(num * num // norms2)  # floor(num / sqrt(norms2)) or one below it
    while (k + 1) * (k + 1) * norms2 <= num * num:
        k += 1
    if dot >= 0:
        return k
    return -k if k * k * norms2 == num * num else -(k + 1)


def quantile(values: Sequence[int], bps: int) -> int:
    """The order statistic of rank floor(bps * n / 10^4) of the ascending values."""
    if not values:
        raise ValueError("no values")
    return sorted(values)[bps * len(values) // 10_000]


@dataclass(frozen=True)
class Admission:
    p5_micro: int
    median_micro: int
    admitted: bool

    def describe(self, anchor: str) -> str:
        verdict = "in" if self.admitted else "NOT in"
        return (f"{verdict} the space of {anchor}: same-text cosine to it on the reference texts p5 "
                f"{self.p5_micro / MICRO:.4f} (needs >= {ADMIT_P5_MICRO / MICRO:.2f}), median "
                f"{self.median_micro / MICRO:.4f} (needs >= {ADMIT_MEDIAN_MICRO / MICRO:.2f})")


def admission(anchor_vectors: np.ndarray, model_vectors: np.ndarray, p5_micro: int = ADMIT_P5_MICRO,
              median_micro: int = ADMIT_MEDIAN_MICRO) -> Admission:
    """The admission rule on public text: p5 and median of the same-text cosines at or above their bounds."""
    cos = cosines_micro(anchor_vectors, model_vectors)
    p5, med = quantile(cos, P5_BPS), quantile(cos, MEDIAN_BPS)
    return Admission(p5, med, p5 >= p5_micro and med >= median_micro)


def agrees(a: np.ndarray, b: np.ndarray, bound_micro: int = ROUND_P5_MICRO, bps: int = P5_BPS) -> bool:
    """Whether two models' vectors of the same items agree: the `bps` quantile of their same-item cosines is at or
    above the bound. Vectors of different dimensions never agree."""
    if np.shape(a) != np.shape(b):
        return False
    return quantile(cosines_micro(a, b), bps) >= bound_micro


@dataclass(frozen=True)
class SpaceVerdict:
    in_space: tuple[bool, ...]  # per candidate, in the order given
    reason: str  # "anchor", "majority", "split" (two candidates that disagree) or "single"


def in_space(candidates: Sequence[np.ndarray], anchor: np.ndarray | None = None,
             bound_micro: int = ROUND_P5_MICRO, bps: int = P5_BPS) -> SpaceVerdict:
    """The in-round space check on the candidates' revealed vectors of one batch (one (n, dim) matrix each).

    With the anchor's vectors of the batch: a candidate is in iff it agrees with them. Without: a candidate is in
    iff it agrees with at least one other candidate and with at least half of the others; a lone candidate is in
    (nothing to compare it with), two that disagree are both out.
    """
    k = len(candidates)
    if anchor is not None:
        return SpaceVerdict(tuple(agrees(c, anchor, bound_micro, bps) for c in candidates), "anchor")
    if k == 1:
        return SpaceVerdict((True,), "single")
    agree = np.eye(k, dtype=bool)
    for i in range(k):
        for j in range(i + 1, k):
            agree[i, j] = agree[j, i] = agrees(candidates[i], candidates[j], bound_micro, bps)
    others = agree.sum(1) - 1
    verdict = tuple(bool(o >= 1 and 2 * o >= k - 1) for o in others)
    return SpaceVerdict(verdict, "split" if k == 2 and not any(verdict) else "majority")
