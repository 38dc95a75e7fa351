"""The synthetic world: domains in a latent space, an item stream, and experts whose losses follow from their skill.

Theory of operation
-------------------
- **Domains** are K unit centres in a D-dimensional latent space (the routing space). An item of domain k is
  `normalise(c_k + (sigma / 2) z)`; domains are drawn with Zipf popularity `p_k ~ 1 / (k+1)^zipf`.
- **Experts** hold a skill vector over domains, `S[e] >= 0`, with `sum(S[e]) = capacity[e]` (specialists put it in
  one domain, generalists spread it, weak experts have little). An item's region is the softmax of its cosine to the
  centres (`w(x)`, sharpness `beta`), and expert e's skill there is `w(x) . S[e]`.
- **Loss.** Expected loss `l_e(x) = lmin + (lmax - lmin) * exp(-w(x) . S[e])` (lower wins, like the split-half loss:
  about 0.5 for noise, a few percent for a strong in-domain model). The realised loss multiplies by
  `exp(noise * g(e, item))`, where `g` is a standard normal drawn from a counter-based hash of (seed, expert, item):
  every policy, both fidelity levels and any re-run see exactly the same realised losses. Collapsed encoders score
  1.0, as the constant encoder does on the real scorer.
- **Investment.** `invest(reward_by_domain, ...)` moves a fraction of an investing operator's capacity toward the
  domain with the highest reward per competitor, keeping capacity fixed; specialization can emerge from generalists.
- **Compute time** is `ms_per_item * items` per expert (slow nodes have a large factor), and each expert asks a price
  (its producer share in bps).
- **Spaces.** Expert e serves the vector space `spaces[e % len(spaces)]` of `[world] spaces` (one open space, `main`,
  by default); a world of measured models (`moenode.sim.real`) takes each model's space from the zoo instead.

All arithmetic is numpy and vectorised over batches of (expert, item) pairs; nothing here knows about the protocol.
"""

from dataclasses import dataclass, field

import numpy as np

from moenode.core.spaces import DEFAULT_SPACE, Space

U64 = np.uint64


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised: a counter-based hash, so noise needs no stored state."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> U64(27))) * U64(0x94D049BB133111EB)
        return x ^ (x >> U64(31))


def gauss(seed: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A standard normal per (a, b) pair, deterministic in (seed, a, b) (Box-Muller on two hashed uniforms)."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    with np.errstate(over="ignore"):
        k = _mix64(a * U64(0x9E3779B97F4A7C15) ^ _mix64(b + U64(seed & 0xFFFFFFFF) * U64(0x632BE59BD9B4E019)))
    u1 = ((k >> U64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    k2 = _mix64(k + U64(1))
    u2 = (k2 >> U64(11)).astype(np.float64) / float(1 << 53)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@dataclass
class WorldConfig:
    domains: int = 8
    dim: int = 16
    zipf: float = 1.0
    sigma: float = 0.35  # item spread around its centre
    beta: float = 12.0  # sharpness of the region weights
    lmin: float = 0.03
    lmax: float = 0.50
    noise: float = 0.15  # log-normal spread of realised losses
    # expert mix (fractions of the network; the rest are generalists)
    specialists: float = 0.3
    weak: float = 0.2
    capacity: float = 3.0
    weak_capacity: float = 0.6
    ms_per_item: int = 40
    slow: float = 0.0  # fraction of slow nodes
    slow_factor: int = 200
    price_bps_low: int = 1_000
    price_bps_high: int = 5_000
    spaces: list = field(default_factory=lambda: [DEFAULT_SPACE])  # synthetic: expert e serves spaces[e % len]
    # real-encoder mode (moenode.sim.real): measured zoo models on the packaged corpus instead of the synthetic world
    mode: str = "synthetic"  # synthetic | real
    real_models: list = field(default_factory=lambda: ["minilm-l6", "minilm-l3", "spec-code", "spec-legal",
                                                       "spec-man", "adv-bag-of-tokens", "adv-noise"])
    real_per_domain: int = 24
    real_router: str = "minilm-l3"


class World:
    """What the simulators ask of a world: its domains and routing space, the experts' kinds, speeds and prices, the
    item stream and every expert's losses on it. `SyntheticWorld` draws them (this module's docstring), `RealWorld`
    (`moenode.sim.real`) measures them; `make_world` (`moenode.sim.worlds`) picks one from the scenario."""

    dim: int
    domains: int
    centres: np.ndarray  # (K, D) unit domain centres in the routing space
    popularity: np.ndarray  # (K,) probability of each domain in the item stream
    skill: np.ndarray  # (E, K)
    kind: np.ndarray  # per expert: "specialist" | "generalist" | "weak"
    ms_per_item: np.ndarray
    slow: np.ndarray  # bool per expert: a slow node
    price_bps: np.ndarray
    collapsed: np.ndarray  # bool: a collapsed encoder (scores 1.0)
    investing: np.ndarray  # bool: an operator that moves its capacity toward rewarded domains
    reveals_vectors = False  # whether `payload_vectors` knows the experts' vectors (then the space check can bite)

    def __init__(self, cfg: WorldConfig, seed: int, n_experts: int) -> None:
        self.cfg, self.seed, self.n_experts = cfg, seed, n_experts

    def draw_items(self, rng: np.random.Generator, n: int, per_batch: int) -> tuple[np.ndarray, np.ndarray]:
        """n batches of `per_batch` items, each batch from one domain: (domains (n,), vectors (n, per_batch, D))."""
        raise NotImplementedError

    def region(self, x: np.ndarray) -> np.ndarray:
        """Soft domain weights w(x), shape (..., K)."""
        a = self.cfg.beta * (x @ self.centres.T)
        a -= a.max(axis=-1, keepdims=True)
        w = np.exp(a)
        return w / w.sum(axis=-1, keepdims=True)

    def expected_loss(self, experts: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Expected loss of experts (shape S) on items with region weights w (shape S + (K,))."""
        raise NotImplementedError

    def payload_vectors(self, expert: int, items: np.ndarray) -> np.ndarray | None:
        """The vectors an expert reveals for items, when the world knows them (real mode); None: synthetic."""
        return None

    def deliver(self, space: str, producer: int, items: np.ndarray) -> None:
        """A certified round gave the submitter `producer`'s vectors of `items` (kept in real mode, for quality)."""

    def delivered_quality(self) -> dict[str, dict]:
        """Per space, what the submitters received against each model alone (real mode); {} when unknown."""
        return {}

    def spaces(self) -> tuple[tuple[Space, ...], list[str]]:
        """The network's spaces (the first is the default) and, per expert, the one its model serves."""
        ids = [str(s) for s in self.cfg.spaces] or [DEFAULT_SPACE]
        return tuple(Space(id=s) for s in dict.fromkeys(ids)), [ids[e % len(ids)] for e in range(self.n_experts)]

    def label(self, expert: int) -> str:
        """What a win is counted under in the per-space results: the expert's kind (its model in real mode)."""
        return str(self.kind[expert])

    def adversary(self, expert: int) -> bool:
        """Whether the expert's model is a reference cheat (real mode: the zoo's adv-* models)."""
        return False

    def estimate_micro(self, experts: np.ndarray, w: np.ndarray) -> np.ndarray:
        """A member's own estimate for a batch (its expected loss, averaged over the items), in micro-units."""
        return micro(self.expected_loss(experts, w).mean(axis=-1))

    def realised_loss(self, experts: np.ndarray, items: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Realised per-item loss in [0, 1] for experts (S) on item ids (S) with region weights (S + (K,))."""
        raise NotImplementedError

    def top_experts(self, m: int, alive: np.ndarray | None = None) -> np.ndarray:
        """Per domain, the m best experts (the oracle's shortlist), shape (K, m)."""
        raise NotImplementedError

    def invest(self, reward_by_domain: np.ndarray, rate: float) -> None:
        """Operators move capacity toward rewarded domains (a world without investment ignores it)."""
        raise NotImplementedError

    def specialization(self) -> float:
        """Mean share of capacity in an expert's top domain (nan where the world has no notion of it)."""
        raise NotImplementedError


class SyntheticWorld(World):
    """The drawn world of this module's docstring."""

    def __init__(self, cfg: WorldConfig, seed: int, n_experts: int) -> None:
        super().__init__(cfg, seed, n_experts)
        c, rng = self.cfg, np.random.default_rng(self.seed)
        self.dim, self.domains = c.dim, c.domains
        cen = rng.normal(size=(c.domains, c.dim))
        self.centres = cen / np.linalg.norm(cen, axis=1, keepdims=True)
        p = 1.0 / np.arange(1, c.domains + 1) ** c.zipf
        self.popularity = p / p.sum()
        E = self.n_experts
        u = rng.random(E)
        kind = np.where(u < c.specialists, "specialist", np.where(u < c.specialists + c.weak, "weak", "generalist"))
        skill = np.zeros((E, c.domains))
        home = rng.integers(0, c.domains, size=E)
        spec = kind == "specialist"
        skill[spec, home[spec]] = c.capacity
        gen = kind == "generalist"
        skill[gen] = c.capacity / c.domains
        weak = kind == "weak"
        skill[weak] = c.weak_capacity / c.domains
        self.skill = skill * rng.uniform(0.85, 1.15, size=(E, 1))
        self.kind = kind.astype(object)
        speed = rng.uniform(0.7, 1.3, size=E)
        slow = rng.random(E) < c.slow
        self.slow = slow
        self.ms_per_item = np.maximum(1, (c.ms_per_item * speed * np.where(slow, c.slow_factor, 1))).astype(np.int64)
        self.price_bps = rng.integers(c.price_bps_low, c.price_bps_high + 1, size=E)
        self.collapsed = np.zeros(E, dtype=bool)
        self.investing = np.zeros(E, dtype=bool)
        self._invest_rng = np.random.default_rng(self.seed + 3)

    # items ---------------------------------------------------------------------------------------------------------
    def draw_items(self, rng: np.random.Generator, n: int, per_batch: int) -> tuple[np.ndarray, np.ndarray]:
        """n batches of `per_batch` items, each batch from one domain: (domains (n,), vectors (n, per_batch, D))."""
        c = self.cfg
        dom = rng.choice(c.domains, size=n, p=self.popularity)
        z = rng.normal(size=(n, per_batch, c.dim)) * (c.sigma / 2)  # per-coordinate spread
        x = self.centres[dom][:, None, :] + z
        x /= np.linalg.norm(x, axis=2, keepdims=True)
        return dom, x.astype(np.float32)

    # losses --------------------------------------------------------------------------------------------------------
    def expected_loss(self, experts: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Expected loss of experts (shape S) on items with region weights w (shape S + (K,))."""
        c = self.cfg
        s = np.einsum("...k,...k->...", self.skill[experts], w)
        out = c.lmin + (c.lmax - c.lmin) * np.exp(-s)
        return np.where(self.collapsed[experts], 1.0, out)

    def realised_loss(self, experts: np.ndarray, items: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Realised per-item loss in [0, 1] for experts (S) on item ids (S) with region weights (S + (K,))."""
        g = gauss(self.seed, experts, items)
        out = self.expected_loss(experts, w) * np.exp(self.cfg.noise * g)
        return np.where(self.collapsed[experts], 1.0, np.clip(out, 0.0, 1.0))

    def top_experts(self, m: int, alive: np.ndarray | None = None) -> np.ndarray:
        """Per domain, the m most skilled experts (the oracle's shortlist), shape (K, m)."""
        s = np.where(self.collapsed[:, None], -1.0, self.skill)
        if alive is not None:
            s = np.where(alive[:, None], s, -2.0)
        m = min(m, s.shape[0])
        idx = np.argpartition(-s, m - 1, axis=0)[:m].T
        return idx

    # investment ----------------------------------------------------------------------------------------------------
    def invest(self, reward_by_domain: np.ndarray, rate: float, share: float = 0.25) -> None:
        """A random `share` of the investing operators moves `rate` of its capacity toward its best domain.

        The value of domain k to an operator is the reward paid in k per competitor there (an expert with more than
        half its capacity in k competes in k; the operator itself does not count), times `1 + 2 * own share of k`
        (what it already knows is cheaper to deepen). Operators reconsider at random times, not all at once, so the
        market is not a herd that moves together.
        """
        if not self.investing.any() or reward_by_domain.sum() <= 0:
            return
        K = self.domains
        home = self.skill.argmax(axis=1)
        strong = self.skill.max(axis=1) > 0.5 * self.skill.sum(axis=1)
        competitors = np.bincount(home[strong], minlength=K).astype(float)
        inv = np.flatnonzero(self.investing & (self._invest_rng.random(self.n_experts) < share))
        if len(inv) == 0:
            return
        cap = self.skill[inv].sum(axis=1, keepdims=True)
        own = self.skill[inv] / np.maximum(cap, 1e-9)
        comp = competitors[None, :] - (strong[inv, None] & (home[inv, None] == np.arange(K)))
        value = reward_by_domain[None, :] / (1.0 + comp) * (1.0 + 2.0 * own)
        target = value.argmax(axis=1)
        moved = (1 - rate) * self.skill[inv]
        moved[np.arange(len(inv)), target] += rate * cap[:, 0]
        self.skill[inv] = moved
        focused = moved.max(axis=1) > 0.5 * moved.sum(axis=1)  # the kind follows the skill it now has
        self.kind[inv] = np.where(focused, "specialist", "generalist")

    def specialization(self) -> float:
        """Mean share of capacity in an expert's top domain over non-weak, non-collapsed experts (1/K .. 1)."""
        ok = (self.kind != "weak") & ~self.collapsed
        if not ok.any():
            return 0.0
        s = self.skill[ok]
        return float((s.max(axis=1) / np.maximum(s.sum(axis=1), 1e-12)).mean())


def micro(x: np.ndarray) -> np.ndarray:
    """Float losses to integer micro-units, as signed in payloads."""
    return np.rint(np.asarray(x) * 1e6).astype(np.int64)


def routing_vectors(x: np.ndarray) -> np.ndarray:
    """What a certificate carries and every index stores: float16 routing vectors, read back and re-normalised."""
    v = np.asarray(x, dtype="<f2").astype(np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
