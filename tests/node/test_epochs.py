"""Value moves from the control API and epoch checkpoints over the network, on a genesis with 6-second epochs.

A Transfer and a Stake are certified through /transfer and /stake; the stake order becomes a checkpoint item of
its epoch E; the authorities certify checkpoint E during E+1 over the `checkpoint` RPC, and from epoch E+2 on every
node's stake table holds the new stake. Then one node finds evidence of an equivocation (two different Commits by
one member for one shard): it spreads on gossip, enters every authority's next checkpoint, and the offender's
stake is slashed by half for everyone. All nodes end with the same ledger.

Last, a node is stopped while checkpoints form without it, and its store carries those epochs over (what a node
cut off from the network does); once it runs again it adopts the certificates it fetches from its peers and ends
with the same ledger.
"""

import dataclasses
import json
import stat
import time

import pytest
import trio
from controlkit import ahttp, as_nobody, raw_http

from moenode.core.crypto import Ed25519Signer, H, ed25519_verify
from moenode.core.messages import Commit, Evidence, seal
from moenode.store.ledger_db import open_authority
from moenode.testing.nodekit import PARAMS, cluster, make_genesis, seed, wait_for

pytestmark = pytest.mark.slow


async def _attack_the_control_api(node, to: bytes) -> None:
    """A web page's POST (foreign Host, an Origin, text/plain), a local script without the token, the same page
    holding the token, and another local user (uid nobody) who found the port: none moves a unit."""
    port = int(node.control_url.rsplit(":", 1)[1])
    body = json.dumps({"to": to.hex(), "amount": 1234}).encode()
    page = {"Host": "attacker.example:80", "Origin": "http://attacker.example", "Content-Type": "text/plain"}
    script = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
    for headers in (page, script, dict(page, Authorization=f"Bearer {node.control_token}")):
        status, _ = await trio.to_thread.run_sync(raw_http, port, "POST", "/transfer", headers, body)
        assert status in (401, 403, 415, 421), (headers, status)
    status = await trio.to_thread.run_sync(as_nobody, lambda: raw_http(port, "POST", "/transfer", script, body)[0])
    assert status == 401
    for name in ("run.json", "control.token"):
        assert stat.S_IMODE((node.home / name).stat().st_mode) == 0o600, name


async def test_transfer_stake_and_checkpoint(tmp_path):
    seeds = [seed(i, "epochs") for i in range(4)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds])
    genesis = dataclasses.replace(genesis, genesis_time_ms=int(time.time() * 1000), epoch_ms=6_000, params=PARAMS)
    async with cluster(tmp_path, genesis) as c:
        ms = await c.start_all([c.add(s) for s in seeds])
        n0, n3 = ms[0].node, ms[3].node
        bal0, bal3 = n0.payments.ledger.balance(ms[0].account), n0.payments.ledger.balance(ms[3].account)

        await _attack_the_control_api(n0, ms[3].account)  # refused: the balances below move by 123 and 500 only
        code, res = await ahttp(n0, "/transfer", "POST", {"to": ms[3].account.hex(), "amount": 123})
        assert code == 200, res
        code, res = await ahttp(n0, "/stake", "POST", {"amount": 500})
        assert code == 200 and res["bonding"] == 500, res
        code, err = await ahttp(n0, "/transfer", "POST", {"to": "00", "amount": 1})
        assert code == 400 and "account" in err["error"]

        def same_ledger() -> bool:
            return len({x.payments.ledger.state_digest() for x in c.nodes}) == 1

        await wait_for(lambda: same_ledger() and n3.payments.ledger.balance(ms[3].account) == bal3 + 123, 20)
        assert n3.payments.ledger.balance(ms[0].account) == bal0 - 123 - 500
        item = next(i for i in n0.payments.ledger.items.values() if i.kind == "stake")
        # the first checkpoint that includes the item fixes the table two epochs after its own (a missed window
        # only delays it: the table carries over and the item waits)
        await wait_for(lambda: all(item.key in x.payments.ledger.checkpointed for x in c.nodes), 60)
        for x in c.nodes:
            led = x.payments.ledger
            assert led.stakes_at(led.known_through)[ms[0].account] == 1_500
            assert led.stakes_at(item.epoch + 1).get(ms[0].account) == 1_000
            led.assert_supply()
        assert sum(x.metrics.get("checkpoints_applied") for x in c.nodes) >= len(c.nodes)
        await wait_for(same_ledger, 10)

        # evidence found by one node slashes the offender for everyone (equivocation: 50 %)
        g = genesis
        await wait_for(lambda: (time.time() * 1000 - g.genesis_time_ms) % g.epoch_ms < g.epoch_ms // 3, 10)
        cheat = Ed25519Signer(ms[1].seed)
        sid = H("shard", b"equivocated")
        a, b = (seal(Commit(sid, H("d", bytes([i]))), cheat, g.network_id) for i in (1, 2))
        ev = Evidence("equivocation", cheat.public_key, sid, a.as_wire(), b.as_wire())
        n0.epochs.file_evidence(ev)
        await wait_for(lambda: all(any(i.kind == "equivocation" for i in x.payments.ledger.items.values())
                                   for x in c.nodes), 10)
        proof = next(i for i in n0.payments.ledger.items.values() if i.kind == "equivocation")
        await wait_for(lambda: all(proof.key in x.payments.ledger.checkpointed for x in c.nodes), 60)
        for x in c.nodes:
            table = x.payments.ledger.stakes_at(x.payments.ledger.known_through)
            assert table[ms[1].account] == 500 and sum(table.values()) == 4_500
            x.payments.ledger.assert_supply()
        await wait_for(same_ledger, 10)

        # down while checkpoints form; its store carries those epochs over; back up, it adopts the certificates
        m3 = ms[3]
        await c.stop(m3)
        through = n0.payments.ledger.known_through
        await wait_for(lambda: n0.payments.ledger.known_through >= through + 2, 40)
        cut_off = open_authority(m3.home / "ledger.sqlite", g, Ed25519Signer(m3.seed), ed25519_verify)
        cut_off.catch_up(int(time.time() * 1000))
        assert cut_off.ledger.skipped
        cut_off.store.close()
        node = await c.start(m3)
        await wait_for(lambda: node.metrics.get("checkpoints_adopted") >= 1, 30)
        await wait_for(same_ledger, 30)
        assert not node.payments.ledger.skipped - n0.payments.ledger.skipped


def test_the_checkpoints_topic_decodes_a_full_checkpoint_certificate():
    """The topic's decoder looks at the message once to tell a certificate from an evidence envelope; that look
    takes the certificate's value budget (4,096 items and 1,024 votes), not the small default of untyped bytes."""
    from types import SimpleNamespace

    from moenode.testing.fuzzkit import largest_messages

    from moenode.core.checkpoint import CheckpointCert
    from moenode.node.epochs import Epochs

    _, data = largest_messages()["CheckpointCert"]
    cc = Epochs(SimpleNamespace(net_id=H("network", b"fuzz")), None, None, None).decode(data)
    assert isinstance(cc, CheckpointCert) and len(cc.checkpoint.items) == 4096
