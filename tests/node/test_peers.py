"""HOME/peers.json: the peers a node learnt, newest first, one address per peer, bounded, and only a hint."""

import json

from moenode.node.peers import MAX_PEERS, PEERS_FILE, bootstrap_with_peers, load_peers, merged, remember


def addr(port: int, peer: str) -> str:
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"


def test_remember_keeps_the_newest_address_per_peer_newest_first(tmp_path):
    assert remember(tmp_path, [addr(1, "A"), addr(2, "B")])
    assert not remember(tmp_path, [addr(1, "A")])  # nothing new: the file is not rewritten
    assert remember(tmp_path, [addr(3, "B")])  # B moved to another port
    assert load_peers(tmp_path) == [addr(3, "B"), addr(1, "A")]
    remember(tmp_path, [addr(100 + i, f"P{i}") for i in range(MAX_PEERS + 5)])
    assert len(load_peers(tmp_path)) == MAX_PEERS


def test_a_damaged_file_is_no_peers_and_the_configured_bootstrap_comes_first(tmp_path):
    (tmp_path / PEERS_FILE).write_text("{not json")
    assert load_peers(tmp_path) == []
    (tmp_path / PEERS_FILE).write_text(json.dumps({"peers": [addr(1, "A"), "garbage", 5]}))
    assert load_peers(tmp_path) == [addr(1, "A")]
    assert bootstrap_with_peers(tmp_path, (addr(9, "C"), addr(1, "A"))) == (addr(9, "C"), addr(1, "A"))


def test_merged_replaces_a_peers_old_address():
    assert merged([addr(2, "A")], [addr(1, "A"), addr(3, "B")]) == [addr(2, "A"), addr(3, "B")]
