"""Failures a user never sees: kill -9 of one node (a fifth of the network) in the middle of a run of
submissions. Every submission still ends certified (rounds with the dead member certify with the live quorum, or
are refunded and retried on a fresh shard), and once the node restarts it catches up to the same ledger."""

import threading
import time

import pytest

from moenode.testnet import ledger_views, wait_ledgers_equal
from moenode.testnet_demo import DemoConfig, run_workload


@pytest.mark.slow
def test_kill9_mid_run_then_restart(testnet):
    victim = testnet.nodes[3]
    gateways = [nd.name for nd in testnet.nodes if nd is not victim]
    supply_before = {v[0] for v in ledger_views(testnet).values()}
    assert len(supply_before) == 1
    killed_at: list[float] = []

    def kill_when_busy(sub) -> None:  # after the first certificate, while the next rounds are in flight
        if not killed_at:
            killed_at.append(time.monotonic())
            threading.Thread(target=testnet.kill, args=(victim,), daemon=True).start()

    cfg = DemoConfig(nodes=len(testnet.nodes), submissions=8, batch=8, concurrency=2, seed=11,
                     measure_baseline=False, gateways=gateways)
    s = run_workload(testnet, cfg, on_done=kill_when_busy)
    assert killed_at and not victim.alive()
    assert s["certified"] == 8 and s["failed"] == 0, s["errors"]
    retried = [r for r in s["rounds"] if r["attempts"] > 1]
    print(f"rounds retried on a fresh shard after the kill: {len(retried)}")

    # the four live nodes agree, and nothing was created or destroyed
    live = wait_ledgers_equal(testnet, 60)
    assert {v[0] for v in live.values()} == supply_before

    # restart: the node replays its own store, then catches up from its peers
    testnet.start_node(victim, timeout=180)
    testnet.wait_connected(timeout=120)
    views = wait_ledgers_equal(testnet, 120)
    assert set(views) == {nd.name for nd in testnet.nodes}
    digests = {d for _, d in views.values()}
    assert len(digests) == 1, views
    assert {v[0] for v in views.values()} == supply_before
