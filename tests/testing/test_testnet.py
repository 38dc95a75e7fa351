"""A testnet's pieces without starting daemons: its models, its genesis and homes, stopping process groups."""

import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from moenode.core.genesis import genesis_to_toml, parse_genesis
from moenode.testing.testnet import Testnet, default_models, make_genesis, stop_pid


def test_default_models_are_distinct_general_models_then_specialists():
    names = ["minilm-l6", "minilm-l3", "spec-code_py", "spec-legal", "spec-manpages"]
    assert default_models(5, names) == names
    assert default_models(3, names) == names[:3]
    assert default_models(7, names)[5:] == ["minilm-l6", "minilm-l3"]


def test_default_market_has_the_large_expert_specialists_and_generalists():
    names = ["minilm-l6", "minilm-l3", "mpnet-base", "spec-code", "spec-legal", "spec-man", "adv-noise"]
    assert default_models(5, names) == ["minilm-l6", "mpnet-base", "spec-code", "spec-legal", "spec-man"]
    assert default_models(6, names)[5] == "minilm-l3"
    assert "mpnet-base" not in default_models(4, names)  # a small testnet stays light


def test_testnet_genesis_round_trips_and_funds_the_faucet(tmp_path):
    tn = Testnet.create(tmp_path / "tn", 3, models=["minilm-l6", "minilm-l3", "minilm-l6"], epoch_ms=5_000)
    g = parse_genesis((tmp_path / "tn" / "genesis.toml").read_text())
    assert genesis_to_toml(g) == (tn.nodes[1].home / "genesis.toml").read_text()
    by_pk = {a.pubkey.hex(): a for a in g.accounts}
    assert [by_pk[nd.account].model_id for nd in tn.nodes] == ["minilm-l6", "minilm-l3", "minilm-l6"]
    assert by_pk[tn.nodes[0].account].balance > by_pk[tn.nodes[1].account].balance > 0
    assert all(a.stake > 0 for a in g.accounts) and g.epoch_ms == 5_000
    assert g.params.round_abort_ms < 3_600_000  # testnet timers are short
    doc = json.loads((tmp_path / "tn" / "testnet.json").read_text())
    assert [n["home"] for n in doc["nodes"]] == [str(nd.home) for nd in tn.nodes]
    assert all({"peer_id", "addrs", "home", "status_url"} <= set(n) for n in doc["nodes"])


def test_make_genesis_is_deterministic():
    accs = [(bytes([i]) * 32, "minilm-l6") for i in (3, 1, 2)]
    a = make_genesis("t", accs, epoch_ms=1000, now_ms=5)
    assert a == make_genesis("t", accs, epoch_ms=1000, now_ms=5)
    assert [x.pubkey[0] for x in a.accounts] == [1, 2, 3] and a.supply() > 0


def test_stop_pid_terminates_the_whole_process_group():
    code = ("import signal, subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(child.pid, flush=True)\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
            "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True, text=True)
    child = int(p.stdout.readline())
    assert stop_pid(p.pid, timeout=10, proc=p) == "stopped"
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the child of the stopped process survived")


def test_stop_pid_kills_what_ignores_sigterm():
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)\n"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True, text=True)
    p.stdout.readline()
    assert stop_pid(p.pid, timeout=0.5, proc=p) == "killed"
    assert p.poll() is not None


def test_a_few_won_rounds_make_every_domain_routable_with_the_testnet_parameters():
    """Two won batches of one corpus domain must let a third batch of that domain find the winner in the index (real
    router vectors), in every domain. At the default cosine threshold (0.5) the router's same-domain neighbours rarely
    count: some domains stayed unroutable, and no testnet member ever proxied."""
    from moenode.core.genesis import Params
    from moenode.core.routing import rank
    from moenode.encoders import corpus, zoo
    from moenode.node.winner_index import WinnerIndex
    from moenode.testing.testnet import testnet_params

    params = testnet_params()
    router = zoo.load(params.router_model)
    expert = b"E" * 32
    cold_at_default = []
    for domain in corpus.domains():
        vecs = router.embed([it.text for it in corpus.split(domain, "eval")[:48]])
        index = WinnerIndex(vecs.shape[1])
        for r in range(2):
            index.add(bytes([r]) * 32, vecs[16 * r:16 * (r + 1)], expert, [100_000] * 16, 0)

        def ranked(p: Params) -> list[bytes]:
            neigh = index.neighbours(vecs[32:], p.routing_k, p.routing_min_cos_micro)
            return [c.producer for c in rank(neigh, {expert: 5_000}, p)]

        assert ranked(params) == [expert], domain
        if not ranked(replace(params, routing_min_cos_micro=Params().routing_min_cos_micro)):
            cold_at_default.append(domain)
    assert cold_at_default  # the measurement behind the testnet's threshold still holds


def test_testnet_genesis_puts_each_model_family_in_its_own_space():
    accs = [(bytes([i]) * 32, m) for i, m in enumerate(
        ["minilm-l6", "minilm-l3", "spec-legal", "mpnet-base", "minilm-l6"], 1)]
    g = make_genesis("t", accs, epoch_ms=1000, now_ms=5)
    assert [(s.id, s.anchor, s.dim) for s in g.spaces] == [
        ("main", "minilm-l6", 384), ("l3", "minilm-l3", 384), ("mpnet", "mpnet-base", 768)]
    book = g.space_book
    assert [book.serves(bytes([i]) * 32) for i in range(1, 6)] == [("main",), ("l3",), ("main",), ("mpnet",),
                                                                  ("main",)]
    only_l3 = make_genesis("t", [(b"\x01" * 32, "minilm-l3")], epoch_ms=1000, now_ms=5)
    assert only_l3.spaces[0].id == "l3"  # the default is the space most nodes serve
