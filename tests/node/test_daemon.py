"""The daemon end to end: real nodes (keys, ledger store, libp2p, ONNX encoders) in one process.

One network carries several checks, because starting it is what costs: a batch certified over libp2p and paid
through the ledger, the control API, counted rejections of bad frames / signatures / networks / shards / replays,
a late joiner that syncs, and a restart that keeps key, ledger and winner index.
"""

import base64
import dataclasses

import numpy as np
import pytest
import trio
from controlkit import ahttp

from moenode.core.crypto import Ed25519Signer, H
from moenode.core.messages import Commit, Input, Reveal, decode_certificate, seal, shard_id
from moenode.core.orders import escrow_account
from moenode.core.round import ShardContext
from moenode.core.selection import data_hash
from moenode.net import NetConfig, open_host
from moenode.node.config import Config
from moenode.testing.nodekit import TEXTS, Cluster, cluster, make_genesis, seed, wait_for

REASONS = ("malformed", "oversized", "bad_signature", "wrong_network", "out_of_shard", "replay")


def _input(node, signer, items, nonce, fee=5):
    epoch = node.genesis.epoch(node.now_ms())
    dh = data_hash([t.encode() for t in items])
    sid = shard_id(epoch, dh, nonce, signer.public_key)
    inp = Input(shard_id=sid, epoch=epoch, submitter=signer.public_key, pay_id=H("pay", sid), pay_cert=b"\x01" * 8,
                fee=fee, data_hash=dh, nonce=nonce, modality="text", deadline_ms=node.now_ms() + 60_000,
                items=tuple(items))
    ctx = ShardContext.derive(node.net_id, node.params, inp, node.payments.ledger.power_at(epoch),
                              node.payments.ledger.epoch_seed(epoch))
    return seal(inp, signer, node.net_id), ctx


async def _attack(target, genesis) -> None:
    """Bad frames and envelopes from a peer outside the genesis; each must be counted, none may hurt the node."""
    atk = Ed25519Signer(seed(99, "attacker"))
    net = genesis.network_id
    async with open_host(NetConfig(seed=atk.seed, net_id=net)) as host:
        await host.connect(target.net.addrs()[0])
        me = target.account
        await host.send(me, b"\xc1 not msgpack")
        await host.send(me, b"\x00" * (Reveal.MAX_BYTES + 1024))  # above every round message's cap
        good = seal(Commit(H("s", b"1"), H("d", b"1")), atk, net)
        await host.send(me, dataclasses.replace(good, sig=bytes(64)).encode())
        await host.send(me, seal(Commit(H("s", b"1"), H("d", b"1")), atk, H("network", b"another")).encode())
        outside = inside = None
        for i in range(64):
            env, ctx = _input(target, atk, TEXTS[:2], H("nonce", bytes([i])))
            if me in ctx.members and inside is None:
                inside = env
            if me not in ctx.members and outside is None:
                outside = env
        assert inside is not None and outside is not None
        await host.send(me, outside.encode())
        await host.send(me, inside.encode())  # unpaid: the member opts out, the round ends there
        await host.send(me, inside.encode())  # the same envelope again: a replay
        await wait_for(lambda: all(target.net.counters.rejected(r) >= 1 for r in REASONS), 20)


@pytest.mark.slow
async def test_network_certifies_pays_syncs_rejects_and_restarts(tmp_path):
    seeds = [seed(i) for i in range(5)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds[:4]] + [(seeds[4], 0, "minilm-l3")])
    async with cluster(tmp_path, genesis) as c:
        ms = [c.add(s) for s in seeds]
        for m in ms[:4]:
            await c.start(m)
        await c.connected()
        n0 = ms[0].node
        before = {m.account: n0.payments.ledger.balance(m.account) for m in ms}

        # a batch certified end to end, through the control API
        code, res = await ahttp(n0, "/submit", "POST", {"texts": TEXTS, "fee": 100})
        assert code == 200, res
        assert [a["status"] for a in res["attempts"]] == ["certified"]
        assert res["space"] == "main" and res["model_ids"] == [res["model_id"]] * len(TEXTS)
        emb = np.frombuffer(base64.b64decode(res["embeddings"]), "<f4").reshape(len(TEXTS), res["dim"])
        from moenode.encoders import zoo
        expect = zoo.load("minilm-l3").embed(TEXTS)
        assert np.all((emb * expect).sum(1) > 0.999)  # the winner really ran minilm-l3 on our texts
        cert = decode_certificate(bytes.fromhex(res["certificate"]))
        members = n0.payments.ledger.check_shard_certificate(cert)  # q member signatures on one report
        assert res["winner"] == cert.report.winner.hex() and cert.report.winner in members
        assert res["shard"] == {"members": len(members), "signatures": len(cert.signatures)}
        sid = cert.report.shard_id

        # every node: indexed the routing vectors, applied the Settle, holds the same ledger
        def settled() -> bool:
            return all(len(x.index) == len(TEXTS) and x.payments.ledger.sequence(escrow_account(sid)) == 1
                       for x in c.nodes) and len({x.payments.ledger.state_digest() for x in c.nodes}) == 1

        await wait_for(settled, 30)
        led = n0.payments.ledger
        led.assert_supply()
        if cert.report.winner == ms[0].account:
            # the payer won: it gets back at most the whole fee (all of it when every other signer was struck)
            assert led.balance(ms[0].account) <= before[ms[0].account]
        else:
            assert led.balance(ms[0].account) < before[ms[0].account]
            assert led.balance(cert.report.winner) > before[cert.report.winner]
        assert sum(led.balance(m.account) for m in ms) == sum(before.values())  # the fee moved, nothing vanished

        # a connection that a loaded machine dropped is dialled again: /status counts the peers connected now
        await c.connected(60)
        code, st = await ahttp(n0, "/status")
        assert code == 200 and st["peers"] == 3 and st["certificates"] == 1 and st["index"]["entries"] == len(TEXTS)
        assert st["account"] == ms[0].account.hex() and st["sync"]["state"] == "synced"
        assert st["ledger"]["digest"] == n0.payments.ledger.state_digest().hex()
        assert st["ledger"]["supply"] == st["ledger"]["genesis_supply"] == genesis.supply()
        code, text = await ahttp(n0, "/metrics")
        assert code == 200 and "moenode_balance" in text and "moenode_certificates_total" in text
        code, err = await ahttp(n0, "/submit", "POST", {"texts": []})
        assert code == 400 and "1 to 256 items" in err["error"]
        assert st["spaces"] == ["main"]
        paid = n0.payments.ledger.sequence(ms[0].account)
        code, err = await ahttp(n0, "/submit", "POST", {"texts": TEXTS, "space": "elsewhere"})
        assert code == 400 and "not one of this network" in err["error"]
        assert n0.payments.ledger.sequence(ms[0].account) == paid  # refused before anything was paid

        # bad input from a stranger is counted by reason, and the network keeps certifying
        target = ms[1].node
        await _attack(target, genesis)
        code, st = await ahttp(target, "/status")
        assert all(st["rejections"].get(r, 0) >= 1 for r in REASONS), st["rejections"]
        results = []

        async def submit(texts):  # two batches at once from one node: its payments take turns
            results.append(await ms[2].node.submitter.submit(texts, 50, 1))

        async with trio.open_nursery() as n:
            n.start_soon(submit, TEXTS[:4])
            n.start_soon(submit, TEXTS[4:6])
        assert [r[0].status for r in results] == ["certified", "certified"]

        # a late joiner replays the history from a peer, checks it, and ends with the same state
        await c.start(ms[4], bootstrap_from=[ms[1]])
        late = ms[4].node
        await wait_for(lambda: late.sync.state["state"] == "synced" and len(late.index) == len(TEXTS) + 6, 30)
        await wait_for(lambda: late.payments.ledger.state_digest() == n0.payments.ledger.state_digest(), 30)
        fetched = late.sync.state["fetched"]
        await late.sync.walk(late.sync.source, quiet=True)  # the periodic pull: nothing new, nothing fetched
        assert late.sync.state["fetched"] == fetched and late.sync.state["state"] == "synced"

        # a restart keeps the key, the ledger and the winner index
        m1 = ms[1]
        digest, entries, account = m1.node.payments.ledger.state_digest(), len(m1.node.index), m1.node.account
        await c.stop(m1)
        snapshot = m1.home / "index" / "winners.npz"
        assert not (m1.home / "run.json").exists() and snapshot.exists()
        node = await c.start(m1)
        assert node.account == account and len(node.index) == entries
        assert node.payments.ledger.state_digest() == digest and (m1.home / "run.json").exists()
        # a crash loses the snapshot: the index is rebuilt from the certificate archive
        await c.stop(m1)
        snapshot.unlink()
        node = await c.start(m1)
        assert len(node.index) == entries and node.payments.ledger.state_digest() == digest


def test_a_home_that_lost_its_ledger_is_refused_until_resynced(tmp_path):
    """The ledger holds the vote locks. A node whose key or certificate archive exists but whose ledger is missing
    or empty used to start from genesis with none of them; it is refused now, and after a resync it starts but
    abstains from voting for two epochs."""
    from moenode.node import Node
    from moenode.store.ledger_db import StoreError, resync_ledger
    from moenode.node.context import wall_ms

    s = seed(0)
    genesis = make_genesis([(s, 1_000, "minilm-l3")])
    m = Cluster(tmp_path, genesis, None).add(s)  # a home as `moenode init` leaves it: key and empty ledger
    config = Config(home=m.home, model=m.model)
    node = Node(m.home, config=config, genesis=genesis)
    node.archive.close()
    node.payments.close()
    ledger = m.home / "ledger.sqlite"
    for lose in (lambda: ledger.write_bytes(b""), ledger.unlink):
        lose()
        with pytest.raises(StoreError, match="vote locks are gone.*moenode resync --home"):
            Node(m.home, config=config, genesis=genesis)
    (m.home / "key").rename(m.home / "key.away")  # the certificate archive alone shows this home ran
    with pytest.raises(StoreError, match="certs.sqlite exists"):
        Node(m.home, config=config, genesis=genesis)
    (m.home / "key.away").rename(m.home / "key")
    resync_ledger(ledger, genesis, wall_ms(), "test")
    node = Node(m.home, config=config, genesis=genesis)
    assert node.payments.authority.votes_from_epoch == genesis.epoch(wall_ms()) + 2
    node.archive.close()
    node.payments.close()


@pytest.mark.slow
async def test_a_newcomer_hears_every_advert_without_waiting_for_the_interval(tmp_path):
    seeds = [seed(i, "adverts") for i in range(2)]
    genesis = make_genesis([(s, 1_000, "adv-noise") for s in seeds])
    async with cluster(tmp_path, genesis) as c:
        old, new = c.add(seeds[0], "adv-noise"), c.add(seeds[1], "adv-noise")
        await c.start(old, advert_interval_s=3_600)
        await trio.sleep(12)  # its first adverts are out, to nobody, and gone from the gossip cache
        await c.start(new, bootstrap_from=[old], advert_interval_s=3_600)
        await wait_for(lambda: old.account in new.node.adverts and new.account in old.node.adverts, 20)
