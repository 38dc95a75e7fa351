"""Bootstrap, reconnect after a peer restarts, and clean shutdown (no ExceptionGroup at exit)."""

import pytest
import trio

from moenode.core.crypto import Ed25519Signer
from moenode.net import PeerUnreachable, open_host, peer_id_of
from netkit import Inbox, config, connect_all, free_port, hosts, seed, wait_until


async def test_bootstrap_and_reconnect_after_restart():
    port = free_port()
    boot_cfg = config("boot", listen=(f"/ip4/127.0.0.1/tcp/{port}",))
    boot_acct = Ed25519Signer(seed("boot")).public_key
    boot_addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_of(boot_acct).to_base58()}"
    joiner = Inbox()
    with trio.fail_after(40):
        async with open_host(config("joiner", bootstrap=(boot_addr,), backoff_max=0.5), joiner) as a:
            await wait_until(lambda: a.counters.get("bootstrap.failed") >= 1)  # not up yet: retried with backoff
            first = Inbox()
            async with open_host(boot_cfg, first) as b:
                await wait_until(lambda: a.is_connected(b.account_id))
                await a.send(b.account_id, b"one")
                await first.wait_for(1)
                await b.send(a.account_id, b"back")
                await joiner.wait_for(1)
            await wait_until(lambda: not a.is_connected(boot_acct))
            with pytest.raises(PeerUnreachable):
                await a.send(boot_acct, b"nobody home")
            second = Inbox()
            async with open_host(boot_cfg, second) as b2:  # same key, same address
                await wait_until(lambda: a.is_connected(b2.account_id))
                await a.send(b2.account_id, b"two")  # the old cached stream is gone: a fresh one is opened
                await second.wait_for(1)
                assert second.items == [(a.account_id, b"two")]
            assert a.counters.get("connected") >= 2


async def test_clean_shutdown_repeatedly():
    """Hosts with live connections, streams, gossip meshes and in-flight work exit without errors, three times."""
    for round_ in range(3):
        inboxes: dict[str, Inbox] = {}
        with trio.fail_after(20):
            async with hosts("s0", "s1", "s2", "s3", inboxes=inboxes) as nets:
                await connect_all(nets)
                gossip = Inbox()
                for net in nets:
                    await net.gossip.subscribe("checkpoints", gossip)

                    async def echo(peer: bytes, data: bytes) -> bytes:
                        return data

                    net.set_request_handler("echo", echo)
                await wait_until(lambda: all(net.gossip.mesh_peers("checkpoints") for net in nets))
                await nets[0].gossip.publish("checkpoints", b"cp %d" % round_)
                for a in nets:
                    for b in nets:
                        if a is not b:
                            await a.send(b.account_id, b"x" * 70_000)
                            assert await a.request(b.account_id, "echo", b"e") == b"e"
                await gossip.wait_for(3)
                # leave with work still in flight
                async with trio.open_nursery() as nursery:
                    for b in nets[1:]:
                        nursery.start_soon(nets[0].send, b.account_id, b"y" * 3_000_000)
                    await trio.sleep(0.01)
                    nursery.cancel_scope.cancel()


async def test_caller_exception_comes_out_unwrapped():
    with pytest.raises(KeyError, match="mine"):
        async with hosts("raiser") as (net,):
            raise KeyError("mine")


async def test_a_peer_that_stays_away_is_retried_with_backoff_and_logged_once(caplog):
    """After its peers stopped, a node logged 311 `Failed to open TCP stream` errors and a line per retry."""
    import logging

    from moenode.node.logs import quiet_third_parties

    quiet_third_parties()  # what the daemon's logging set-up does
    caplog.set_level(logging.INFO)
    port = free_port()
    gone = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_of(Ed25519Signer(seed('gone')).public_key).to_base58()}"
    with trio.fail_after(30):
        async with open_host(config("waiter", bootstrap=(gone,), backoff_min=0.05, backoff_max=0.2)) as a:
            await wait_until(lambda: a.counters.get("bootstrap.failed") >= 8)
    ours = [r for r in caplog.records if r.name.startswith("moenode") and "unreachable" in r.getMessage()]
    assert len(ours) == 1 and "retrying with backoff" in ours[0].getMessage()
    assert not [r for r in caplog.records if r.name.startswith("libp2p") and r.levelno >= logging.ERROR]
