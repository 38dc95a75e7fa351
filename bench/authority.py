"""One authority node answering order requests from many peers at once: its front desk against one order at a time.

A real daemon (`moenode.node.Node`: ledger store in sqlite, libp2p host) is the authority; `--clients` plain moenode
hosts (`moenode.net`) each send `--per-client` order requests (Transfers from distinct funded accounts, so every
order is valid and needs a fresh lock) all at once over the `order` RPC. Two phases, in the same run, on fresh
accounts:
- desk (the daemon as it runs): requests that arrive while a batch's locks are being written on a worker thread
  join the next batch, which gets one lock transaction (one fsync) and one batch vote signature;
- baseline, one at a time: each request answered on the event loop by `Authority.handle_order` (its own lock
  transaction, fsync and signature), which is how the node answered before it had a desk.
Every answer must be a vote that verifies. Prints orders/s and answer latency for both, the ratio, and the batch
sizes seen; writes JSON (`--json` prints it as the last line).

Read the ratio with the profile in mind: clients and authority share one process and its cores, and opening streams
(multistream-select), Noise and Yamux framing in py-libp2p take most of the time in both phases, so what the desk
saves (an fsync and a signature per order) shows as a few percent here. Its other effect does not show in a rate:
no fsync runs on the authority's event loop any more.
"""

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import trio
from _report import write_result

ROOT = Path(__file__).resolve().parents[1]

from moenode.core.crypto import Ed25519Signer, ed25519_verify  # noqa: E402
from moenode.core.messages import seal  # noqa: E402
from moenode.core.orders import OrderAnswer, OrderRequest, Transfer, signed_digest, vote_digest, vote_entry  # noqa: E402
from moenode.net import NetConfig, open_host  # noqa: E402
from moenode.testing.nodekit import cluster, make_genesis, seed  # noqa: E402


async def phase(auth, clients: list, users: list[Ed25519Signer], payee: bytes) -> dict:
    """Every client sends its share of the users' orders at once; return the rate, latencies and checks."""
    epoch = auth.payments._epoch()
    envs = [seal(Transfer(u.public_key, 0, epoch, payee, 1), u, auth.net_id) for u in users]
    share = -(-len(envs) // len(clients))
    latencies: list[float] = []
    votes: dict[bytes, object] = {}

    async def ask(host, env) -> None:
        t = time.perf_counter()
        resp = await host.request(auth.account, "order", OrderRequest(env.encode(), ()).encode(), timeout=60)
        latencies.append(time.perf_counter() - t)
        votes[env.id] = OrderAnswer.decode(resp)

    batches0, batched0 = auth.metrics.get("order_batches"), auth.metrics.get("orders_batched")
    t0 = time.perf_counter()
    async with trio.open_nursery() as n:
        for i, host in enumerate(clients):
            for env in envs[i * share:(i + 1) * share]:
                n.start_soon(ask, host, env)
    wall = time.perf_counter() - t0
    for env in envs:
        answer = votes[env.id]
        if answer.vote is None:
            raise SystemExit(f"order refused: {answer.refusal}: {answer.why}")
        entry = vote_entry(auth.account, answer.vote)
        if not ed25519_verify(auth.account, signed_digest(vote_digest(env.id, epoch), entry), entry[1]):
            raise SystemExit("a vote does not verify")
    batches = auth.metrics.get("order_batches") - batches0
    batched = auth.metrics.get("orders_batched") - batched0
    lat = sorted(latencies)
    return {"orders": len(envs), "wall_s": wall, "orders_per_s": len(envs) / wall,
            "latency_p50_ms": 1e3 * statistics.median(lat), "latency_p99_ms": 1e3 * lat[int(0.99 * (len(lat) - 1))],
            "batches": batches, "mean_batch": batched / batches if batches else 1.0,
            "alone": len(envs) - batched}


async def bench(clients_n: int, per_client: int) -> dict:
    n_users = 2 * clients_n * per_client
    users = [Ed25519Signer(seed(i, "bench-authority-user")) for i in range(n_users)]
    seeds = [seed(i, "bench-authority") for i in range(2)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds] + [(u.seed, 0, "minilm-l3") for u in users])
    with tempfile.TemporaryDirectory(prefix="bench-authority-") as tmp:
        async with cluster(Path(tmp), genesis) as c:
            members = [c.add(s) for s in seeds]
            await c.start(members[0])
            auth = members[0].node
            async with trio.open_nursery() as n:
                clients = []
                for i in range(clients_n):
                    cfg = NetConfig(seed=seed(i, "bench-authority-client"), net_id=genesis.network_id)
                    clients.append(await n.start(_serve_host, cfg))
                for host in clients:
                    await host.connect(auth.net.addrs()[0])
                half = clients_n * per_client
                desk = await phase(auth, clients, users[:half], members[1].account)
                authority = auth.payments.authority

                async def one_at_a_time(order: bytes):
                    return authority.handle_order(order, auth.now_ms())

                auth.payments.desk.vote = one_at_a_time  # type: ignore[method-assign]
                alone = await phase(auth, clients, users[half:], members[1].account)
                n.cancel_scope.cancel()
    return {"desk": desk, "one_at_a_time": alone}


async def _serve_host(cfg: NetConfig, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with open_host(cfg) as host:
        task_status.started(host)
        await trio.sleep_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    ap.add_argument("--clients", type=int, default=8, help="peers sending orders at once")
    ap.add_argument("--per-client", type=int, default=64, help="orders each peer sends (the per-peer burst is 100)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "authority.json"))
    args = ap.parse_args()
    logging.disable(logging.ERROR)  # the daemon's sync looks for peers that are not nodes here; that is expected
    r = trio.run(bench, args.clients, args.per_client)
    d, a = r["desk"], r["one_at_a_time"]
    r.update(bench="authority", clients=args.clients, per_client=args.per_client,
             orders_per_s=round(d["orders_per_s"], 1), ratio_desk_to_one_at_a_time=round(
                 d["orders_per_s"] / a["orders_per_s"], 3))
    for name, x in (("desk", d), ("one at a time", a)):
        print(f"{name:14s} {x['orders_per_s']:7.0f} orders/s  latency p50 {x['latency_p50_ms']:6.1f} ms"
              f"  p99 {x['latency_p99_ms']:6.1f} ms  ({x['orders']} orders; {x['batches']} batches, mean"
              f" {x['mean_batch']:.1f}, {x['alone']} alone)")
    print(f"desk / one at a time: {r['ratio_desk_to_one_at_a_time']:.2f}")
    write_result(r, args.out, args.json)


if __name__ == "__main__":
    main()
