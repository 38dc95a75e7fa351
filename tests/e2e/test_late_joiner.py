"""A new operator joins the running testnet late, through the CLI only: `init`, `run --genesis --bootstrap`
(catches up to the same ledger), `transfer` from the faucet, `stake --model` (a shard member from epoch E+2),
`status`; then it serves rounds in its specialty and wins some."""

import json
import subprocess
import sys
import time

import pytest

from moenode.testing.demo import DemoConfig, run_workload
from moenode.testing.ledger_tools import wait_ledgers_equal
from moenode.testing.testnet import NodeProcess, node_env

from e2ekit import JOINER_MODEL, SPECIALTY

STAKE = 5_000


def cli(*args: str, timeout: float = 120) -> dict:
    r = subprocess.run([sys.executable, "-m", "moenode", *args, "--json"], capture_output=True, text=True,
                       timeout=timeout, env=node_env())
    assert r.returncode == 0, f"moenode {' '.join(args)}: {r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


def wait_for(pred, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.mark.slow
def test_late_joiner_catches_up_stakes_and_wins_in_its_specialty(testnet):
    faucet = testnet.nodes[0]
    home = testnet.root / "joiner"
    info = cli("init", "--home", str(home), "--model", JOINER_MODEL)

    # run: --genesis and --bootstrap given on the command line, the way an operator joins
    joiner = NodeProcess(len(testnet.nodes), home, JOINER_MODEL, account=info["account"], peer_id=info["peer_id"])
    testnet.nodes.append(joiner)  # the session fixture stops it with the others
    testnet.start_node(joiner, timeout=180)
    testnet.wait_connected(timeout=120)
    st = wait_for(lambda: (s := cli("status", "--home", str(home)))["sync"].get("state") == "synced" and s,
                  120, "the joiner to finish its catch-up sync")
    assert st["stake"] == 0 and st["balance"] == 0
    views = wait_ledgers_equal(testnet, 120)
    assert len({d for _, d in views.values()}) == 1, views  # caught up to the same ledger

    # funds from the faucet, then stake: member from epoch E+2
    cli("transfer", "--home", str(faucet.home), str(home), str(STAKE * 2))
    wait_for(lambda: cli("status", "--home", str(home))["balance"] == STAKE * 2, 60, "the transfer to arrive")
    staked_in = cli("status", "--home", str(home))["epoch"]
    staked = cli("stake", str(STAKE), "--model", JOINER_MODEL, "--home", str(home))
    assert staked["spaces"] == ["main"]  # the Stake declares the space of its model (a specialist of L6)
    st = wait_for(lambda: (s := cli("status", "--home", str(home)))["voting_power"] > 0 and s,
                  6 * 20 + 60, "the joiner's stake to take effect")
    assert st["epoch"] >= staked_in + 2 and st["stake"] == STAKE and st["spaces"] == ["main"]

    # submissions in its specialty, through the genesis nodes: it wins (as a member or as a proxy expert)
    domain = SPECIALTY[JOINER_MODEL]
    won = 0
    for attempt in range(4):
        cfg = DemoConfig(nodes=len(testnet.nodes), submissions=5, batch=8, concurrency=2, seed=100 + attempt,
                         measure_baseline=False, gateways=[nd.name for nd in testnet.nodes if nd is not joiner],
                         domains=[domain])
        s = run_workload(testnet, cfg)
        assert s["failed"] == 0, s["errors"]
        won += sum(joiner.account in (r["winner"], r["producer"]) for r in s["rounds"])
        if won:
            break
    assert won >= 1, "the joiner never won a round in its specialty"
    st = cli("status", "--home", str(home))
    assert st["wins"] + st["proxies"]["wins"] >= 1 or won
    views = wait_ledgers_equal(testnet, 60)
    assert len({d for _, d in views.values()}) == 1, views
