"""One round through the three drivers of `moenode.core.shard`, against the in-process one
(`moenode.testing.inproc`): the daemon's (`moenode.node.rounds`, on real nodes: real keys, ledger stores and
payment checks, envelopes as bytes through `open_signed`) on a scripted round, and the simulator's
(`moenode.sim.message`) on its first round. Same Input, same members, same candidates: the same report comes out.

The daemon's network and encoders are its boundaries here: envelopes go from one node's outbox straight to the
other node's `on_envelope`, and each node's compute returns the scripted payload (tests/node runs both for real).
"""

import trio

from moenode.core.crypto import H
from moenode.core.messages import Input, open_signed, seal
from moenode.core.round import Outcome, ShardContext
from moenode.core.shard import ShardTable
from moenode.node import Node
from moenode.node.config import Config
from moenode.node.context import Clock
from moenode.node.rounds import Rounds
from moenode.store.keys import create_key
from moenode.store.ledger_db import init_ledger
from moenode.testing.inproc import InProcessShard
from moenode.testing.ledgerkit import T0, Net
from moenode.testing.roundkit import FAST, own_submission, payload

ITEMS = ["a first text to embed", "a second one", "and a third"]
NONCE = b"\x05" * 32


def loss_of(member: bytes) -> int:
    return 100_000 + int.from_bytes(H("loss", member)[:2], "big")


class Compute:
    """The encoder boundary: the scripted payload of this member."""

    routing_dim = 2  # roundkit's payloads carry two routing dimensions per item

    def __init__(self, member: bytes):
        self.member = member

    def payload(self, items, _shard_seed, _routing=None):
        return payload(self.member, len(items), loss_of(self.member))

    def verify(self, _items, _shard_seed, _payload, _sample_seed):
        return True, ""


class Wire:
    """The network boundary: envelopes as bytes from one node's outbox to another's `on_envelope`."""

    def __init__(self, me: bytes, peers: dict, client: bytes, to_client: trio.MemorySendChannel, rejected: list):
        self.me, self.peers, self.client, self.to_client, self.rejected = me, peers, client, to_client, rejected
        self.counters = self

    async def send(self, peer: bytes, data: bytes) -> None:
        if peer == self.client:
            await self.to_client.send((self.me, data))
        else:
            await self.peers[peer].rounds.on_envelope(self.me, data)

    def reject(self, reason, peer, detail, where=""):
        self.rejected.append((reason, detail))


def scripted(tmp_path):
    net = Net(n=5, users=1, params=FAST)
    client = net.user_keys[0]
    cert, c = net.pay(client, fee=100, items=tuple(t.encode() for t in ITEMS), nonce=NONCE)
    inp = Input(shard_id=c["shard_id"], epoch=0, submitter=client.public_key, pay_id=cert.id,
                pay_cert=cert.encode(), fee=100, data_hash=c["data_hash"], nonce=NONCE, modality="text",
                deadline_ms=T0 + FAST.round_abort_ms, items=tuple(ITEMS))
    return net, client, seal(inp, client, net.net)


def test_the_daemons_driver_and_the_in_process_driver_certify_the_same_report(tmp_path):
    net, client, input_env = scripted(tmp_path)
    keys = {k.public_key: k for k in net.auth_keys}

    # the in-process driver
    def work(member, w):
        return own_submission(member, w.shard_id, len(w.items), loss_of(member)), 10

    shard = InProcessShard(net.genesis, keys, work, lambda *_: True)
    res = shard.run(client, ITEMS, NONCE, now=T0, input_env=input_env)
    assert res.submitter.status == "certified" and not res.rejections
    inproc_reports = {m: o.certificate.report for m, o in res.members.items() if o.certificate}

    # the daemon's driver, on real nodes
    async def daemons():
        nodes: dict[bytes, Node] = {}
        rejected: list = []
        certified: dict[bytes, object] = {}
        to_client, from_nodes = trio.open_memory_channel(1000)
        start = trio.current_time()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i, k in enumerate(net.auth_keys):
                    home = tmp_path / f"n{i}"
                    home.mkdir()
                    init_ledger(home / "ledger.sqlite")
                    create_key(home / "key", H("key", b"auth" + i.to_bytes(4, "big")))
                    node = Node(home, config=Config(home=home), genesis=net.genesis,
                                clock=Clock.following_trio(T0, start))
                    assert node.signer.public_key == k.public_key
                    node.tasks.nursery = nursery
                    node.net = Wire(k.public_key, nodes, client.public_key, to_client, rejected)

                    async def on_certificate(cert, origin, pay_cert=b"", publish=None, me=k.public_key):
                        certified[me] = cert.report
                    node.rounds = Rounds(node.ctx, node.link, payments=node.payments, compute=Compute(k.public_key),
                                         index=[], config=node.config, prices=dict, on_certificate=on_certificate,
                                         on_evidence=node.epochs.file_evidence)
                    nodes[k.public_key] = node
                ctx = ShardContext.derive(net.net, FAST, input_env.msg, shard.power, shard.epoch_seed)
                submitter = ShardTable(client, shard.verify)
                session, out = submitter.submit(ctx, input_env, T0)
                for e in out:
                    nodes[e.to].rounds.dispatch(client.public_key, e.env)
                outcome = None
                async for peer, data in from_nodes:
                    now = T0 + int((trio.current_time() - start) * 1000)
                    out = submitter.receive(peer, open_signed(data, net.net, shard.verify), now)
                    outcome = next((e for e in out if isinstance(e, Outcome)), outcome)
                    if outcome is not None and len(certified) == ctx.n:
                        break
                nursery.cancel_scope.cancel()
        for node in nodes.values():
            node.payments.close()
            node.archive.close()
        return outcome, certified, rejected

    outcome, certified, rejected = trio.run(daemons)
    assert not rejected
    assert outcome.status == "certified" and outcome.certificate.report == res.submitter.certificate.report
    assert certified == inproc_reports and len(certified) == len(res.members)


def test_the_simulators_driver_and_the_in_process_driver_certify_the_same_report():
    """The simulator's first round, run again through the in-process driver with the same Input, the same members
    and the candidates the simulator's world computes: the same report (so the same certificate digest)."""
    from moenode.core.messages import Submission
    from moenode.sim.message import MessageSim
    from moenode.testing.simkit import small

    sim = MessageSim(small(nodes=12, submissions=1, sim="proxy = false"))
    power, epoch_seed = sim.power, sim.epoch_seed
    sim.run()
    (sid, m), = sim.meta.items()
    cert = m.sub.certificate
    assert cert is not None

    def work(member, w):
        i = sim.idx[member]
        sub = Submission(shard_id=sid, member=member, producer=member, payload=sim._payload(i, m), proxy=None)
        return sub, sim._compute_ms(i, m)

    signers = {pk: sim.pop.signers[pk] for pk in m.ctx.members}
    shard = InProcessShard(sim.pop.genesis, signers, work, lambda _who, v: sim._check(sid, v.submission),
                           verify=sim.verify, power=power, epoch_seed=epoch_seed)
    client = sim.pop.signers[m.client]
    res = shard.run(client, list(m.input_env.msg.items), m.input_env.msg.nonce, now=0, input_env=m.input_env)
    assert res.submitter.status == "certified" and not res.rejections
    assert res.submitter.certificate.report == cert.report
