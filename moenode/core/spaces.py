"""Vector spaces: which stake serves which space, and the in-round check that the winner's vectors are in it.

Theory of operation. Vectors from two models can share one search index only if the models share a vector space:
the same text lands at nearly the same vector. A network serves several spaces. The genesis lists them (`Space`:
an id, a dimension, an anchor model and the bounds of the admission rule and of the in-round check), and each
account declares the spaces its model serves (an account the genesis does not list serves the first, default,
space). An Input names its space; the shard of a round is drawn from the voting power of the accounts that serve
it (`SpaceBook.power_in`), so only models of that space compete for the batch, and the Report carries the space so
that anyone recomputes the same shard.

Declaring a space is a claim. Admission (same-text cosine to the anchor on public text, `moenode expert admit`) is
what an honest operator checks before declaring, but a model fitted to pass it could still leave the space on real
batches. So every round checks the revealed vectors themselves (`off_space`): before the lowest-loss candidate is
verified, its vectors must have the space's dimension and agree with the other candidates' vectors of the same
items, where two candidates agree when the p5 of their same-item cosines is at or above the space's
`round_p5_micro`. A candidate agrees with the space when it agrees with at least one other candidate and with at
least half of them; a lone candidate passes (nothing to compare it with), and two candidates that disagree both
fail, since nothing on the batch says which of them left the space (the round then fails and is refunded). A
candidate that fails cannot win; it is neither struck nor faulty, because an honest minority in a split shard would
fail the same way. The rule holds while honest models are the majority of a shard's candidates, as the
certificate's quorum already assumes.

Exact arithmetic, so every member reaches the same verdict from the same bytes. Vectors are rounded to float16;
a float16 value with |v| <= 1 is an integer multiple of 2^-24, so in those units a dot product of two rows is an
integer below 2^49, exact in float64 whatever the order of the sums. The cosine of two rows is
`floor(10^6 * dot / sqrt(|a|^2 |b|^2))`, computed with Python integers. A row that is zero, not finite, has a
component outside [-1, 1] or is not unit within 2^-8 agrees with nothing (cosine -10^6). A quantile of n values at
`bps` basis points is the order statistic of rank `floor(bps * n / 10^4)` (0-based) of the ascending values.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from moenode.core.crypto import H
from moenode.core.errors import SchemaError

MICRO = 1_000_000
FIX = 1 << 24  # float16 values are integer multiples of 2^-24
ONE = FIX * FIX  # a unit dot product in fixed point
NORM_TOL = ONE >> 8  # a valid row is unit within 2^-8
NO_COSINE = -MICRO  # the cosine of a zero or invalid row with anything
P5_BPS, MEDIAN_BPS = 500, 5_000
DEFAULT_SPACE = "main"
SPACE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAX_SPACES = 16


@dataclass(frozen=True)
class Space:
    """One vector space of the network. `dim` 0 accepts any dimension; `anchor` "" names no anchor model."""

    id: str = DEFAULT_SPACE
    dim: int = 0
    anchor: str = ""
    admit_p5_micro: int = 950_000  # admission on public text: p5 of same-text cosine to the anchor
    admit_median_micro: int = 980_000  # ... and its median
    round_p5_micro: int = 900_000  # the in-round check: p5 of same-item cosine between two candidates

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "dim": self.dim, "anchor": self.anchor, "admit_p5_micro": self.admit_p5_micro,
                "admit_median_micro": self.admit_median_micro, "round_p5_micro": self.round_p5_micro}


SPACE_KEYS = frozenset(Space().as_dict())
BOUNDS = {"dim": (0, 4096), "admit_p5_micro": (-MICRO, MICRO), "admit_median_micro": (-MICRO, MICRO),
          "round_p5_micro": (-MICRO, MICRO)}


def check_space_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not SPACE_ID.fullmatch(value):
        raise SchemaError(f"{where}: a space id is 1..32 characters of a-z, 0-9 and '-', got {value!r:.40}")
    return value


def parse_space(raw: Any, where: str) -> Space:
    """One `[[spaces]]` table of the genesis."""
    if not isinstance(raw, dict):
        raise SchemaError(f"genesis: {where} must be a table")
    extra = set(raw) - SPACE_KEYS
    if extra:
        raise SchemaError(f"genesis: {where} has unknown keys {sorted(extra)}")
    values: dict[str, Any] = {"id": check_space_id(raw.get("id"), f"genesis: {where}.id")}
    anchor = raw.get("anchor", "")
    if not isinstance(anchor, str) or len(anchor) > 128:
        raise SchemaError(f"genesis: {where}.anchor must be a model name")
    values["anchor"] = anchor
    for key, (low, high) in BOUNDS.items():
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise SchemaError(f"genesis: {where}.{key} must be an integer in [{low}, {high}]")
            values[key] = v
    return Space(**values)


def parse_spaces(raw: Any) -> tuple[Space, ...]:
    """The genesis's `[[spaces]]`: none declared means the one default space, open to any model."""
    if raw is None or raw == []:
        return (Space(),)
    if not isinstance(raw, list) or len(raw) > MAX_SPACES:
        raise SchemaError(f"genesis: spaces must be a list of at most {MAX_SPACES} tables")
    spaces = tuple(parse_space(r, f"spaces[{i}]") for i, r in enumerate(raw))
    ids = [s.id for s in spaces]
    if len(set(ids)) != len(ids):
        raise SchemaError(f"genesis: space ids repeat: {ids}")
    return spaces


def parse_account_spaces(raw: Any, known: Sequence[Space], where: str) -> tuple[str, ...]:
    """An account's declared spaces (sorted, unique); () when it declares none (it serves the default space)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_SPACES:
        raise SchemaError(f"genesis: {where}.spaces must be a list of 1..{MAX_SPACES} space ids")
    ids = {s.id for s in known}
    out = []
    for v in raw:
        check_space_id(v, f"genesis: {where}.spaces")
        if v not in ids:
            raise SchemaError(f"genesis: {where}.spaces names {v!r}, which the genesis does not list")
        out.append(v)
    if len(set(out)) != len(out):
        raise SchemaError(f"genesis: {where}.spaces repeats a space")
    return tuple(sorted(out))


# who serves which space -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpaceBook:
    """The network's spaces and the accounts' declarations: built once from the genesis (`Genesis.space_book`)."""

    spaces: tuple[Space, ...]
    declared: Mapping[bytes, tuple[str, ...]]  # account -> the spaces it serves (accounts the genesis lists)

    @property
    def default(self) -> Space:
        return self.spaces[0]

    def space(self, space_id: str) -> Space:
        for s in self.spaces:
            if s.id == space_id:
                return s
        raise SchemaError(f"space {space_id!r:.40} is not one of this network's ({', '.join(self.ids())})",
                          reason="unknown_space")

    def ids(self) -> list[str]:
        return [s.id for s in self.spaces]

    def serves(self, account: bytes) -> tuple[str, ...]:
        return self.declared.get(account, (self.default.id,))

    def declaring(self, declared: Mapping[bytes, tuple[str, ...]]) -> SpaceBook:
        """This book with later declarations (made by Stake orders, fixed by checkpoints) over the genesis ones."""
        return self if not declared else SpaceBook(self.spaces, {**self.declared, **declared})

    def mask(self, space_ids: Sequence[str]) -> int:
        """The spaces as a bit mask of the genesis list (bit i: the i-th space), as a `serve` item carries them."""
        return sum(1 << self.ids().index(self.space(s).id) for s in dict.fromkeys(space_ids))

    def unmask(self, mask: int) -> tuple[str, ...]:
        """The spaces of a mask, sorted; bits beyond the genesis list are ignored."""
        return tuple(sorted(s.id for i, s in enumerate(self.spaces) if mask >> i & 1))

    def power_in(self, power: Mapping[bytes, int], space_id: str) -> dict[bytes, int]:
        """The voting power of the accounts that serve `space_id`: the pool its shards are drawn from."""
        self.space(space_id)
        return {pk: vp for pk, vp in power.items() if space_id in self.serves(pk)}


# the in-round check ---------------------------------------------------------------------------------------------------
def f16_rows(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(vectors, np.float32), dtype="<f2")


def _valid(v16: np.ndarray) -> np.ndarray:
    finite = np.isfinite(v16).all(1)
    fx = np.where(finite[:, None], v16.astype(np.float64), 0.0) * FIX
    n2 = np.einsum("ij,ij->i", fx, fx)
    return np.asarray(finite & (np.abs(fx) <= FIX).all(1) & (np.abs(n2 - ONE) <= NORM_TOL), dtype=bool)


def _floor_cos(dot: int, norms2: int) -> int:
    """floor(10^6 * dot / sqrt(norms2)) for norms2 > 0, in integers."""
    num = abs(dot) * MICRO
    k = math.isqrt(num * num // norms2)
    while (k + 1) * (k + 1) * norms2 <= num * num:
        k += 1
    if dot >= 0:
        return k
    return -k if k * k * norms2 == num * num else -(k + 1)


def cosines_micro(a: np.ndarray, b: np.ndarray) -> list[int]:
    """Same-row cosines of two (n, dim) matrices after float16 rounding, as floor(10^6 cos), exact."""
    a16, b16 = f16_rows(a), f16_rows(b)
    if a16.shape != b16.shape or a16.ndim != 2:
        raise ValueError(f"same-text cosines need two (n, dim) matrices of one shape, got {a16.shape} {b16.shape}")
    ok = _valid(a16) & _valid(b16)
    fa = np.where(ok[:, None], a16.astype(np.float64) * FIX, 0.0)
    fb = np.where(ok[:, None], b16.astype(np.float64) * FIX, 0.0)
    dots, na, nb = np.einsum("ij,ij->i", fa, fb), np.einsum("ij,ij->i", fa, fa), np.einsum("ij,ij->i", fb, fb)
    return [_floor_cos(int(d), int(x) * int(y)) if good else NO_COSINE
            for good, d, x, y in zip(ok.tolist(), dots.tolist(), na.tolist(), nb.tolist())]


def quantile(values: Sequence[int], bps: int) -> int:
    """The order statistic of rank floor(bps * n / 10^4) of the ascending values."""
    if not values:
        raise ValueError("no values")
    return sorted(values)[bps * len(values) // 10_000]


def agrees(a: np.ndarray, b: np.ndarray, bound_micro: int, bps: int = P5_BPS) -> bool:
    """Whether two models' vectors of the same items agree: the `bps` quantile of their same-item cosines is at or
    above the bound. Vectors of different shapes never agree."""
    if np.shape(a) != np.shape(b):
        return False
    return quantile(cosines_micro(a, b), bps) >= bound_micro


def payload_vectors(embeddings: bytes, dim: int) -> np.ndarray:
    """A Payload's embeddings as an (items, dim) float32 matrix."""
    return np.frombuffer(embeddings, "<f4").reshape(-1, dim)


class PairVerdicts:
    """`agrees` verdicts on pairs of revealed payloads, kept by the payloads' digests. Every member of a shard checks
    the same pairs (and a driver that runs many members, the simulator, checks each pair once per member), and the
    check is symmetric; keys are digests, so what is kept is small whatever the batch size."""

    def __init__(self, size: int = 1 << 14):
        self.size = size
        self._seen: OrderedDict[tuple[bytes, bytes, int], bool] = OrderedDict()

    def __call__(self, a: tuple[int, bytes], b: tuple[int, bytes], bound_micro: int) -> bool:
        ka, kb = _payload_key(a), _payload_key(b)
        key = (min(ka, kb), max(ka, kb), bound_micro)
        verdict = self._seen.get(key)
        if verdict is None:
            verdict = agrees(payload_vectors(a[1], a[0]), payload_vectors(b[1], b[0]), bound_micro)
            self._seen[key] = verdict
            if len(self._seen) > self.size:
                self._seen.popitem(last=False)
        return verdict


def _payload_key(p: tuple[int, bytes]) -> bytes:
    return H("space-check", p[0].to_bytes(4, "big") + p[1])


payloads_agree = PairVerdicts()


def off_space(space: Space, member: bytes, candidates: Mapping[bytes, tuple[int, bytes]]) -> str:
    """Why `member`'s candidate cannot win in `space` ("" when it can). `candidates` maps each revealed candidate
    (the member's included) to its payload's (dim, embeddings)."""
    dim, emb = candidates[member]
    if space.dim and dim != space.dim:
        return f"its vectors have {dim} dimensions, the space {space.id} has {space.dim}"
    others = [m for m, (d, _) in sorted(candidates.items()) if m != member and (not space.dim or d == space.dim)]
    if not others:
        return ""
    agree = sum(1 for m in others if payloads_agree((dim, emb), candidates[m], space.round_p5_micro))
    if agree >= 1 and 2 * agree >= len(others):
        return ""
    return f"its vectors agree with {agree} of the {len(others)} other candidates of space {space.id}"


def admitted(anchor_vectors: np.ndarray, model_vectors: np.ndarray, space: Space) -> tuple[int, int, bool]:
    """The admission rule on public text: (p5, median, admitted) of the same-text cosines to the anchor."""
    cos = cosines_micro(anchor_vectors, model_vectors)
    p5, med = quantile(cos, P5_BPS), quantile(cos, MEDIAN_BPS)
    return p5, med, p5 >= space.admit_p5_micro and med >= space.admit_median_micro
