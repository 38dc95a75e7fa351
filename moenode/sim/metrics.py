"""What a run measures, and the summary that goes into results.json.

The recorder takes per-submission outcomes from either fidelity level: the loss each routing policy achieved on the
same batch, who won (and whether by proxy), rewards, strikes and round latency, and per vector space the rounds,
their certificates, the wins per producer and the wins of cheats (byzantine nodes and adversary models, listed with
0 when they never won). `summary()` turns them into the
results dictionary; `routing_curve()` gives the RouteLLM-style curve (share of the random->oracle gap recovered
against the share of items proxied) and its area, `apgr`.
"""

from dataclasses import dataclass, field

import numpy as np

POLICIES = ("market", "cbtm", "random", "oracle")


def gini(x: np.ndarray) -> float:
    x = np.sort(np.clip(np.asarray(x, dtype=np.float64), 0, None))
    if x.sum() <= 0:
        return 0.0
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1).dot(x) / (n * x.sum()))


@dataclass
class SpaceTally:
    """One space's rounds: how many paid, how many were certified, who produced the winning vectors."""

    rounds: int = 0  # submissions that named the space and paid
    certified: int = 0
    unserved: int = 0  # refused before paying: no staked node serves the space
    wins: dict[str, int] = field(default_factory=dict)  # producer label -> certified wins
    cheat_wins: dict[str, int] = field(default_factory=dict)  # cheat label -> certified wins (0 listed)

    def add(self, ok: bool, label: str = "", cheat: str = "") -> None:
        self.rounds += 1
        if ok:
            self.certified += 1
            self.wins[label] = self.wins.get(label, 0) + 1
            if cheat:
                self.cheat_wins[cheat] = self.cheat_wins.get(cheat, 0) + 1

    def as_dict(self) -> dict:
        return {"rounds": self.rounds, "certified": self.certified, "refunded": self.rounds - self.certified,
                "unserved": self.unserved, "wins": dict(sorted(self.wins.items())),
                "cheat_wins": dict(sorted(self.cheat_wins.items())), "cheat_wins_total": sum(self.cheat_wins.values())}


@dataclass
class Recorder:
    nodes: int
    domains: int
    classes: list[str]
    loss: dict[str, list[np.ndarray]] = field(default_factory=lambda: {p: [] for p in POLICIES})
    served: dict[str, list[np.ndarray]] = field(default_factory=lambda: {p: [] for p in POLICIES})  # outside shard
    spec_win: dict[str, list[np.ndarray]] = field(default_factory=lambda: {p: [] for p in POLICIES})
    certified: list[np.ndarray] = field(default_factory=list)
    latency: list[np.ndarray] = field(default_factory=list)
    curve_score: list[np.ndarray] = field(default_factory=list)  # market routing score per submission
    curve_proxied_loss: list[np.ndarray] = field(default_factory=list)
    specialization: list[tuple[int, float]] = field(default_factory=list)
    supply: list[tuple[int, int]] = field(default_factory=list)
    spaces: dict[str, SpaceTally] = field(default_factory=dict)
    quality: dict[str, dict] = field(default_factory=dict)  # real mode: delivered quality per space (run end)

    def expect_spaces(self, cheats_by_space: dict[str, set[str]]) -> None:
        """The spaces of the network, each with the cheats that serve it (so a cheat that never wins shows 0)."""
        for space, cheats in cheats_by_space.items():
            self.spaces.setdefault(space, SpaceTally()).cheat_wins.update({c: 0 for c in sorted(cheats)})

    def space_round(self, space: str, ok: bool, label: str = "", cheat: str = "") -> None:
        self.spaces.setdefault(space, SpaceTally()).add(ok, label, cheat)

    def space_unserved(self, space: str) -> None:
        self.spaces.setdefault(space, SpaceTally()).unserved += 1

    def __post_init__(self) -> None:
        self.wins = np.zeros((self.nodes, self.domains), dtype=np.int64)
        self.earned = np.zeros(self.nodes, dtype=np.int64)
        self.strikes = np.zeros(self.nodes, dtype=np.int64)
        self.faulty = np.zeros(self.nodes, dtype=np.int64)
        self.slashed = np.zeros(self.nodes, dtype=np.int64)

    def add_policy(self, policy: str, loss: np.ndarray, outside: np.ndarray, specialist: np.ndarray) -> None:
        self.loss[policy].append(np.asarray(loss, dtype=np.float64))
        self.served[policy].append(np.asarray(outside, dtype=bool))
        self.spec_win[policy].append(np.asarray(specialist, dtype=bool))

    # summaries --------------------------------------------------------------------------------------------------
    def _cat(self, policy: str, what: dict[str, list[np.ndarray]]) -> np.ndarray:
        parts = what[policy]
        return np.concatenate(parts) if parts else np.zeros(0)

    def series(self, policy: str, points: int = 60) -> tuple[list[int], list[float]]:
        x = self._cat(policy, self.loss)
        if len(x) == 0:
            return [], []
        edges = np.linspace(0, len(x), min(points, len(x)) + 1).astype(int)

        def mean(part: np.ndarray) -> float:  # NaN (a failed round) does not count; all NaN stays NaN
            ok = part[~np.isnan(part)]
            return float(ok.mean()) if len(ok) else float("nan")

        return [int(b) for b in edges[1:]], [mean(x[a:b]) for a, b in zip(edges[:-1], edges[1:])]

    def routing_curve(self, warm: int) -> tuple[list[float], list[float], float]:
        """Proxy the submissions with the highest market routing score first; PGR against the share proxied."""
        if not self.curve_score:
            return [], [], float("nan")
        score = np.concatenate(self.curve_score)[warm:]
        lp = np.concatenate(self.curve_proxied_loss)[warm:]
        lr = self._cat("random", self.loss)[warm:]
        lo = self._cat("oracle", self.loss)[warm:]
        ok = ~(np.isnan(lr) | np.isnan(lo) | np.isnan(lp))
        score, lp, lr, lo = score[ok], lp[ok], lr[ok], lo[ok]
        n = len(score)
        gap = lr.mean() - lo.mean() if n else 0.0
        if n == 0 or gap <= 0:
            return [0.0, 1.0], [0.0, 0.0], float("nan")
        order = np.argsort(-score, kind="stable")
        gain = np.concatenate([[0.0], np.cumsum((lr - lp)[order])]) / n
        share = np.arange(n + 1) / n
        pgr = gain / gap
        idx = np.unique(np.linspace(0, n, min(n + 1, 101)).astype(int))
        apgr = float(np.trapezoid(pgr, share))
        return share[idx].tolist(), pgr[idx].tolist(), apgr

    def summary(self, warmup: float, kinds: np.ndarray) -> dict:
        out: dict = {"policies": {}}
        n = len(self._cat("random", self.loss))
        warm = int(n * warmup)
        for p in POLICIES:
            loss = self._cat(p, self.loss)[warm:]
            served = self._cat(p, self.served)[warm:]
            spec = self._cat(p, self.spec_win)[warm:]
            ok = ~np.isnan(loss)
            out["policies"][p] = {
                "mean_loss": float(loss[ok].mean()) if ok.any() else float("nan"),
                "win_rate_specialists": float(spec[ok].mean()) if ok.any() else float("nan"),
                "proxy_rate": float(served[ok].mean()) if ok.any() else float("nan"),
                "served": int(ok.sum()),
            }
        lr, lm, lo = (out["policies"][p]["mean_loss"] for p in ("random", "market", "oracle"))
        out["routing_ratio"] = float((lr - lm) / (lr - lo)) if lr - lo > 1e-12 else float("nan")
        lc = out["policies"]["cbtm"]["mean_loss"]
        out["routing_ratio_cbtm"] = float((lr - lc) / (lr - lo)) if lr - lo > 1e-12 else float("nan")
        share, pgr, apgr = self.routing_curve(warm)
        out["apgr"] = apgr
        out["routing_curve"] = {"proxied_share": share, "pgr": pgr}
        cert = np.concatenate(self.certified) if self.certified else np.zeros(0, bool)
        out["certified_rate"] = float(cert.mean()) if len(cert) else float("nan")
        out["reward_gini"] = gini(self.earned)
        lat = np.concatenate(self.latency) if self.latency else np.zeros(0)
        out["latency_ms"] = {q: float(np.percentile(lat, v)) for q, v in (("p50", 50), ("p90", 90), ("p99", 99))} \
            if len(lat) else {}
        by_class: dict[str, dict[str, float]] = {}
        for c in sorted(set(self.classes)):
            mask = np.array([k == c for k in self.classes])
            by_class[c] = {"nodes": int(mask.sum()),
                           "strikes_per_node": float(self.strikes[mask].mean()),
                           "faulty_per_node": float(self.faulty[mask].mean()),
                           "slashed_per_node": float(self.slashed[mask].mean()),
                           "earned_per_node": float(self.earned[mask].mean())}
        out["classes"] = by_class
        out["specialization"] = [[e, s] for e, s in self.specialization]
        out["spaces"] = {space: t.as_dict() for space, t in self.spaces.items()}
        for space, quality in self.quality.items():  # real mode: what the submitters received, against each model
            out["spaces"].setdefault(space, SpaceTally().as_dict())["quality"] = quality
        return out
