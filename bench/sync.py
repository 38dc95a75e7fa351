"""A long ledger history: how long a node takes to replay it on start, and to fetch it from a peer.

- replay: a node's store holds `--entries` certified transfers (batch votes of 256 orders, as a busy authority set
  signs them); opening it (`open_authority`, what a start does) re-checks every certificate. Reported in CPU
  seconds, beside the same log replayed with the plain verifier (each order's batch signature checked again, as
  before the replay cached them), in the same run.
- walk: a second node fetches that history from the first over real libp2p hosts (`sync`, paced at its page rate,
  each entry checked and applied to its own store, the cursor saved every page): entries per second (wall clock),
  CPU seconds per 1,000 entries of this process (which runs both nodes), pages, and backoffs. Beside it, the page
  rate the pacing allows, and what the server's limit would allow.
Prints the ratios and writes JSON (`--json` prints it as the last line).
"""

import argparse
import tempfile
import time
from pathlib import Path

import trio
from _report import write_result

ROOT = Path(__file__).resolve().parents[1]

from moenode.core.authority import replay  # noqa: E402
from moenode.core.crypto import Ed25519Signer, ed25519_verify  # noqa: E402
from moenode.core.ledger import Ledger  # noqa: E402
from moenode.net.host import default_limits  # noqa: E402
from moenode.node import sync  # noqa: E402
from moenode.store.ledger_db import LedgerDB, open_authority  # noqa: E402
from moenode.testing.nodekit import (  # noqa: E402
    Cluster,
    certified_transfers,
    make_genesis,
    seed,
    synced_node,
    write_log,
)


def cpu() -> float:
    return time.process_time()


async def bench(entries: int) -> dict:
    servers, users = [seed(0, "server")], [seed(i, "user") for i in range(8)]
    genesis = make_genesis([(servers[0], 1_000, "minilm-l3"), (seed(0, "client"), 0, "minilm-l3")]
                           + [(u, 0, "minilm-l3") for u in users])
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(Path(tmp), genesis, None)
        s, client_m = c.add(servers[0]), c.add(seed(0, "client"))
        t = cpu()
        certs = certified_transfers(genesis, servers, users, entries)
        write_log(s.home / "ledger.sqlite", genesis, certs)
        build_s = cpu() - t
        log_bytes = sum(len(d) for _, d in certs)
        del certs

        db = LedgerDB(s.home / "ledger.sqlite", genesis.network_id)
        t = cpu()
        plain = Ledger(genesis, ed25519_verify)
        for _, kind, ident, data in db.log_page(0, entries + 1):
            replay(plain, (kind, ident, data))
        replay_plain_s = cpu() - t
        db.close()
        t = cpu()
        open_authority(s.home / "ledger.sqlite", genesis, Ed25519Signer(servers[0]), ed25519_verify).store.close()
        replay_s = cpu() - t

        async with synced_node(s, genesis) as server, synced_node(client_m, genesis) as client:
            await client.net.connect(server.net.addrs()[0])
            t0, c0 = time.monotonic(), cpu()
            await client.sync.walk(server.account)
            wall, spent = time.monotonic() - t0, cpu() - c0
            st = dict(client.sync.state)
            assert st["applied"] == entries and client.payments.ledger.state_digest() == \
                server.payments.ledger.state_digest()
    limit = default_limits()["request"]
    return {
        "entries": entries, "log_bytes": log_bytes, "build_cpu_s": round(build_s, 2),
        "replay_cpu_s": round(replay_s, 2), "replay_plain_verify_cpu_s": round(replay_plain_s, 2),
        "replay_entries_per_cpu_s": round(entries / replay_s),
        "replay_speedup_vs_plain_verify": round(replay_plain_s / replay_s, 2),
        "walk_wall_s": round(wall, 2), "walk_entries_per_s": round(entries / wall),
        "walk_cpu_s_per_1000_entries": round(1000 * spent / entries, 3),
        "walk_pages": st["pages"], "walk_backoffs": st["backoffs"],
        "pacing_pages_per_s": sync.PAGES_PER_S, "page_limit": sync.PAGE_LIMIT,
        "pacing_entries_per_s_ceiling": sync.PAGES_PER_S * sync.PAGE_LIMIT,
        "server_request_limit_per_s": limit.rate, "server_request_burst": limit.burst,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sync.json"))
    args = ap.parse_args()
    r = trio.run(bench, args.entries)
    print(f"{r['entries']:,} entries ({r['log_bytes'] / 1e6:.1f} MB of certificates)")
    print(f"replay on start: {r['replay_cpu_s']} CPU s ({r['replay_entries_per_cpu_s']:,} entries/CPU s); "
          f"with the plain verifier {r['replay_plain_verify_cpu_s']} s: x{r['replay_speedup_vs_plain_verify']}")
    print(f"paced walk: {r['walk_wall_s']} s, {r['walk_entries_per_s']:,} entries/s "
          f"(pacing allows {r['pacing_entries_per_s_ceiling']:,}), {r['walk_cpu_s_per_1000_entries']} CPU s per "
          f"1,000 entries, {r['walk_pages']} pages, {r['walk_backoffs']} backoffs")
    write_result(r, args.out, args.json)


if __name__ == "__main__":
    main()
