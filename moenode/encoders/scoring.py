"""Running the paying score: a producer's payload and a verifier's lazy check (protocol/scoring.md is normative).

Theory of operation. The exact part of the score lives in the core (`moenode.core.scoring`): the plan (buckets
within a common window, patterns, negatives, the row layout) and the loss recomputed in integers from revealed
float16 views. This module runs models on that plan. `make_payload` embeds every view and the full texts and
claims the exact losses; `verify_payload` is the lazy check a shard member runs on the best candidate (model id,
exact loss recomputation, re-execution of a seed-chosen sample of views, embeddings and routing vectors).
`additive_losses` is the seed's literal identity, kept for research: it rewards linear models (a bag of tokens and
the zero encoder score a perfect 0), so it never pays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from moenode.core.crypto import H
from moenode.core.genesis import Params
from moenode.core.messages import Payload, batch_loss
from moenode.core.scoring import (  # noqa: F401  (re-exported: the encoders side names the score from here)
    BUCKETS, MICRO, UNSCORED, Bucket, Plan, Stream, bucket_of, check_rows, half, losses_from_views, make_plan,
    pattern, verify_sample,
)
from moenode.encoders.runtime import CLS, MASK, SEP, Encoder, content_ids

Timer = Callable[[str], AbstractContextManager]  # stage name -> a block that accounts its CPU (node.stages)


def untimed(_stage: str) -> AbstractContextManager:
    return nullcontext()


def plan_for(items: Sequence[str], shard_seed: bytes, params: Params, reference: Sequence[str]) -> Plan:
    return make_plan(content_ids(items, 128), shard_seed, params, _reference_ids(tuple(reference)))


@lru_cache(maxsize=4)
def _reference_ids(reference: tuple[str, ...]) -> list[list[int]]:
    """The reference corpus tokenised once per process (it is fixed; tokenising it took 50 ms a round)."""
    return content_ids(reference, 128)


# producing and verifying a payload -----------------------------------------------------------------------------------
def to_f16(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(v, dtype="<f2")


@dataclass
class Scored:
    plan: Plan
    views: np.ndarray  # (rows, dim) float16
    losses: list[int]

    @property
    def batch_loss(self) -> int:
        return batch_loss(self.losses)


def score(encoder: Encoder, items: Sequence[str], shard_seed: bytes, params: Params,
          reference: Sequence[str], timer: Timer = untimed) -> Scored:
    """Run the encoder on every view and compute the per-item micro-losses from the float16 vectors.

    The batch's own views and the reference negatives' views (if the plan draws any) are embedded in two calls, so
    that `timer` can account them as two stages (each row is embedded on its own: the split does not change what a
    row scores).
    """
    with timer("scoring_views"):
        plan = plan_for(items, shard_seed, params, reference)
        seqs = plan.view_seqs()
        refs = sorted(b.row_ref(r, j) for b in plan.buckets
                      for r in range(len(b.refs)) for j in range(len(b.patterns)))
        is_ref = np.zeros(plan.rows, bool)
        is_ref[refs] = True
        own = np.flatnonzero(~is_ref)
        views = np.zeros((plan.rows, encoder.dim), "<f2")
        if len(own):
            views[own] = to_f16(encoder.embed_ids([seqs[r] for r in own]))
    if refs:
        with timer("reference_negatives"):
            views[refs] = to_f16(encoder.embed_ids([seqs[r] for r in refs]))
    with timer("scoring_views"):
        return Scored(plan, views, losses_from_views(plan, views))


def make_payload(encoder: Encoder, router: Encoder, items: list[str], shard_seed: bytes, params: Params,
                 reference: list[str], timer: Timer = untimed, routing: np.ndarray | None = None) -> Payload:
    """A producer's Payload: embeddings (float32 LE), views and routing vectors (float16 LE), exact losses.

    `routing`: the router's vectors of `items` if the caller computed them already (to choose a route).
    """
    s = score(encoder, items, shard_seed, params, reference, timer)
    with timer("member_embed"):
        emb = np.ascontiguousarray(encoder.embed(items), dtype="<f4")
    with timer("routing_vectors"):
        routing = to_f16(router.embed(items) if routing is None else routing)
    return Payload(model_id=encoder.model_id, dim=encoder.dim, embeddings=emb.tobytes(), views=s.views.tobytes(),
                   routing=routing.tobytes(), item_losses=tuple(s.losses), batch_loss=s.batch_loss)


def _cos_ok(revealed: np.ndarray, fresh: np.ndarray, cos_micro: int) -> np.ndarray:
    """Row-wise: cosine >= cos_micro/1e6, where two zero rows agree and zero vs non-zero disagree."""
    r, f = revealed.astype(np.float64), fresh.astype(np.float64)
    nr, nf = np.linalg.norm(r, axis=1), np.linalg.norm(f, axis=1)
    zr, zf = nr < 1e-6, nf < 1e-6
    cos = (r * f).sum(1) / np.maximum(nr * nf, 1e-30)
    return np.where(zr | zf, zr & zf, cos * MICRO >= cos_micro)


def sample_seed(shard_seed: bytes, payload: Payload) -> bytes:
    return H("verify", shard_seed + payload.digest())


def verify_payload(encoder: Encoder, router: Encoder, items: list[str], shard_seed: bytes, payload: Payload,
                   params: Params, reference: list[str], sample_seed_: bytes | None = None) -> tuple[bool, str]:
    """The lazy check of a candidate. (True, "ok") or (False, reason); bad payload content never raises.

    `sample_seed_` picks what is re-executed; by default H("verify", shard_seed || payload digest). A round that has
    a value fixed only after every commit (e.g. the accepted commit set) should pass it, so a producer cannot steer
    the sample by grinding its payload bytes.
    """
    n, dim = len(items), encoder.dim
    if payload.model_id != encoder.model_id:
        return False, "model_id is not the committed encoder's"
    if payload.dim != dim or len(payload.item_losses) != n:
        return False, "dim or item count does not match"
    if len(payload.embeddings) != n * dim * 4 or len(payload.routing) != n * router.dim * 2:
        return False, "embeddings or routing have the wrong size"
    plan = plan_for(items, shard_seed, params, reference)
    if len(payload.views) != plan.rows * dim * 2:
        return False, f"views hold {len(payload.views)} bytes, the plan needs {plan.rows} rows x {dim} float16"
    views = np.frombuffer(payload.views, "<f2").reshape(plan.rows, dim)
    emb = np.frombuffer(payload.embeddings, "<f4").reshape(n, dim)
    routing = np.frombuffer(payload.routing, "<f2").reshape(n, router.dim)
    why = check_rows(views)
    if why:
        return False, f"views: {why}"
    if not np.isfinite(emb).all() or not np.isfinite(routing).all():
        return False, "embeddings or routing are not finite"
    losses = losses_from_views(plan, views)
    if tuple(losses) != payload.item_losses:
        bad = next(i for i, (a, b) in enumerate(zip(losses, payload.item_losses)) if a != b)
        return False, f"item {bad}: claimed loss {payload.item_losses[bad]}, views give {losses[bad]}"
    if payload.batch_loss != batch_loss(losses):
        return False, "batch_loss does not match"

    rows, picks = verify_sample(plan, params, sample_seed_ or sample_seed(shard_seed, payload))
    seqs = plan.view_seqs()
    if rows:
        fresh = encoder.embed_ids([seqs[r] for r in rows])
        ok = _cos_ok(views[rows], fresh, params.verify_cos_micro)
        if not ok.all():
            return False, f"view row {rows[int(np.argmin(ok))]} does not re-execute"
    texts = [items[i] for i in picks]
    ok = _cos_ok(emb[picks], encoder.embed(texts), params.verify_cos_micro)
    if not ok.all():
        return False, f"embedding of item {picks[int(np.argmin(ok))]} does not re-execute"
    ok = _cos_ok(routing[picks], router.embed(texts), params.verify_cos_micro)
    if not ok.all():
        return False, f"routing vector of item {picks[int(np.argmin(ok))]} does not re-execute"
    return True, "ok"


# research: the seed's additive identity (never pays) ------------------------------------------------------------------
def additive_losses(encoder: Encoder, items: Sequence[str], shard_seed: bytes, params: Params) -> list[float]:
    """loss = mean_j |F - A_j - B_j|^2 / (mean_{j!=k} |F - A_j - B_k|^2 + 1e-9), [MASK] views keeping length.

    F is the item (cut to its bucket), A_j keeps the tokens at P_j and masks the rest, B_j the reverse. Items too
    short to score get NaN. A bag-of-tokens model is exactly additive here, and the zero encoder scores 0.
    """
    ids = content_ids(items, 128)
    out = [float("nan")] * len(items)
    mm = params.mask_views
    for i, x in enumerate(ids):
        t = bucket_of(len(x))
        if not t or mm < 2:
            continue
        x = x[:t]
        seqs = [[CLS] + x + [SEP]]
        for j in range(mm):
            pj = set(pattern(shard_seed, t, j))
            seqs.append([CLS] + [x[p] if p in pj else MASK for p in range(t)] + [SEP])
            seqs.append([CLS] + [MASK if p in pj else x[p] for p in range(t)] + [SEP])
        v = encoder.embed_ids(seqs).astype(np.float64)
        f, a, b = v[0], v[1::2], v[2::2]
        num = np.mean([np.sum((f - a[j] - b[j]) ** 2) for j in range(mm)])
        den = np.mean([np.sum((f - a[j] - b[k]) ** 2) for j in range(mm) for k in range(mm) if j != k])
        out[i] = float(num / (den + 1e-9))
    return out


def reference_texts() -> list[str]:
    """The network's reference corpus, in its fixed order: every domain's reference split, domains sorted.

    Nodes prove they hold the same one by comparing `moenode.encoders.corpus.reference_digest()`.
    """
    from moenode.encoders import corpus

    return [item.text for d in corpus.domains() for item in corpus.split(d, "reference")]
