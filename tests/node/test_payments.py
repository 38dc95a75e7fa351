"""Our own orders over the network: one that got votes but no quorum (half the authorities down) holds our
sequence number at the authorities that voted; once they are back, the node finishes it before its next order,
instead of being refused there for good."""

import pytest
from nodekit import cluster, make_genesis, seed, wait_for

from moenode.node.payments import PaymentError

pytestmark = pytest.mark.slow


async def test_an_order_without_quorum_is_finished_before_the_next(tmp_path):
    seeds = [seed(i, "unfinished") for i in range(4)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds])
    async with cluster(tmp_path, genesis) as c:
        ms = await c.start_all([c.add(s) for s in seeds])
        payer, friend = ms[0].node, ms[1].account
        for m in ms[2:]:
            await c.stop(m)  # two of four authorities: 5,000 of the 6,667 voting power needed
        with pytest.raises(PaymentError, match="voting power"):
            await payer.payments.transfer(friend, 11)
        first = payer.payments.unfinished
        assert first is not None and payer.payments.authority.locked(ms[0].account, 0) == first.id

        for m in ms[2:]:
            await c.start(m)
        await c.connected()
        await payer.payments.transfer(friend, 22)  # sequence 0 is the 11 (finished first), this one is 1
        assert payer.payments.unfinished is None and payer.metrics.get("orders_finished_late") == 1
        led = payer.payments.ledger
        assert led.sequence(ms[0].account) == 2 and led.applied[(ms[0].account, 0)] == first.id
        await wait_for(lambda: len({x.payments.ledger.state_digest() for x in c.nodes}) == 1, 20)
        assert c.nodes[2].payments.ledger.balance(friend) == 100_000 + 33
        led.assert_supply()
