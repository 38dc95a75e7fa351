"""The routing policies other than the protocol's own, evaluated on the same batches and the same realised losses.

- `random`: the shard as drawn, no proxies: the best honest member's own batch loss.
- `oracle`: perfect knowledge of skills: the expert with the lowest *expected* batch loss in the whole network
  (searched in a per-domain shortlist of the most skilled experts, which contains it), scored by its realised loss.
- `cbtm`: a cluster router in the style of c-BTM: spherical k-means over past routing vectors (the winner index),
  each cluster routed to the producer with the lowest mean winning loss in it (>= routing_min_hits wins); a cold
  cluster falls back to the shard.
The `market` policy is the protocol itself and is scored by the level that runs it.

Every policy works inside the batch's vector space, as the protocol does: `Baselines` keeps cbtm's clusters per
space (fitted on that space's winner index) and the oracle's shortlist per space, and neither picks an expert that
does not serve the space.
"""

import numpy as np

from moenode.sim.index import WinnerIndex
from moenode.sim.world import World, micro

BIG = np.int64(1 << 40)


def batch_of(item_micro: np.ndarray) -> np.ndarray:
    """Batch loss over the last axis with the Payload schema's round-half-up mean."""
    b = item_micro.shape[-1]
    return (2 * item_micro.sum(axis=-1) + b) // (2 * b)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 12) -> np.ndarray:
    """Spherical k-means (cosine) with k-means++ seeding, deterministic for the generator; unit centroids (k', D)."""
    k = min(k, len(x))
    cen = np.empty((k, x.shape[1]), dtype=x.dtype)  # k-means++ seeding, on cosine distance
    cen[0] = x[rng.integers(len(x))]
    dist = 1.0 - x @ cen[0]
    for j in range(1, k):
        p = np.clip(dist, 0, None) ** 2
        cen[j] = x[rng.choice(len(x), p=p / p.sum()) if p.sum() > 0 else rng.integers(len(x))]
        dist = np.minimum(dist, 1.0 - x @ cen[j])
    for _ in range(iters):
        lab = (x @ cen.T).argmax(axis=1)
        for j in range(k):
            pts = x[lab == j]
            if len(pts):
                c = pts.sum(axis=0)
                cen[j] = c / max(np.linalg.norm(c), 1e-12)
    return cen


class Cbtm:
    def __init__(self, clusters: int, min_hits: int, seed: int):
        self.clusters, self.min_hits, self.seed = clusters, min_hits, seed
        self.centres: np.ndarray | None = None
        self.expert = np.zeros(0, dtype=np.int64)  # per cluster, the producer it routes to (-1: cold)

    def fit(self, index: WinnerIndex, round_: int) -> None:
        size = len(index)
        if size < 4 * self.clusters:
            return
        x, prod, loss = index.vec[:size], index.producer[:size], index.loss[:size]
        cen = kmeans(x, self.clusters, np.random.default_rng(self.seed + round_))
        lab = (x @ cen.T).argmax(axis=1)
        best = np.full(len(cen), -1, dtype=np.int64)
        for j in range(len(cen)):
            m = lab == j
            if not m.any():
                continue
            uniq, inv = np.unique(prod[m], return_inverse=True)
            cnt = np.bincount(inv)
            mean = np.bincount(inv, weights=loss[m]) / cnt
            mean[cnt < self.min_hits] = np.inf
            if np.isfinite(mean).any():
                best[j] = uniq[int(mean.argmin())]
        self.centres, self.expert = cen, best

    def route(self, x: np.ndarray, online: np.ndarray) -> np.ndarray:
        """Expert per batch (B, b, D) -> (B,), -1 when cold."""
        if self.centres is None:
            return np.full(len(x), -1, dtype=np.int64)
        mv = x.mean(axis=1)
        mv /= np.maximum(np.linalg.norm(mv, axis=1, keepdims=True), 1e-12)
        ce = self.expert[(mv @ self.centres.T).argmax(axis=1)]
        return np.where((ce >= 0) & online[np.maximum(ce, 0)], ce, -1)


def oracle_expert(world: World, shortlist: np.ndarray, w: np.ndarray, online: np.ndarray) -> np.ndarray:
    """Per batch (w: (B, b, K)), the live expert with the lowest expected batch loss."""
    top = shortlist[w.mean(axis=1).argmax(axis=1)]  # (B, m)
    exp_top = world.expected_loss(top[:, :, None], w[:, None, :, :]).mean(axis=2)
    exp_top = np.where(online[top], exp_top, np.inf)
    return top[np.arange(len(top)), exp_top.argmin(axis=1)]


def expert_batch_loss(world: World, experts: np.ndarray, ids: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Realised batch loss (micro) of one expert per batch."""
    return batch_of(micro(world.realised_loss(np.maximum(experts, 0)[:, None], ids, w)))


class Baselines:
    """The oracle and cbtm of every space: cbtm fitted on the space's winner index, the oracle's shortlist drawn from
    the experts that serve the space."""

    def __init__(self, world: World, serving: dict[str, np.ndarray], indexes: dict[str, WinnerIndex],
                 clusters: int, min_hits: int, seed: int, shortlist: int):
        self.world, self.serving, self.indexes, self.shortlist_size = world, serving, indexes, shortlist
        self.cbtm = {s: Cbtm(clusters, min_hits, seed) for s in serving}
        self.shortlist: dict[str, np.ndarray] = {}
        self.refresh()

    def refresh(self) -> None:
        """Draw the shortlists again (skills moved)."""
        size = self.shortlist_size
        self.shortlist = {s: self.world.top_experts(size, alive=mask) for s, mask in self.serving.items()}

    def fit(self, round_: int) -> None:
        for s, c in self.cbtm.items():
            c.fit(self.indexes[s], round_)

    def oracle(self, space: str, w: np.ndarray, online: np.ndarray) -> np.ndarray:
        return oracle_expert(self.world, self.shortlist[space], w, online & self.serving[space])

    def route(self, space: str, x: np.ndarray, online: np.ndarray) -> np.ndarray:
        return self.cbtm[space].route(x, online & self.serving[space])
