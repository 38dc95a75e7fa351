"""Real-encoder mode: the zoo's ONNX encoders on the packaged multi-domain corpus, with every result cached.

Theory of operation
-------------------
For small runs the synthetic world (`moenode.sim.world`) can be replaced by measurements. `RealWorld` takes
`real_per_domain` evaluation items of every corpus domain, embeds them with the router model (the routing space),
and scores every listed model on every item with the real split-half scorer (`moenode.encoders.scoring.score`,
batches of one domain, the network's reference corpus for negatives, a fixed seed). Both tables go to an `.npz`
cache keyed by the models' ids, the items and the parameters, so a second run costs nothing. Node i serves model
`real_models[i % len(real_models)]` and the space the zoo puts that model in (`zoo.space_of`: minilm-l6, its
specialists and adv-offspace, which claims it, serve `main`; minilm-l3 serves `l3`); the space of the first listed
model is the network's default. The revealed vectors are each model's own, so the in-round space check runs on them.

From then on it answers the same questions as the synthetic world: an item's realised loss for a node is the
measured loss of that node's model on that item; a node's expected loss in a region is its model's mean loss per
domain, weighted by the item's soft domain weights (cosine to the domain centroids in router space); the oracle's
shortlist ranks nodes by those means. There is no noise to draw and no skill to invest: specialisation here is
what the adapters in the zoo already have.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from moenode.core.spaces import Space
from moenode.sim.world import World, WorldConfig

COST_MS = {"minilm-l6": 36, "minilm-l3": 15, "spec-code": 38, "spec-legal": 38, "spec-man": 38}


def cache_dir() -> Path:
    return Path(os.environ.get("MOENODE_SIM_CACHE", Path.home() / ".cache" / "moenode" / "sim"))


def measured_items(per_domain: int) -> list:
    """The corpus items the real mode measures: the first `per_domain` of every domain's eval split."""
    from moenode.encoders import corpus

    return [it for d in corpus.domains() for it in corpus.split(d, "eval")[:per_domain]]


def item_labels(per_domain: int) -> list[str]:
    """Each measured item's label for retrieval quality: its domain and source (items of one source are relevant
    to each other, as in the labelled audit)."""
    return [f"{it.domain}/{it.source}" for it in measured_items(per_domain)]


def measure(models: list[str], per_domain: int, router: str, batch: int = 16) -> dict:
    """(cached) {domains, item_domain, router vectors, loss table (models x items) in micro-units, and each model's
    own float16 vectors of the items as `vectors_<i>`}."""
    from moenode.core.crypto import H
    from moenode.core.genesis import Params
    from moenode.encoders import corpus
    from moenode.encoders import scoring, zoo

    domains = corpus.domains()
    items = measured_items(per_domain)
    encs = {m: zoo.load(m) for m in models}
    router_enc = zoo.load(router)
    key = json.dumps([[m, encs[m].model_id.hex()] for m in models] + [router_enc.model_id.hex(), per_domain, batch,
                      [it.id for it in items], "vectors"]).encode()
    path = cache_dir() / f"real-{hashlib.sha256(key).hexdigest()[:20]}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return {k: z[k] for k in z.files} | {"domains": domains}
    texts = [it.text for it in items]
    dom = np.array([domains.index(it.domain) for it in items])
    x = router_enc.embed(texts).astype(np.float32)
    ref = scoring.reference_texts()
    params = Params()
    loss = np.zeros((len(models), len(items)), dtype=np.int64)
    for mi, m in enumerate(models):
        for d in range(len(domains)):
            idx = np.flatnonzero(dom == d)
            for s in range(0, len(idx), batch):
                part = idx[s:s + batch]
                sc = scoring.score(encs[m], [texts[i] for i in part], H("sim-real", bytes([d, s % 256])), params, ref)
                loss[mi, part] = sc.losses
    vectors: dict[str, np.ndarray] = {f"vectors_{mi}": encs[m].embed(texts).astype(np.float16)
                                      for mi, m in enumerate(models)}
    path.parent.mkdir(parents=True, exist_ok=True)
    # numpy's stubs read a ** mapping as its allow_pickle flag
    np.savez(path, **({"item_domain": dom, "x": x, "loss": loss} | vectors))  # type: ignore[arg-type]
    return {"item_domain": dom, "x": x, "loss": loss, "domains": domains} | vectors


class RealWorld(World):
    """`World`'s interface over measured losses (see the module docstring)."""

    reveals_vectors = True

    def __init__(self, cfg: WorldConfig, seed: int, n_experts: int) -> None:
        super().__init__(cfg, seed, n_experts)
        m = measure(list(cfg.real_models), cfg.real_per_domain, cfg.real_router)
        self.item_domain, self.x_items, self.loss_table = m["item_domain"], m["x"], m["loss"] / 1e6
        self.domain_names = [str(d) for d in m["domains"]]
        self.vectors = [m[f"vectors_{mi}"] for mi in range(len(cfg.real_models))]  # what each model reveals
        K = int(self.item_domain.max()) + 1
        self.dim = self.x_items.shape[1]
        self.domains = K
        cen = np.stack([self.x_items[self.item_domain == k].mean(axis=0) for k in range(K)])
        self.centres = cen / np.linalg.norm(cen, axis=1, keepdims=True)
        p = 1.0 / np.arange(1, K + 1) ** cfg.zipf
        self.popularity = p / p.sum()
        rng = np.random.default_rng(seed)
        self.model_of = np.arange(n_experts) % len(cfg.real_models)
        # per model, mean loss per domain: a node's knowledge of itself
        self.domain_mean = np.stack([[self.loss_table[mi, self.item_domain == k].mean() for k in range(K)]
                                     for mi in range(len(cfg.real_models))])
        names = list(cfg.real_models)
        self.kind = np.array(["specialist" if names[mi].startswith("spec-") else
                              "weak" if names[mi].startswith("adv-") else "generalist"
                              for mi in self.model_of], dtype=object)
        self.skill = np.zeros((n_experts, K))
        self.ms_per_item = np.array([COST_MS.get(names[mi], 5) for mi in self.model_of], dtype=np.int64)
        self.slow = rng.random(n_experts) < cfg.slow
        self.ms_per_item = np.where(self.slow, self.ms_per_item * cfg.slow_factor, self.ms_per_item)
        self.price_bps = rng.integers(cfg.price_bps_low, cfg.price_bps_high + 1, size=n_experts)
        self.collapsed = np.zeros(n_experts, dtype=bool)
        self.investing = np.zeros(n_experts, dtype=bool)
        self.stream = np.zeros(0, dtype=np.int64)  # item id -> measured item
        self.labels = item_labels(cfg.real_per_domain)  # measured item -> its source in the corpus
        self.delivered: dict[str, dict[int, int]] = {}  # space -> measured item -> model that delivered it last

    def draw_items(self, rng: np.random.Generator, n: int, per_batch: int) -> tuple[np.ndarray, np.ndarray]:
        dom = rng.choice(self.domains, size=n, p=self.popularity)
        pick = np.stack([rng.choice(np.flatnonzero(self.item_domain == d), size=per_batch) for d in dom])
        self.stream = np.concatenate([self.stream, pick.reshape(-1)])
        return dom, self.x_items[pick]

    def payload_vectors(self, expert: int, items: np.ndarray) -> np.ndarray | None:
        """The expert's model's own vectors of the items (so the in-round space check runs on real vectors)."""
        return self.vectors[self.model_of[expert]][self.stream[items]].astype(np.float32)

    def deliver(self, space: str, producer: int, items: np.ndarray) -> None:
        got = self.delivered.setdefault(space, {})
        for item in self.stream[items].tolist():
            got[item] = int(self.model_of[producer])

    def delivered_quality(self) -> dict[str, dict]:
        """The comparison `bench/quality.py` makes on a testnet, over the measured items: one index per space of
        every item a submitter received (the vectors of the model that won its last round), its global MRR of the
        first same-source neighbour, against each model of the space alone on the same items, overall and per
        domain."""
        from moenode.encoders import zoo
        from moenode.encoders.train import mrr

        names = list(self.cfg.real_models)
        out: dict[str, dict] = {}
        for space, got in sorted(self.delivered.items()):
            items = np.array(sorted(got), dtype=np.int64)
            models = [mi for mi, m in enumerate(names) if zoo.space_of(m) == space and not zoo.is_adversary(m)]
            groups = {"mixed": items} | {self.domain_names[k]: items[self.item_domain[items] == k]
                                         for k in sorted(set(self.item_domain[items].tolist()))}
            rows = {}
            for name, idx in groups.items():
                labels = [self.labels[i] for i in idx.tolist()]
                delivered = np.stack([self.vectors[got[i]][i] for i in idx.tolist()]).astype(np.float32)
                alone = {names[mi]: mrr(self.vectors[mi][idx].astype(np.float32), labels) for mi in models}
                best = max((v for v in alone.values() if v is not None), default=None)
                value = mrr(delivered, labels)
                rows[name] = {"items": len(idx), "delivered_mrr": value, "alone_mrr": alone,
                              "ratio_to_best_in_space": value / best if value is not None and best else None}
            out[space] = rows
        return out

    def spaces(self) -> tuple[tuple[Space, ...], list[str]]:
        from moenode.encoders import zoo

        names = list(self.cfg.real_models)
        ids = list(dict.fromkeys(zoo.space_of(m) for m in names))  # the first listed model's space is the default
        spaces = tuple(zoo.space(s) for s in ids)
        return spaces, [zoo.space_of(names[mi]) for mi in self.model_of]

    def label(self, expert: int) -> str:
        return str(self.cfg.real_models[self.model_of[expert]])

    def adversary(self, expert: int) -> bool:
        from moenode.encoders import zoo

        return zoo.is_adversary(self.label(expert))

    def expected_loss(self, experts: np.ndarray, w: np.ndarray) -> np.ndarray:
        out = np.einsum("...k,...k->...", self.domain_mean[self.model_of[experts]], w)
        return np.where(self.collapsed[experts], 1.0, out)

    def realised_loss(self, experts: np.ndarray, items: np.ndarray, w: np.ndarray) -> np.ndarray:
        experts, items = np.broadcast_arrays(experts, items)
        out = self.loss_table[self.model_of[experts], self.stream[items]]
        return np.where(self.collapsed[experts], 1.0, out)

    def top_experts(self, m: int, alive: np.ndarray | None = None) -> np.ndarray:
        score = self.domain_mean[self.model_of].copy()  # (E, K), lower is better
        score[self.collapsed] = 2.0
        if alive is not None:
            score[~alive] = 3.0
        m = min(m, len(score))
        return np.argsort(score, axis=0, kind="stable")[:m].T

    def invest(self, reward_by_domain: np.ndarray, rate: float) -> None:
        return  # measured models do not move

    def specialization(self) -> float:
        return float("nan")
