"""Our own orders over the network: one that got votes but no quorum (half the authorities down) holds our
sequence number at the authorities that voted; once they are back, the node finishes it before its next order,
instead of being refused there for good. An authority that lacks a credit is asked again with it."""

import pytest
from nodekit import cluster, make_genesis, seed, wait_for

from moenode.core.ledger_client import Certified, OrderSubmitter
from moenode.core.messages import seal
from moenode.core.orders import Transfer
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


async def test_an_authority_that_lacks_our_credit_is_asked_again_with_it(tmp_path):
    """A credit certificate that only the payer and its sender hold: the other two authorities refuse the payer's
    spend, naming the payer's account in their answer, and the retry carries the certificate that fixes it."""
    seeds = [seed(i, "credit") for i in range(4)]
    genesis = make_genesis([(s, 1_000, "minilm-l3") for s in seeds])
    async with cluster(tmp_path, genesis) as c:
        ms = await c.start_all([c.add(s) for s in seeds])
        payer, sender = ms[0].node, ms[1].node
        sp = sender.payments
        gift = seal(Transfer(sender.account, sp.ledger.sequence(sender.account), sp._epoch(), payer.account, 50_000),
                    sender.signer, sender.net_id)
        outcome = await sp._drive(OrderSubmitter(gift, sp.ledger.power_at(gift.msg.epoch), sp.authority.verify))
        assert isinstance(outcome, Certified)
        for n in (payer, sender):  # applied here only: no gossip, so the other two never saw it
            assert n.payments.accept(outcome.cert.encode()) == "applied"
        others = [m.node for m in ms[2:]]
        lacking = [n for n in others if n.payments.ledger.balance(payer.account) == 100_000]
        assert lacking  # (a periodic pull could have brought it already; then that node simply votes)

        cert = await payer.payments.transfer(sender.account, 120_000)  # more than the payer had before the gift
        assert cert.msg.amount == 120_000 and len(cert.votes) >= 3
        for n in lacking:
            assert n.net.counters.rejected("insufficient_funds") == 1  # refused once, then voted with the credit
        await wait_for(lambda: len({x.payments.ledger.state_digest() for x in c.nodes}) == 1, 20)
        payer.payments.ledger.assert_supply()
