"""The testnet demo and benchmark flow: real corpus text through a running testnet, measured against one node alone.

Theory of operation: `workload` cuts the shipped corpus into batches, each from one domain (domains in turn), so the
market has regions for its specialists to win. `run_workload` first measures the baseline in this process, one node
embedding and scoring each batch alone with the genesis parameters (`embed_ms_single`: the same Payload work a
shard member does), then submits the batches through the testnet's nodes in turn, `concurrency` at a time, waits
until every node holds the same ledger, and `summarize`s: certified/failed, latency percentiles and their ratio to
the baseline, throughput against the compute ceiling `cores / (shard size x embed_ms_single)`, proxied rounds and
proxied wins, wins per producer and per domain, the total supply before and after (it must not change), and the
quality delivered (`moenode.testing.quality`: one index per domain and one over every batch, against each model of
the market run alone on the same texts). Submissions carry a commit deadline (`deadline_ms`), so the large expert
takes part without latency strikes. With `concurrency` 1 a round counts as proxied when an expert served a member
of it (the nodes' counters, read around each submission); with more in flight only the totals are known.
`run_demo` wraps it with a testnet of its own. Progress goes to a UI object with `phase(name, total)`, `advance(info)` and `close()`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moenode.client import ControlError
from moenode.core.genesis import Params, parse_genesis
from moenode.testing.ledger_tools import ledger_views, wait_ledgers_equal
from moenode.testing.testnet import DEFAULT_DEADLINE_MS, Testnet, testnet_params

log = logging.getLogger("moenode.testnet")


@dataclass
class DemoConfig:
    nodes: int = 5
    submissions: int = 20
    batch: int = 16  # items per submission, all from one corpus domain
    concurrency: int = 1  # submissions in flight at once
    epoch_ms: int = 30_000
    keep: bool = False  # leave the testnet running
    fee: int | None = None  # None: each node's config (submit_fee)
    models: list[str] | None = None
    seed: int = 0
    baseline_model: str = "minilm-l6"  # the single node of embed_ms_single
    submit_timeout_s: float = 600.0
    settle_timeout_s: float = 60.0
    measure_baseline: bool = True  # embed_ms_single (costs one node's work per batch, in this process)
    gateways: list[str] | None = None  # node names to submit through (default: every live node in turn)
    domains: list[str] | None = None  # corpus domains to draw batches from (default: all, in turn)
    deadline_ms: int = DEFAULT_DEADLINE_MS  # the submitter's commit deadline (0: the genesis timers)
    measure_quality: bool = True  # label quality of what was delivered against each model alone (embeds locally)


class NullUI:
    def phase(self, name: str, total: int) -> None:
        log.info("phase %s total=%d", name, total)

    def advance(self, info: str = "") -> None:
        pass

    def close(self) -> None:
        pass


def workload(submissions: int, batch: int, seed: int = 0, domains: Sequence[str] | None = None,
             audit: bool = False) -> list[tuple[str, list[str]]]:
    """`submissions` batches of real text, each from one domain of the shipped corpus (domains in turn).

    Items come from each domain's eval split (with `audit`: the held-out audit set) in a seed-determined order, so
    runs are reproducible and batches of one run do not repeat items until a domain is exhausted.
    """
    from moenode.core.crypto import H
    from moenode.encoders import corpus

    domains = list(domains or (corpus.audit_domains() if audit else corpus.domains()))
    pools = {}
    for d in domains:
        items = corpus.audit(d) if audit else corpus.split(d, "eval")
        pools[d] = [it.text for it in sorted(items, key=lambda it: H("demo-order", f"{seed}/{it.id}".encode()))]
    out, cursor = [], dict.fromkeys(domains, 0)
    for i in range(submissions):
        d = domains[i % len(domains)]
        pool = pools[d]
        texts = [pool[(cursor[d] + k) % len(pool)] for k in range(batch)]
        cursor[d] += batch
        out.append((d, texts))
    return out


def percentile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return 0.0
    import numpy as np

    return float(np.percentile(np.asarray(xs, dtype=float), q))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class Submitted:
    index: int
    domain: str
    node: str
    start: float
    end: float
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    served: int | None = None  # proxy requests experts served during this round (None: not attributable)
    texts: list[str] = field(default_factory=list, repr=False)

    @property
    def latency_ms(self) -> float:
        return (self.end - self.start) * 1000


def submit_all(tn: Testnet, batches: Sequence[tuple[str, list[str]]], *, concurrency: int = 1,
               fee: int | None = None, timeout: float = 600.0, ui: Any = None,
               on_done: Any = None, gateways: Sequence[str] | None = None, deadline_ms: int = 0,
               space: str = "") -> list[Submitted]:
    """Send each batch through a live node (nodes in turn), `concurrency` at a time, naming `space` ("" for each
    node's default). Never raises for a round."""
    from concurrent.futures import ThreadPoolExecutor

    ui = ui or NullUI()
    pool_nodes = [nd for nd in tn.nodes if gateways is None or nd.name in gateways]

    def one(i: int, domain: str, texts: list[str]) -> Submitted:
        live = [nd for nd in pool_nodes if nd.alive()] or pool_nodes
        nd = live[i % len(live)]
        before = proxy_counters(tn) if concurrency == 1 else None
        t0 = time.monotonic()
        try:
            res = nd.control(timeout).submit(texts, fee, timeout=timeout, deadline_ms=deadline_ms, space=space)
            ok = bool(res.get("certificate"))
            sub = Submitted(i, domain, nd.name, t0, time.monotonic(), ok, res, "" if ok else "no certificate")
        except ControlError as e:
            sub = Submitted(i, domain, nd.name, t0, time.monotonic(), False, {}, str(e))
        if before is not None:
            sub.served = proxy_delta(before, proxy_counters(tn), "served")
        sub.texts = texts
        return sub

    results: list[Submitted] = []
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(one, i, d, t) for i, (d, t) in enumerate(batches)]
        for f in futures:
            sub = f.result()
            results.append(sub)
            ui.advance(f"{sub.domain}: {'certified' if sub.ok else 'FAILED'} in {sub.latency_ms / 1000:.1f}s")
            if on_done is not None:
                on_done(sub)
    return results


def proxy_counters(tn: Testnet) -> dict[str, dict[str, int]]:
    """{node: {"sent", "served", "fallbacks", ...}} from every live node's /status."""
    out = {}
    for nd, st in zip(tn.nodes, tn.statuses(10)):
        if st and isinstance(st.get("proxies"), dict):
            out[nd.name] = {k: int(v or 0) for k, v in st["proxies"].items()}
    return out


def proxy_delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], key: str) -> int:
    """How much `key` grew over the run, summed over nodes (a restarted node counts from zero again)."""
    total = 0
    for name, now in after.items():
        was = before.get(name, {}).get(key, 0)
        got = now.get(key, 0)
        total += got - was if got >= was else got
    return total


def summarize(tn: Testnet, cfg: DemoConfig, subs: Sequence[Submitted], single_ms: Sequence[float],
              supply_before: Any, supply_after: Any, proxies: dict[str, int] | None = None) -> dict[str, Any]:
    ok = [s for s in subs if s.ok]
    lat = [s.latency_ms for s in ok]
    wins = _Wins.count(ok, {nd.account: nd.model for nd in tn.nodes})
    proxies = proxies or {}
    attributable = all(s.served is not None for s in subs)
    proxied_rounds = sum(1 for s in ok if (s.served or 0) > 0 or s.result.get("producer") != s.result.get("winner")) \
        if attributable else None
    wall = (max(s.end for s in subs) - min(s.start for s in subs)) if subs else 0.0
    n_shard, cores, ceiling = _compute_ceiling(len(tn.nodes), single_ms)
    single_p50 = percentile(single_ms, 50)
    single_mean = sum(single_ms) / len(single_ms) if single_ms else 0.0
    throughput = len(ok) / wall if wall else 0.0
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    return {
        "nodes": len(tn.nodes),
        "node_models": [{"name": nd.name, "model": nd.model, "account": nd.account} for nd in tn.nodes],
        "submissions": len(subs),
        "batch": cfg.batch,
        "concurrency": cfg.concurrency,
        "certified": len(ok),
        "failed": len(subs) - len(ok),
        "errors": [{"index": s.index, "node": s.node, "error": s.error} for s in subs if not s.ok],
        "retried": wins.retried,
        "latency_ms": {"p50": p50, "p99": p99, "mean": sum(lat) / len(lat) if lat else 0.0},
        "embed_ms_single": {"p50": single_p50, "p99": percentile(single_ms, 99), "mean": single_mean,
                            "model": cfg.baseline_model},
        "latency_ratio_p50": p50 / single_p50 if single_p50 else 0.0,
        "latency_ratio_p99": p99 / percentile(single_ms, 99) if single_ms else 0.0,
        "throughput_per_s": throughput,
        "compute_ceiling_per_s": ceiling,
        "throughput_ratio": throughput / ceiling if ceiling else 0.0,
        "cores": cores,
        "shard_size": n_shard,
        "wall_s": wall,
        # a proxied round: a member had an expert produce its submission (served proxy requests over the run)
        "proxied": max(proxies.get("served", 0), wins.proxied_wins),
        "proxied_rounds": proxied_rounds,  # certified rounds in which an expert served a member (None: unknown)
        "proxied_share": proxied_rounds / len(subs) if proxied_rounds is not None and subs else None,
        "deadline_ms": cfg.deadline_ms,
        "wins_by_producer": wins.by_producer,
        "proxy_requests": proxies.get("sent", 0),
        "proxy_fallbacks": proxies.get("fallbacks", 0),
        "proxied_wins": wins.proxied_wins,
        "winners_by_domain": wins.by_domain,
        "supply_before": supply_before,
        "supply_after": supply_after,
        "rounds": [_round_row(s) for s in subs],
    }


@dataclass
class _Wins:
    """Who produced the certified rounds' winning submissions (by model where known), per domain and in all."""

    by_domain: dict[str, dict[str, int]] = field(default_factory=dict)
    by_producer: dict[str, int] = field(default_factory=dict)
    proxied_wins: int = 0  # won by a submission an expert produced for a member
    retried: int = 0  # attempts beyond the first

    @classmethod
    def count(cls, ok: Sequence[Submitted], model_of: dict[str, str]) -> _Wins:
        wins = cls()
        for s in ok:
            w, p = s.result.get("winner", ""), s.result.get("producer", "") or s.result.get("winner", "")
            wins.proxied_wins += bool(p and w and p != w)
            wins.retried += max(0, len(s.result.get("attempts") or [1]) - 1)
            label = model_of.get(p, short_hex(p))
            domain = wins.by_domain.setdefault(s.domain, {})
            domain[label] = domain.get(label, 0) + 1
            wins.by_producer[label] = wins.by_producer.get(label, 0) + 1
        return wins


def _compute_ceiling(staked: int, single_ms: Sequence[float]) -> tuple[int, int, float]:
    """(shard size, cores, rounds/s the machine could certify): `cores / (shard size x mean embed_ms_single)`."""
    from moenode.core.selection import shard_size

    n_shard = shard_size(staked)[0]
    cores = min(usable_cores(), staked)
    single_mean = sum(single_ms) / len(single_ms) if single_ms else 0.0
    ceiling = cores / (n_shard * single_mean / 1000) if single_mean else 0.0
    return n_shard, cores, ceiling


def _round_row(s: Submitted) -> dict[str, Any]:
    return {"index": s.index, "domain": s.domain, "node": s.node, "ok": s.ok, "latency_ms": round(s.latency_ms, 1),
            "winner": s.result.get("winner"), "producer": s.result.get("producer"), "loss": s.result.get("loss"),
            "served": s.served, "dim": s.result.get("dim"), "attempts": len(s.result.get("attempts") or []),
            "error": s.error}


def short_hex(h: str) -> str:
    return h[:12] if h else "?"


def run_workload(tn: Testnet, cfg: DemoConfig, ui: Any = None, on_done: Any = None) -> dict[str, Any]:
    """Submit the demo workload through a running testnet and summarise it (the testnet keeps running)."""
    ui = ui or NullUI()
    batches = workload(cfg.submissions, cfg.batch, cfg.seed, cfg.domains)
    supply_before = next(iter(ledger_views(tn).values()), (None, None))[0]
    single: list[float] = []
    params = parse_genesis(tn.genesis_path.read_text()).params
    deadline_ms = min(cfg.deadline_ms, params.round_abort_ms)  # the most a node's control API accepts
    if cfg.measure_baseline:
        ui.phase("single-node baseline", len(batches))
        for ms in measure_single_iter([t for _, t in batches], cfg.baseline_model, params):
            single.append(ms)
            ui.advance(f"{ms:.0f} ms")
    counters_before = proxy_counters(tn)
    ui.phase("submissions", len(batches))
    subs = submit_all(tn, batches, concurrency=cfg.concurrency, fee=cfg.fee, timeout=cfg.submit_timeout_s, ui=ui,
                      on_done=on_done, gateways=cfg.gateways, deadline_ms=deadline_ms)
    ui.close()
    views = wait_ledgers_equal(tn, cfg.settle_timeout_s)
    supplies = {v[0] for v in views.values()}
    supply_after = supplies.pop() if len(supplies) == 1 else sorted(supplies, key=str)
    counters_after = proxy_counters(tn)
    proxies = {k: proxy_delta(counters_before, counters_after, k) for k in ("sent", "served", "fallbacks")}
    summary = summarize(tn, cfg, subs, single, supply_before, supply_after, proxies)
    if cfg.measure_quality:
        ui.phase("quality: each model alone", len({nd.model for nd in tn.nodes}))
        summary["quality"] = delivered_quality(subs, sorted({nd.model for nd in tn.nodes}), ui=ui)
        ui.close()
    return summary


def best_in_space(group: Sequence[Submitted], alone: dict[str, float | None], got: float | None) -> dict[str, Any]:
    """The target's comparison: delivered against the best single model of the space the submitter chose (the
    models of another space cannot serve it). Empty when the rounds named more than one space."""
    from moenode.encoders import zoo

    spaces = {s.result.get("space", "main") for s in group}
    if len(spaces) != 1:
        return {}
    space = spaces.pop()
    mine = {m: v for m, v in alone.items() if v is not None and zoo.space_of(m) == space}
    best = max(mine, key=lambda m: mine[m], default=None)
    return {"space": space, "best_in_space": best,
            "ratio_to_best_in_space": got / mine[best] if got is not None and best is not None and mine[best] else None}


def delivered_quality(subs: Sequence[Submitted], models: Sequence[str], *, label_of: dict[str, str] | None = None,
                      candidates: dict[int, list[str]] | None = None, model_of: dict[str, str] | None = None,
                      ui: Any = None) -> dict[str, Any]:
    """Label quality (MRR of same-label neighbours, one index) of what the certified rounds delivered, per domain and
    over every batch together, against each of `models` run alone on the same texts. Failed rounds are left out.

    `label_of` maps a text to its label (default: its source in the shipped corpus). With `candidates` (round index
    -> the models of that round's honest candidates) and `model_of` (account hex -> model), also the per-batch
    agreement of the winner with label quality (`quality.batch_agreement` over within-batch MRR)."""
    from moenode.client import decode_embeddings
    from moenode.encoders import corpus

    ui = ui or NullUI()
    ok = [s for s in subs if s.ok]
    if label_of is None:
        label_of = {}
        for d in sorted({s.domain for s in ok}):
            label_of.update((it.text, it.source) for it in corpus.load(d))
    q = _Quality(models, {s.index: decode_embeddings(s.result) for s in ok},
                 {s.index: [f"{s.domain}/{label_of.get(t, '?')}" for t in s.texts] for s in ok},
                 _solo_vectors(ok, models, ui), candidates, model_of)
    out: dict[str, Any] = {"mixed": q.score(ok) if ok else None, "domains": {}}
    for d in sorted({s.domain for s in ok}):
        out["domains"][d] = q.score([s for s in ok if s.domain == d])
    return out


def _solo_vectors(ok: Sequence[Submitted], models: Sequence[str], ui: Any) -> dict[str, dict[int, Any]]:
    """model -> round index -> the vectors that model alone gives the round's texts."""
    from moenode.testing.quality import solo_vectors

    solo: dict[str, dict[int, Any]] = {m: {} for m in models}
    for m in models:
        if not ok:
            ui.advance(m)
            continue
        vecs = solo_vectors(m, [t for s in ok for t in s.texts])
        at = 0
        for s in ok:
            solo[m][s.index] = vecs[at:at + len(s.texts)]
            at += len(s.texts)
        ui.advance(m)
    return solo


@dataclass
class _Quality:
    """What the rounds delivered, their labels and each model's own vectors (all by round index), and the optional
    candidates and producers' models for the agreement figure."""

    models: Sequence[str]
    delivered: dict[int, Any]
    labels: dict[int, list[str]]
    solo: dict[str, dict[int, Any]]
    candidates: dict[int, list[str]] | None
    model_of: dict[str, str] | None

    def score(self, group: Sequence[Submitted]) -> dict[str, Any]:
        from moenode.testing.quality import one_index_mrr

        lab = [x for s in group for x in self.labels[s.index]]
        got = one_index_mrr([self.delivered[s.index] for s in group], lab)
        alone = {m: one_index_mrr([self.solo[m][s.index] for s in group], lab) for m in self.models}
        best = max((v for v in alone.values() if v is not None), default=None)
        row: dict[str, Any] = {
            "rounds": len(group), "delivered_mrr": got, "alone_mrr": alone,
            "best_single": next((m for m, v in alone.items() if v == best), None),
            "ratio_to_best": got / best if got is not None and best else None,
            "ratio_to_each": {m: got / v if got is not None and v else None for m, v in alone.items()},
            **best_in_space(group, alone, got),
            "proxied_rounds": sum(1 for s in group if (s.served or 0) > 0
                                  or s.result.get("producer") != s.result.get("winner")),
            "proxied_wins": sum(1 for s in group if s.result.get("producer") != s.result.get("winner")),
        }
        if self.candidates is not None and self.model_of is not None:
            row["agreement"], row["agreement_pairs"] = self.agreement(group, self.candidates, self.model_of)
        return row

    def agreement(self, group: Sequence[Submitted], candidates: dict[int, list[str]],
                  model_of: dict[str, str]) -> tuple[float | None, int]:
        """(share of candidate pairs the winner's choice agrees with on within-batch MRR, how many pairs)"""
        from moenode.testing.quality import batch_agreement, one_index_mrr

        agree = pairs = 0
        for s in group:
            cands = [m for m in candidates.get(s.index, []) if m in self.solo]
            mrrs = {m: one_index_mrr([self.solo[m][s.index]], self.labels[s.index]) for m in set(cands)}
            within = {m: v for m, v in mrrs.items() if v is not None}
            a, n = batch_agreement(within, model_of.get(s.result.get("producer", ""), "?"))
            agree, pairs = agree + a, pairs + n
        return (agree / pairs if pairs else None), pairs


def measure_single_iter(batches: Sequence[list[str]], model: str, params: Params | None = None):
    """ms for ONE node to embed and score each batch alone (the same work a shard member does: its Payload), one
    batch at a time so a progress bar can follow."""
    from moenode.core.crypto import H
    from moenode.node.compute import Compute

    params = params or testnet_params()
    comp = Compute(model, params.router_model, params)
    comp.payload(list(batches[0]), H("demo-warmup", b""))
    for i, texts in enumerate(batches):
        t0 = time.perf_counter()
        comp.payload(list(texts), H("demo-single", i.to_bytes(4, "big")))
        yield (time.perf_counter() - t0) * 1000


def run_demo(root: Path, cfg: DemoConfig, ui: Any = None) -> dict[str, Any]:
    """Start a testnet in `root`, run the workload, stop the testnet (unless cfg.keep) and return the summary."""
    ui = ui or NullUI()
    tn = Testnet.create(root, cfg.nodes, models=cfg.models, epoch_ms=cfg.epoch_ms)
    try:
        ui.phase("starting nodes", cfg.nodes)
        tn.start(progress=lambda nd: ui.advance(f"{nd.name} ({nd.model})"))
        ui.close()
        return run_workload(tn, cfg, ui)
    finally:
        ui.close()
        if not cfg.keep:
            tn.stop()
