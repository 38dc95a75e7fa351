"""Admission to a vector space, model side: a model's same-text cosine to a space's anchor on public text.

Theory of operation. A space is an anchor model and the models derived from it whose vectors of the same text stay
close to the anchor's (`moenode.core.spaces` holds the exact arithmetic and the in-round check on revealed vectors).
Before a node declares a space in the genesis, or `moenode expert train` writes a specialist, the model is checked
on the reference split every node ships: the p5 and the median of its same-text cosines to the anchor must reach
the space's admission bounds. This module embeds nothing itself; callers hand it both models' vectors of the same
texts (rows in the same order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moenode.core.spaces import MICRO, Space, admitted


@dataclass(frozen=True)
class Admission:
    p5_micro: int
    median_micro: int
    admitted: bool
    space: Space = Space()

    def describe(self, anchor: str) -> str:
        verdict = "in" if self.admitted else "NOT in"
        return (f"{verdict} the space of {anchor}: same-text cosine to it on the reference texts p5 "
                f"{self.p5_micro / MICRO:.4f} (needs >= {self.space.admit_p5_micro / MICRO:.2f}), median "
                f"{self.median_micro / MICRO:.4f} (needs >= {self.space.admit_median_micro / MICRO:.2f})")

    def as_dict(self) -> dict:
        return {"p5": self.p5_micro / MICRO, "median": self.median_micro / MICRO, "admitted": self.admitted}


def admission(anchor_vectors: np.ndarray, model_vectors: np.ndarray, space: Space = Space()) -> Admission:
    """The admission rule of `space` (default bounds: p5 >= 0.95, median >= 0.98) on the same texts' vectors."""
    p5, med, ok = admitted(anchor_vectors, model_vectors, space)
    return Admission(p5, med, ok, space)
