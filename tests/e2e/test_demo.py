"""The 5-node testnet as processes: 20 submissions of real corpus text, all certified, supply unchanged, and at
least one proxied round. The batches come from the domains that have a specialist in the genesis (code, licences),
ten each: that is where members that expect to lose have an expert to proxy to."""

import json

import pytest

from moenode.testing.demo import DemoConfig, run_workload
from moenode.testing.ledger_tools import wait_ledgers_equal

from e2ekit import GENESIS_MODELS, SPECIALTY


@pytest.mark.slow
def test_twenty_submissions_all_certified_supply_unchanged_and_proxied(testnet, tmp_path):
    domains = sorted({SPECIALTY[m] for m in GENESIS_MODELS if m in SPECIALTY})
    cfg = DemoConfig(nodes=len(testnet.nodes), submissions=20, batch=8, concurrency=2, seed=0,
                     measure_baseline=False, domains=domains)
    s = run_workload(testnet, cfg)
    (tmp_path / "demo.json").write_text(json.dumps(s, indent=2))
    print(json.dumps({k: v for k, v in s.items() if k != "rounds"}, indent=1))

    assert s["submissions"] == 20
    assert s["certified"] == 20 and s["failed"] == 0, s["errors"]
    assert isinstance(s["supply_before"], int) and s["supply_before"] == s["supply_after"]
    # every node applied the same certificates and orders
    views = wait_ledgers_equal(testnet, 60)
    assert len(views) == len(testnet.nodes) and len({d for _, d in views.values()}) == 1, views
    # every round has a real winner, one of the staked accounts
    accounts = {nd.account for nd in testnet.nodes}
    assert all(r["winner"] in accounts and r["producer"] in accounts for r in s["rounds"])
    assert domains and s["proxied"] >= 1, (s["proxy_requests"], s["proxy_fallbacks"], s["winners_by_domain"])
