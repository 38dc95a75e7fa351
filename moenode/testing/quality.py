"""What a submitter received, judged by labels: retrieval quality of delivered embeddings against each model alone.

Theory of operation
-------------------
A submitter that embeds a corpus batch by batch keeps **one index across its batches**, so quality is global: for
each item, the rank of its nearest same-label neighbour among every other delivered item (`one_index_mrr`, the mean
reciprocal rank over items whose label occurs twice or more; ties count against the embedding, as in
`moenode.encoders.train.mrr`). Batches won by models of different spaces do not belong in one index; vectors of a
different dimension cannot be compared at all, so an item in another dimension is never retrieved: a label whose
other items all landed in another space scores 0 for that item. That is the price a submitter pays for a market
that mixes spaces, and the figure shows it.

The baselines are each model run alone on the same texts (`solo_vectors`: the model's plain embedding, what a
payload's `embeddings` hold), through the same function. `batch_agreement` is the per-batch check of the paying
score against labels: among the honest candidates of one round (the shard's members, or the experts they proxied
to), the share of (winner, other) pairs where the winner's within-batch label quality is at least the other's.

`shard_members` recomputes a certified round's shard from a node's ledger (the stake that serves the round's space
and the seed of its epoch, section 3 of the spec), so a benchmark knows who the candidates were without trusting anyone.
"""

from __future__ import annotations

import functools

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def one_index_mrr(batches: Sequence[np.ndarray], labels: Sequence[str]) -> float | None:
    """Global MRR of the first same-label neighbour over one index holding every batch's vectors (`labels` in the
    order of the concatenated rows). Rows of another dimension are never neighbours. None if no label repeats."""
    from moenode.encoders.train import mrr_of_similarities

    dims = [b.shape[1] for b in batches]
    offsets = np.cumsum([0] + [len(b) for b in batches])
    if len(labels) != offsets[-1]:
        raise ValueError(f"{len(labels)} labels for {offsets[-1]} vectors")
    sims = np.full((offsets[-1], offsets[-1]), -np.inf, dtype=np.float32)
    for d in sorted(set(dims)):
        idx = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i, dd in enumerate(dims) if dd == d])
        group = np.concatenate([b for b, dd in zip(batches, dims) if dd == d]).astype(np.float32)
        group /= np.maximum(np.linalg.norm(group, axis=1, keepdims=True), 1e-12)
        sims[np.ix_(idx, idx)] = group @ group.T
    np.fill_diagonal(sims, -np.inf)
    return mrr_of_similarities(sims, labels)


def solo_vectors(model: str, texts: Sequence[str]) -> np.ndarray:
    """The model's own embeddings of `texts`, as a node serving it alone would deliver them. The last few answers
    are kept: a run that submits the same batches in several spaces compares each with the same models alone."""
    return _solo_vectors(model, tuple(texts))


@functools.lru_cache(maxsize=8)
def _solo_vectors(model: str, texts: tuple[str, ...]) -> np.ndarray:
    from moenode.encoders import zoo

    vecs = np.asarray(zoo.load(model).embed(list(texts)), dtype=np.float32)
    vecs.setflags(write=False)
    return vecs


def batch_agreement(quality: dict[str, float], winner: str) -> tuple[int, int]:
    """(agreeing pairs, pairs) for one round: `quality` maps each honest candidate to its within-batch label quality;
    a pair (winner, other) agrees when the winner's quality is at least the other's."""
    if winner not in quality:
        return 0, 0
    others = [q for c, q in quality.items() if c != winner]
    return sum(1 for q in others if quality[winner] >= q), len(others)


def shard_members(home: Path, certificates: Sequence) -> list[list[bytes]]:
    """The members of each certified round's shard, recomputed from a snapshot of HOME's ledger the way the ledger
    checks a certificate (the stake that serves the round's space, the epoch's seed; q signatures checked)."""
    import tempfile

    from moenode.core.crypto import ed25519_verify
    from moenode.core.genesis import parse_genesis
    from moenode.node.config import load_config
    from moenode.store.ledger_db import LedgerDB, rebuild
    from moenode.testing.ledger_tools import snapshot_ledger

    g = parse_genesis(load_config(home).path("genesis").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="moenode-quality-") as d:
        copy = snapshot_ledger(home, Path(d))
        if copy is None:
            raise RuntimeError(f"{home} has no ledger")
        db = LedgerDB(copy, g.network_id)
        try:
            led = rebuild(g, db, ed25519_verify)
        finally:
            db.close()
        return [sorted(led.check_shard_certificate(c)) for c in certificates]
