"""Attacks against the live testnet: after each one every node is alive, answers /status within 1 s, and holds the
same ledger as the others, with the supply unchanged.

One or more attacks of each kind that could hurt a node if its defence failed: kill (the pubsub frame `02 0a ff`
and py-libp2p's other fatal frames), freeze (container-dense 4 and 12 MiB inputs, forged future-epoch orders,
2,000 slow-loris streams, two authorities hung during a transfer), fork (an emptied and then deleted ledger; the
kill -9 of a payer inside its own transfer runs in tests/e2e/test_failures.py, at four moments), rob (the control
API without the token and from a web page, a transfer into an escrow account). Each test also checks what the
attacker saw: refused, counted by reason, nothing moved. `bench/attacks.py` runs every attack of the suite, with
longer holds and the figures.
"""

import pytest
from moenode.testing.attacks import BY_NAME, Arena, StatusProbe, done_when, measure

STATUS_BOUND_S = 1.0  # /status must answer within this after each attack: a health check's bound, not a race


@pytest.fixture(scope="module")
def arena(testnet):
    with StatusProbe([nd.home for nd in testnet.nodes]) as probe:
        yield Arena(testnet, quick=True, hold_s=2.0), probe


def attack(arena, name: str) -> dict:
    field, probe = arena
    result = measure(field, BY_NAME[name], probe, settle_s=90.0, after_s=1.0)
    after = {n: row["status_after"].get("max_ms") for n, row in result["nodes"].items()}
    print(f"{name}: attacker saw {result['attacker']}; /status max after (ms) {after}; settle {result['settle_s']} s")
    assert done_when(result, STATUS_BOUND_S) == [], result
    return result["attacker"]


@pytest.mark.slow
def test_pubsub_frames_that_killed_a_node_are_refused_and_counted(arena):
    seen = attack(arena, "pubsub-frames")
    assert seen["refused"]["malformed"] >= 3 * len(arena[0].nodes) and seen["refused"]["oversized"] >= 1


@pytest.mark.slow
def test_container_dense_inputs_are_refused_without_a_freeze(arena):
    seen = attack(arena, "dense-envelopes")
    assert seen["shard"] == 2 and seen["refused"]["oversized"] >= seen["shard"] + 1
    assert all("oversized" in answer for answer in seen["order_rpc"][:1])


@pytest.mark.slow
def test_forged_future_orders_leave_no_row_in_any_log(arena):
    seen = attack(arena, "future-orders")
    assert seen["refused"]["bad_signature"] >= 100 * len(arena[0].nodes)
    assert set(seen["log_rows_added"].values()) == {0}


@pytest.mark.slow
def test_slow_loris_streams_are_capped_per_peer(arena):
    seen = attack(arena, "slow-loris")
    assert seen["held_by_victim"] <= 8 * 8 and seen["refused"]["too_many_streams"] >= 1_900


@pytest.mark.slow
def test_the_control_api_moves_nothing_without_the_token_or_from_a_web_page(arena):
    seen = attack(arena, "control-api")
    assert seen["no token"] == seen["wrong token"] == seen["metrics without a token"] == 401
    assert seen["cross-site text/plain"] == seen["DNS rebinding"] == 421
    assert seen["Origin with the token"] == 403 and seen["text/plain with the token"] == 415
    assert seen["moved"] == {"balance": 0, "sequence": 0}
    if isinstance(seen["uid nobody"], dict):  # switching users needs root, as in CI
        assert seen["uid nobody"] == {"control.token": "permission denied", "run.json": "permission denied",
                                      "POST /transfer": 401}


@pytest.mark.slow
def test_a_transfer_into_an_escrow_gets_no_vote(arena):
    seen = attack(arena, "escrow-transfer")
    assert "HTTP 400" in seen["control_api"]
    assert "vote" not in seen["to_escrow"] and seen["baseline_to_an_account"] == {"vote": len(arena[0].nodes)}


@pytest.mark.slow
def test_two_authorities_hung_during_a_transfer_keep_the_order_until_it_certifies(arena):
    seen = attack(arena, "authorities-down")
    assert seen["hung"].startswith("POST /transfer: HTTP 402") and seen["hung_orders_open"] == 1
    assert seen["next_transfer"] == "certified"


@pytest.mark.slow
def test_an_emptied_or_deleted_ledger_is_refused_in_one_line(arena):
    seen = attack(arena, "lost-ledger")
    for case in ("0-byte", "deleted"):
        assert seen[case]["exit_code"] == 1 and seen[case]["lines"] == 1, seen[case]
        assert "moenode resync" in seen[case]["said"]


@pytest.mark.slow
def test_silent_control_connections_cannot_use_up_the_node(arena):
    seen = attack(arena, "control-flood")
    assert seen["status_s"] < STATUS_BOUND_S and seen["outsider_over_libp2p"] == "connected"
    assert seen["evicted"] >= 1_000


@pytest.mark.slow
def test_a_second_daemon_on_a_running_home_is_refused_in_one_line(arena):
    seen = attack(arena, "double-start")
    assert seen["exit_code"] == 1 and seen["lines"] == 1 and "another node is running" in seen["said"], seen
    assert seen["first_untouched"]
