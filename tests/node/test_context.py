"""The daemon's parts on virtual time: one injected clock (`moenode.node.context.Clock`) for wall time and timers.

The round driver is the real one (`Rounds`, with the real ledger, authority and stores of a node home); the
network is a recorder at the boundary, so no member ever answers. Under trio's MockClock (autojump) the
submitter's round times out at its deadline, an hour of protocol time, which the test crosses without waiting:
the deadline is read from the injected wall clock and the wait is trio's timer, and both follow the MockClock.
"""

import trio

from moenode.core.crypto import H
from moenode.core.messages import Input, seal, shard_id
from moenode.core.selection import data_hash
from moenode.node import Node
from moenode.node.config import Config
from moenode.node.context import Clock
from moenode.node.rounds import Rounds
from moenode.testing.nodekit import TEXTS, Cluster, make_genesis, seed

HOUR_MS = 3_600_000


class Recorder:
    """The net boundary: records what the driver sends; refuses nothing, answers nothing."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.counters = self

    async def send(self, peer: bytes, data: bytes) -> None:
        self.sent.append(peer)

    def reject(self, reason, peer, detail, where=""):
        raise AssertionError(f"rejected: {reason} {detail}")


async def test_a_rounds_timer_fires_on_virtual_time(tmp_path, autojump_clock):
    seeds = [seed(i) for i in range(4)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds], epoch_ms=10 * HOUR_MS)
    m = Cluster(tmp_path, genesis, None).add(seeds[0])
    start_ms = genesis.genesis_time_ms + 60_000
    node = Node(m.home, config=Config(home=m.home, model=m.model), genesis=genesis,
                clock=Clock.following_trio(start_ms, trio.current_time()))
    net = node.net = Recorder()
    ended: list = []
    try:
        async with trio.open_nursery() as nursery:
            node.tasks.nursery = nursery
            rounds = Rounds(node.ctx, node.link, payments=node.payments, compute=None, index=[], config=node.config,
                            prices=dict, on_certificate=lambda *a: trio.sleep(0), on_evidence=ended.append)
            items, nonce = TEXTS[:2], H("nonce", b"virtual")
            dh = data_hash([t.encode() for t in items])
            sid = shard_id(0, dh, nonce, node.account)
            inp = Input(shard_id=sid, epoch=0, submitter=node.account, pay_id=H("pay", sid), pay_cert=b"\x01" * 8,
                        fee=5, data_hash=dh, nonce=nonce, modality="text", deadline_ms=node.now_ms() + HOUR_MS,
                        items=tuple(items))
            assert node.now_ms() == start_ms
            virtual = trio.current_time()
            session, effects = rounds.table.submit(rounds._derive(inp), seal(inp, node.signer, node.net_id),
                                                   node.now_ms())
            slot = rounds._slot(session)  # its timer task sleeps until the session's deadline
            rounds._effects(slot, effects)
            await slot.sub_done.wait()
            nursery.cancel_scope.cancel()
        out = session.submitter.outcome
        assert out.status == "failed" and out.reason == "no certificate before the deadline"
        assert node.now_ms() >= inp.deadline_ms and trio.current_time() - virtual >= HOUR_MS / 1000
        assert len(set(net.sent)) == len(session.ctx.members) - (node.account in session.ctx.members)
    finally:
        node.archive.close()
        node.payments.close()
