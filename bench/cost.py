"""The cost of a verified embedding: CPU of the whole network per certified item, against a local plain embed.

A submitter's alternative to the network is to run the model itself. This benchmark measures both in one run, in
CPU time (so the ratio holds on a busy machine), on real corpus text (one domain per batch, `testing.demo.workload`):

  baseline   the same items through the same minilm-l6 ONNX file, tokenizers + onnxruntime, one thread
             (`Encoder.embed`), batch by batch in this process: CPU ms per item, and the batch's embed time
  network    the CPU of every process of the network per certified item, with a breakdown by stage

Two drivers:

  --driver testnet   N daemons on loopback (`testing.testnet`). Total CPU from /proc/<pid>/stat of every daemon
                     (all threads), stages from each daemon's /status `cpu_stages` (thread CPU around each stage,
                     `moenode/node/stages.py`). `idle` is the daemons' CPU rate measured while nothing is submitted,
                     times the measured wall time; `networking` is the rest (libp2p, trio, gossip, payments and the
                     ledger, the control API): total - stages - idle. Latency: submit -> certificate through the
                     control API, one batch in flight; its ratio is over the local embed time of the same batch.
  --driver inproc    every member and the submitter in this process (`testing.inproc`, virtual clock, real models,
                     real signatures and codec). Total CPU is this thread's; `codec_signatures` is total - compute
                     stages (the round machines, sealing, opening every message); no networking, no idle.

Stages: member_embed, routing_vectors, scoring_views, reference_negatives, verification, codec_signatures,
networking, idle. Targets (per certified item over the local embed per item): <= 5x at batch 16, <= 4x at batch 64;
latency p50 <= 8x, p99 <= 15x of the local embed of that batch.

  python bench/cost.py                                   # testnet, batches 16 and 64
  python bench/cost.py --driver inproc --rounds 4 --json
  python bench/cost.py --batches 16 --rounds 8 --json bench/results/cost-16.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_result  # noqa: E402

DEFAULT_JSON = "bench/results/cost.json"
STAGE_ORDER = ("member_embed", "routing_vectors", "scoring_views", "reference_negatives", "verification",
               "codec_signatures", "networking", "idle")
TARGETS = {16: 5.0, 64: 4.0}
LATENCY_TARGETS = {"p50": 8.0, "p99": 15.0}


# the baseline --------------------------------------------------------------------------------------------------------
def local_embed(batches: list[list[str]], model: str = "minilm-l6") -> dict:
    """CPU (thread time) and wall ms of embedding each batch alone with one ORT thread, after a warm-up.

    The baseline is what a submitter would write: tokenizers + onnxruntime, one call per batch, padded to its
    longest item. `package_*` is the same through the package's own chunking (calls of at most TOKEN_BUDGET
    tokens), which is cheaper: it is reported beside the baseline, not used for the ratio.
    """
    from moenode.encoders import zoo

    enc = zoo.load(model)
    enc.embed(batches[0], budget=1 << 40)
    cpu, wall, package = [], [], []
    for texts in batches:
        c0, w0 = time.thread_time(), time.perf_counter()
        enc.embed(texts, budget=1 << 40)  # one ORT call for the whole batch
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
        c0 = time.thread_time()
        enc.embed(texts)
        package.append((time.thread_time() - c0) * 1000)
    items = sum(len(b) for b in batches)
    return {"model": model, "cpu_ms_per_item": sum(cpu) / items, "batch_cpu_ms": cpu, "batch_wall_ms": wall,
            "batch_ms_p50": percentile(wall, 50), "package_cpu_ms_per_item": sum(package) / items}


def percentile(xs: list[float], q: float) -> float:
    from moenode.testing.demo import percentile as pct

    return pct(xs, q)


# the testnet driver --------------------------------------------------------------------------------------------------
def proc_cpu_s(pid: int) -> float:
    """utime + stime of every thread of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def network_cpu(tn) -> dict[str, float]:
    return {nd.name: proc_cpu_s(nd.pid) for nd in tn.nodes if nd.pid is not None and nd.alive()}


def stage_cpu(tn) -> dict[str, float]:
    """Each stage's thread CPU seconds, summed over every daemon ({} if the daemons do not report stages)."""
    out: dict[str, float] = {}
    for st in tn.statuses(10):
        for name, v in ((st or {}).get("cpu_stages") or {}).items():
            out[name] = out.get(name, 0.0) + float(v["cpu_s"])
    return out


def settle(tn, timeout: float = 120.0) -> None:
    """Until every node holds the same ledger and no round is open (members may verify after the certificate)."""
    from moenode.testing.ledger_tools import wait_ledgers_equal

    wait_ledgers_equal(tn, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(((st or {}).get("rounds") or {}).get("active", 0) == 0 for st in tn.statuses(10)):
            return
        time.sleep(1)


def idle_cpu(tn, seconds: float) -> float:
    """CPU seconds per second of all daemons together while nothing is submitted (after a pause to settle)."""
    time.sleep(5)
    c0, w0 = network_cpu(tn), time.monotonic()
    time.sleep(seconds)
    return delta(network_cpu(tn), c0) / (time.monotonic() - w0)


def delta(after: dict[str, float], before: dict[str, float]) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items())


def run_testnet(args, batch_sizes: list[int]) -> dict:
    from moenode.testing.demo import submit_all, workload
    from moenode.testing.testnet import Testnet, testnet_params

    root = args.dir or Path(tempfile.mkdtemp(prefix="moenode-cost-"))
    # a shared machine can take minutes over a batch of 64: a round that times out measures the timeout, not the cost
    commit_ms = int(args.commit_timeout_s * 1000)
    params = testnet_params(commit_timeout_ms=commit_ms, round_abort_ms=commit_ms + 120_000)
    out: dict = {"driver": "testnet", "nodes": args.nodes, "dir": str(root), "commit_timeout_ms": commit_ms,
                 "batches": {}}
    with Testnet.create(root, args.nodes, epoch_ms=args.epoch_ms, params=params) as tn:
        tn.start()
        out["node_models"] = [nd.model for nd in tn.nodes]
        warm = workload(args.warmup, 16, seed=99)
        submit_all(tn, warm, timeout=600)  # loads the models a member may have to verify
        settle(tn)
        idle_rate = idle_cpu(tn, args.idle_s)
        out["idle_cpu_per_s"] = idle_rate
        print(f"idle: the {args.nodes} daemons use {idle_rate * 1000:.0f} ms CPU per second doing nothing",
              flush=True)
        for b in batch_sizes:
            batches = [t for _, t in workload(args.rounds, b, seed=b)]
            base = local_embed(batches)
            settle(tn)
            c0, s0, w0 = network_cpu(tn), stage_cpu(tn), time.monotonic()
            subs = submit_all(tn, [("", t) for t in batches], timeout=600)
            settle(tn)
            wall = time.monotonic() - w0
            total, stages1 = delta(network_cpu(tn), c0), stage_cpu(tn)
            stages = {k: stages1[k] - s0.get(k, 0.0) for k in stages1}
            stages["idle"] = min(idle_rate * wall, max(0.0, total - sum(stages.values())))
            stages["networking"] = max(0.0, total - sum(stages.values()))
            ok = [s for s in subs if s.ok]
            lat = [s.latency_ms for s in ok]
            out["batches"][str(b)] = summarize(b, len(ok) * b, len(subs), total, stages, base, lat, wall)
            out["batches"][str(b)]["errors"] = sorted({s.error[:300] for s in subs if not s.ok})
            report(out["batches"][str(b)])
        tn.stop()
    return out


# the in-process driver -----------------------------------------------------------------------------------------------
def run_inproc(args, batch_sizes: list[int]) -> dict:
    from moenode.core.crypto import H, Ed25519Signer
    from moenode.core.genesis import Account, Genesis
    from moenode.core.messages import Submission
    from moenode.core.round import ShardContext
    from moenode.node.compute import Compute
    from moenode.node.stages import STAGES
    from moenode.testing.demo import workload
    from moenode.testing.inproc import InProcessShard
    from moenode.testing.testnet import default_models, testnet_params

    params = testnet_params()
    signers = [Ed25519Signer.from_entropy(b"cost" + i.to_bytes(4, "big")) for i in range(args.nodes)]
    models = default_models(args.nodes)
    accounts = sorted((Account(s.public_key, balance=10_000, stake=1_000, model_id=m, price=0)
                       for s, m in zip(signers, models)), key=lambda a: a.pubkey)
    genesis = Genesis(name="cost", genesis_time_ms=0, epoch_ms=3_600_000, params=params, accounts=tuple(accounts))
    computes = {s.public_key: Compute(m, params.router_model, params) for s, m in zip(signers, models)}

    def work(member: bytes, w):
        comp = computes[member]
        c0 = time.thread_time()
        vecs = comp.routing_vectors(list(w.items))  # a node with a winner index routes every batch first
        pay = comp.payload(list(w.items), w.shard_seed, vecs if args.reuse_routing else None)
        sub = Submission(shard_id=w.shard_id, member=member, producer=member, payload=pay, proxy=None)
        return sub, max(1, int((time.thread_time() - c0) * 1000))

    shard_of: dict[bytes, tuple[list[str], bytes]] = {}  # shard id -> (items, shard seed), for verification

    def verify(verifier: bytes, v) -> bool:
        items, seed = shard_of[v.shard_id]
        return computes[verifier].verify(items, seed, v.submission.payload, v.sample_seed)[0]

    shard = InProcessShard(genesis, {s.public_key: s for s in signers}, work, verify)
    submitter = Ed25519Signer.from_entropy(b"cost-submitter")
    out: dict = {"driver": "inproc", "nodes": args.nodes, "node_models": models, "batches": {}}
    for b in batch_sizes:
        batches = [t for _, t in workload(args.rounds + 1, b, seed=b)]
        base = local_embed(batches[1:])
        total, certified, stages = 0.0, 0, dict.fromkeys(STAGES.snapshot(), 0.0)
        for i, texts in enumerate(batches):
            nonce = H("cost", bytes([i]))
            inp = shard.make_input(submitter, texts, nonce, 0).msg
            ctx = ShardContext.derive(genesis.network_id, params, inp, shard.power, shard.epoch_seed)
            shard_of[ctx.shard_id] = (texts, ctx.shard_seed)
            s0, c0 = STAGES.snapshot(), time.thread_time()
            res = shard.run(submitter, texts, nonce)
            spent, s1 = time.thread_time() - c0, STAGES.snapshot()
            if i == 0:
                continue  # warm-up: loads the models members verify
            total += spent
            for k in stages:
                stages[k] += s1[k]["cpu_s"] - s0[k]["cpu_s"]
            certified += b if res.submitter is not None and res.submitter.status == "certified" else 0
        stages["codec_signatures"] = max(0.0, total - sum(v for k, v in stages.items() if k != "codec_signatures"))
        out["batches"][str(b)] = summarize(b, certified, args.rounds, total, stages, base, [], 0.0)
        report(out["batches"][str(b)])
    return out


# results -------------------------------------------------------------------------------------------------------------
def summarize(batch: int, certified_items: int, rounds: int, total_s: float, stages: dict[str, float], base: dict,
              latencies: list[float], wall_s: float) -> dict:
    local = base["cpu_ms_per_item"]
    per_item = total_s * 1000 / certified_items if certified_items else float("inf")
    breakdown = {k: {"ms_per_item": stages.get(k, 0.0) * 1000 / max(1, certified_items),
                     "x_local": stages.get(k, 0.0) * 1000 / max(1, certified_items) / local}
                 for k in STAGE_ORDER}
    res = {"batch": batch, "rounds": rounds, "certified_items": certified_items, "wall_s": wall_s,
           "network_cpu_s": total_s, "network_ms_per_item": per_item, "local_ms_per_item": local,
           "ratio": per_item / local, "target": TARGETS.get(batch), "breakdown": breakdown, "local": base,
           "ratio_to_package_embed": per_item / base["package_cpu_ms_per_item"]}
    if latencies:
        ref = base["batch_ms_p50"]
        res["latency_ms"] = {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}
        res["latency_ratio"] = {q: res["latency_ms"][q] / ref for q in ("p50", "p99")}
        res["latency_targets"] = LATENCY_TARGETS
    return res


def report(r: dict) -> None:
    tgt = f" (target <= {r['target']:.0f}x)" if r["target"] else ""
    done = r["certified_items"] // r["batch"]
    print(f"\nbatch {r['batch']}: {done}/{r['rounds']} rounds certified; network {r['network_ms_per_item']:.1f} ms "
          f"CPU per item, local embed {r['local_ms_per_item']:.2f} ms per item: ratio {r['ratio']:.1f}x{tgt}")
    print(f"  (over the package's own chunked embed, {r['local']['package_cpu_ms_per_item']:.2f} ms per item: "
          f"{r['ratio_to_package_embed']:.1f}x)")
    for k in STAGE_ORDER:
        v = r["breakdown"][k]
        print(f"  {k:20s} {v['ms_per_item']:8.2f} ms/item  {v['x_local']:6.2f}x local")
    for e in r.get("errors", []):
        print(f"  a round failed: {e}")
    if "latency_ratio" in r:
        lr, lm = r["latency_ratio"], r["latency_ms"]
        print(f"  latency p50 {lm['p50']:.0f} ms = {lr['p50']:.1f}x, p99 {lm['p99']:.0f} ms = {lr['p99']:.1f}x of "
              f"the local embed of a batch ({r['local']['batch_ms_p50']:.0f} ms; targets 8x / 15x)")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driver", choices=("testnet", "inproc"), default="testnet")
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64], help="batch sizes to measure")
    ap.add_argument("--rounds", type=int, default=8, help="measured rounds per batch size")
    ap.add_argument("--warmup", type=int, default=6,
                    help="testnet: rounds before measuring (a member loads a model the first time it verifies it)")
    ap.add_argument("--idle-s", type=float, default=20.0, help="testnet: seconds to measure idle CPU")
    ap.add_argument("--commit-timeout-s", type=float, default=120.0, help="testnet: the genesis commit timeout")
    ap.add_argument("--epoch-ms", type=int, default=60_000)
    ap.add_argument("--reuse-routing", action=argparse.BooleanOptionalAction, default=True,
                    help="inproc: the payload reuses the routing vectors computed to route (as the daemon does)")
    ap.add_argument("--dir", type=Path, default=None, help="testnet directory (default: a temporary one)")
    ap.add_argument("--json", nargs="?", const=DEFAULT_JSON, default=None, metavar="PATH",
                    help=f"write the results as JSON (default path {DEFAULT_JSON})")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    run = run_testnet if args.driver == "testnet" else run_inproc
    result = {"bench": "cost", **run(args, args.batches), "wall_s": time.monotonic() - t0}
    if args.json:
        write_result(result, args.json, False)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
