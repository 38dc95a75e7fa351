"""Catch-up sync over real libp2p hosts, between real nodes' stores (sqlite) and sync drivers.

Each node here is the daemon's `Node` (keys, ledger store, certificate archive, sync) on a real host that serves the
`sync` pages, without encoders or rounds (`moenode.testing.nodekit.synced_node`): the walks below move tens of
thousands of certified orders, and what they measure is the walk.
"""

import pytest
import trio

from moenode.core.codec import canonical
from moenode.core.crypto import Ed25519Signer
from moenode.core.messages import seal
from moenode.core.orders import Transfer, certify
from moenode.net import NetConfig, Rate, open_host
from moenode.net.host import default_limits
from moenode.node import sync as sync_mod
from moenode.node.sync import BACKOFF_MAX_S, PAGE_LIMIT, backoff_s, transient
from moenode.testing.nodekit import Cluster, certified_transfers, make_genesis, seed, synced_node, wait_for, write_log


def _network(tmp_path, servers: int, users: int = 4):
    """`servers` staked nodes, one unstaked client, and `users` accounts that only pay each other."""
    server_seeds = [seed(i, "server") for i in range(servers)]
    user_seeds = [seed(i, "user") for i in range(users)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in server_seeds]
                           + [(seed(0, "client"), 0, "minilm-l3")] + [(u, 0, "minilm-l3") for u in user_seeds])
    c = Cluster(tmp_path, genesis, None)
    return genesis, [c.add(s) for s in server_seeds], c.add(seed(0, "client")), server_seeds, user_seeds


def _ledger_rows(node) -> int:
    return node.payments.authority.store.log_size()


def test_backoff_doubles_to_a_cap_with_the_jitter_the_driver_draws():
    from moenode.net import PeerUnreachable, RemoteError

    assert [backoff_s(a, 0.0) for a in (1, 2, 3)] == [0.25, 0.5, 1.0]  # half the step at the lowest jitter
    assert [backoff_s(a, 0.999999) for a in (1, 2, 3)] == pytest.approx([0.5, 1.0, 2.0])
    assert backoff_s(30, 0.999999) == pytest.approx(BACKOFF_MAX_S)
    assert transient(RemoteError("rate_limited")) and transient(PeerUnreachable("gone"))
    assert not transient(RemoteError("schema: page request: expected {query, cursor, limit<=64}"))


async def test_a_walk_paces_itself_and_backs_off_when_the_server_refuses(tmp_path):
    """Pages used to be asked back to back into the server's rate bucket, and the first `rate_limited` ended the
    walk (7,000 of 27,000 entries fetched, then failure, every time). Against a server that grants this client one
    request and then one every 4 s (so the second page is refused however slow the machine is), the walk now backs
    off, asks again, and completes; its cursor is saved page by page."""
    genesis, (s,), c, servers, users = _network(tmp_path, 1)
    # a full page, then a part one: every request after the first waits out the server's 4 s in backoffs, so each
    # page more costs about 5 s and shows nothing new
    n = PAGE_LIMIT + 44
    write_log(s.home / "ledger.sqlite", genesis, certified_transfers(genesis, servers, users, n))
    tight = default_limits() | {"request": Rate(0.25, 1.0)}
    async with synced_node(s, genesis, limits=tight) as server, synced_node(c, genesis) as client:
        await client.net.connect(server.net.addrs()[0])
        with trio.fail_after(120):
            await client.sync.walk(server.account)
        st = client.sync.state
        assert st["state"] == "synced" and st["applied"] == n and st["rejected"] == 0, st
        assert st["backoffs"] >= 1 and server.net.counters.rejected("rate_limited") >= 1
        assert client.payments.ledger.state_digest() == server.payments.ledger.state_digest()
        assert client.sync.cursor(server.account, b"ledger") == n.to_bytes(8, "big")  # saved, in the ledger store
        assert client.payments.authority.store.cursors() == {server.account: n.to_bytes(8, "big")}


async def test_anti_entropy_asks_every_staked_peer_in_turn(tmp_path, monkeypatch):
    """The periodic pull used to ask the one peer the first walk completed from, for ever: what only other peers
    had never arrived. Now each pull asks the next connected staked peer, so two peers that each hold an order the
    others lack both deliver it."""
    monkeypatch.setattr(sync_mod, "PULL_EVERY_S", 0.2)
    genesis, servers_m, c, servers, users = _network(tmp_path, 3, users=6)
    common = certified_transfers(genesis, servers, users[:4], 20)
    only = [certified_transfers(genesis, servers, users[4 + i:5 + i] + users[:1], 1)[0] for i in range(2)]
    for m, extra in zip(servers_m, [[], [only[0]], [only[1]]]):
        write_log(m.home / "ledger.sqlite", genesis, common + extra)
    async with synced_node(servers_m[0], genesis) as a, synced_node(servers_m[1], genesis) as b, \
            synced_node(servers_m[2], genesis) as d, synced_node(c, genesis) as client:
        for peer in (a, b, d):
            await client.net.connect(peer.net.addrs()[0])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.sync.run)
            applied = client.payments.ledger.applied
            await wait_for(lambda: {oid for oid, _ in only} <= set(applied.values()), 30)
            nursery.cancel_scope.cancel()
        assert len(applied) == 22 and client.sync.state["rejected"] == 0


@pytest.mark.slow
async def test_forged_future_orders_offered_by_gossip_and_by_sync_leave_nothing_behind(tmp_path):
    """300 forged certified orders of the next epochs (242 KB on the wire) used to wait unchecked, be logged on
    every offer, and be served on by every honest node's sync: 43,778-68,566 junk rows per node. Offered to a node
    by gossip twice and by a peer's sync pages five times over, they are refused now (counted), and the node's log
    and memory hold none of them."""
    genesis, (s,), c, servers, users = _network(tmp_path, 1)
    victim = Ed25519Signer(users[0])
    forged = []
    for i in range(300):
        order = seal(Transfer(victim.public_key, i, 2 + i % 2, Ed25519Signer(users[1]).public_key, 1), victim,
                     genesis.network_id)
        forged.append(certify(order, {Ed25519Signer(servers[0]).public_key: bytes(64)}).encode())
    copies = 5

    async def serve(peer: bytes, query: bytes, cursor: bytes, limit: int):
        at = int.from_bytes(cursor, "big") if cursor else 0  # an endless-looking log: the same orders again
        page = [canonical(["order", forged[(at + k) % len(forged)]])
                for k in range(min(limit, copies * len(forged) - at))] if query == b"ledger" else []
        return page, ((at + len(page)).to_bytes(8, "big") if page else b"")

    async with synced_node(c, genesis, gossip=True) as node, \
            open_host(NetConfig(seed=seed(0, "attacker"), net_id=genesis.network_id)) as attacker:
        attacker.set_page_handler("sync", serve, max_limit=PAGE_LIMIT)
        await attacker.gossip.subscribe("orders", lambda origin, data: trio.sleep(0))
        await node.net.connect(attacker.addrs()[0])
        await wait_for(lambda: len(attacker.gossip.pubsub.peer_topics.get(attacker.gossip.topic("orders"), ())) > 0)
        for _ in range(2):
            for data in forged:
                await attacker.gossip.publish("orders", data)
        await node.sync.walk(attacker.account_id)
        await wait_for(lambda: node.net.counters.get("received.gossip.orders") >= 2 * len(forged), 60)
        assert node.sync.state["fetched"] == copies * len(forged) == node.sync.state["rejected"]
        assert node.net.counters.rejected("bad_signature") == 2 * len(forged) + copies * len(forged)
        assert _ledger_rows(node) == 0 and len(node.payments.ledger.pending) == 0


@pytest.mark.slow
async def test_a_walk_of_100000_entries_stopped_midway_resumes_after_a_restart(tmp_path):
    """A node that restarted during its catch-up used to fetch its peer's log from the start again (the cursor was
    kept in memory, and only once a walk completed): on a testnet, 463,552 entries re-fetched without finishing.
    Stopped after about 30,000 of 100,000 entries, a node restarts (its ledger replayed from its store) and walks on
    from the cursor it saved: it fetches only the rest, and ends with the peer's ledger."""
    genesis, (s,), c, servers, users = _network(tmp_path, 1, users=8)
    n = 100_000
    write_log(s.home / "ledger.sqlite", genesis, certified_transfers(genesis, servers, users, n))
    c_start = seed(0, "client")
    assert Ed25519Signer(c_start).public_key == c.account
    async with synced_node(s, genesis) as server:
        async with synced_node(c, genesis) as client:
            await client.net.connect(server.net.addrs()[0])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.sync.run)
                await wait_for(lambda: client.sync.state["fetched"] >= 30_000, 300)
                nursery.cancel_scope.cancel()  # what a stop does to the node's tasks; a kill loses no more
            saved = int.from_bytes(client.sync.cursor(server.account, b"ledger"), "big")
            kept = _ledger_rows(client)
        assert 30_000 - PAGE_LIMIT <= saved <= kept < n
        async with synced_node(c, genesis) as client:  # the restart: the store is replayed, the cursor is read
            assert _ledger_rows(client) == kept and client.payments.ledger.applied
            await client.net.connect(server.net.addrs()[0])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.sync.run)
                await wait_for(lambda: client.sync.state["state"] == "synced", 600)
                nursery.cancel_scope.cancel()
            st = client.sync.state
            assert st["fetched"] == n - saved and st["applied"] == n - kept and st["rejected"] == 0, st
            assert st["duplicates"] == kept - saved  # only the page it was in the middle of comes again
            assert _ledger_rows(client) == n
            assert client.payments.ledger.state_digest() == server.payments.ledger.state_digest()
