"""The sans-IO submitter, driven in process against real authorities (Ed25519), its requests and answers going
through their wire encodings."""

import pytest

from moenode.core.errors import ProtocolError, SchemaError
from moenode.core.ledger import InsufficientFunds
from moenode.core.ledger_client import (
    DELIVERY,
    CertPool,
    Certified,
    Failed,
    OrderSubmitter,
    SendOrder,
    delivery_steps,
    unreachable,
    vote_epoch_for,
)
from moenode.core.orders import MAX_ATTACH, BatchVote, OrderAnswer, OrderRequest, Transfer
from moenode.testing.ledgerkit import EPOCH_MS, T0, Net


def drive(net: Net, sub: OrderSubmitter, now: int = T0, lose: set[bytes] = frozenset()) -> list:
    """A stand-in for the net layer: deliver every SendOrder, feed answers back, collect terminal effects."""
    by_pk = {a.me: a for a in net.authorities}
    queue, done, sends = sub.start(), [], 0
    while queue:
        eff = queue.pop(0)
        if not isinstance(eff, SendOrder):
            done.append(eff)
            continue
        sends += 1
        if eff.authority in lose:
            continue  # a lost request: no answer
        req = OrderRequest.decode(OrderRequest(eff.order, eff.attachments, eff.vote_epoch).encode())  # as sent
        try:
            answer = OrderAnswer.of(by_pk[eff.authority].handle_order(req.order, now, req.attach, req.vote_epoch))
        except ProtocolError as e:
            answer = OrderAnswer.of(e)
        answer = OrderAnswer.decode(answer.encode())
        if answer.vote is not None:
            queue += sub.on_vote(eff.authority, answer.vote)
        else:
            queue += sub.on_refusal(eff.authority, answer.refusal, answer.account, answer.why)
    return done


def lagging_credit():
    """Bob pays alice 500,000 and only three of five authorities learn of it; alice then spends more than she had."""
    net = Net(n=5)
    alice, bob = net.user_keys[:2]
    credit = net.certify(net.seal(Transfer(bob.public_key, 0, 0, alice.public_key, 500_000), bob))
    for a in net.authorities[:3]:
        a.accept_certificate(credit.encode())
    spend = net.seal(Transfer(alice.public_key, 0, 0, bob.public_key, 1_200_000), alice)
    return net, credit, spend


def test_retries_with_the_credit_certificates_an_authority_asks_for():
    net, credit, spend = lagging_credit()
    alice = net.user_keys[0]
    pool = CertPool()
    pool.add(credit)
    sub = OrderSubmitter(spend, net.ledger.power_at(0), net.verify, pool)
    out = drive(net, sub)
    assert len(out) == 1 and isinstance(out[0], Certified)
    assert sub.state == "certified"
    for a in net.authorities:  # the lagging ones applied the attached credit on the way
        assert a.ledger.balance(alice.public_key) == 1_500_000
    net.broadcast(out[0].cert)
    assert len(net.digests()) == 1


def test_fails_with_reasons_when_quorum_is_unreachable():
    net = Net(n=5)
    alice, bob, carol = net.user_keys
    first = net.seal(Transfer(alice.public_key, 0, 0, bob.public_key, 1), alice)
    net.votes(first, to=[0, 1])  # two authorities are locked on another order
    second = net.seal(Transfer(alice.public_key, 0, 0, carol.public_key, 1), alice)
    sub = OrderSubmitter(second, net.ledger.power_at(0), net.verify)
    out = drive(net, sub)
    assert len(out) == 1 and isinstance(out[0], Failed)
    assert out[0].reason.count("conflict") == 2 and sub.state == "failed"


def test_a_lost_request_still_certifies_and_bad_votes_do_not_count():
    net = Net(n=5)
    alice, bob = net.user_keys[:2]
    order = net.seal(Transfer(alice.public_key, 0, 0, bob.public_key, 10), alice)
    sub = OrderSubmitter(order, net.ledger.power_at(0), net.verify)
    assert sub.on_vote(net.authorities[0].me, bytes(64)) == []
    assert sub.refused[net.authorities[0].me] == "bad_vote"
    out = drive(net, sub, lose={net.authorities[4].me})
    assert isinstance(out[-1], Certified)
    assert net.authorities[4].me not in dict(out[-1].cert.votes)


def test_first_attachments_spare_a_lagging_authority_the_refusal():
    net, credit, spend = lagging_credit()
    sub = OrderSubmitter(spend, net.ledger.power_at(0), net.verify, first=(credit,))
    sent = sub.start()
    assert all(e.attachments == (credit.encode(),) for e in sent)
    out = drive(net, OrderSubmitter(spend, net.ledger.power_at(0), net.verify, first=(credit,)))
    assert isinstance(out[0], Certified) and len(out[0].cert.votes) >= 4  # the two lagging ones voted at once


def test_a_retry_carries_at_most_what_one_request_may():
    net = Net(n=5, users=MAX_ATTACH + 4)
    alice, *givers = net.user_keys
    pool = CertPool()
    for g in givers:  # more credits than one request carries, none known to any authority
        pool.add(net.certify(net.seal(Transfer(g.public_key, 0, 0, alice.public_key, 100_000), g)))
    spend = net.seal(Transfer(alice.public_key, 0, 0, givers[0].public_key, 2_000_000), alice)
    sub = OrderSubmitter(spend, net.ledger.power_at(0), net.verify, pool)
    retries = []
    for e in sub.start()[:1]:
        auth = next(a for a in net.authorities if a.me == e.authority)
        while True:
            try:
                sub.on_vote(e.authority, auth.handle_order(e.order, T0, e.attachments))
                break
            except ProtocolError as err:
                eff = sub.on_refusal(e.authority, err.reason, getattr(err, "account", None))
                assert len(eff) == 1 and isinstance(eff[0], SendOrder)
                e = eff[0]
                retries.append(len(e.attachments))
    assert retries == [MAX_ATTACH, len(givers) - MAX_ATTACH]  # the rest went with the next retry


def test_order_answers_carry_one_vote_or_one_refusal():
    sig, path = b"s" * 64, (b"p" * 32, b"q" * 32)
    assert OrderAnswer.decode(OrderAnswer.of(sig).encode()).vote == sig
    assert OrderAnswer.decode(OrderAnswer.of(BatchVote(sig, 3, path)).encode()).vote == BatchVote(sig, 3, path)
    err = InsufficientFunds("Transfer: balance 1 < 2 " + "x" * 500, account=b"a" * 32, shortfall=1)
    refusal = OrderAnswer.decode(OrderAnswer.of(err).encode())
    assert (refusal.vote, refusal.refusal, refusal.account) == (None, "insufficient_funds", b"a" * 32)
    assert len(refusal.why) == 320  # a long reason is cut to the cap, not refused
    bad = [OrderAnswer(sig, None, "conflict", None, ""), OrderAnswer(None, None, None, None, ""),
           OrderAnswer(None, (0, ()), "conflict", None, ""), OrderAnswer(sig, (4, path), None, None, "")]
    for answer in bad:
        with pytest.raises(SchemaError):
            OrderAnswer.decode(answer.encode())
    with pytest.raises(ProtocolError):
        OrderAnswer.decode(b"\x00" * (OrderAnswer.MAX_BYTES + 1))
    with pytest.raises(SchemaError):
        OrderRequest.decode(OrderRequest(b"o", (b"c",) * (MAX_ATTACH + 1)).encode())


def test_an_order_whose_epoch_passed_is_renewed_by_the_submitter():
    """Two of four authorities voted for alice's order in epoch 0, then the others were away until epoch 2: asked
    again as it was, it is stale everywhere; asked for votes in epoch 2, it certifies."""
    net = Net(n=4)
    alice, bob = net.user_keys[:2]
    order = net.seal(Transfer(alice.public_key, 0, 0, bob.public_key, 10), alice)
    net.votes(order, T0, to=[0, 1])
    t2 = 2 * EPOCH_MS + 1_000
    out = drive(net, OrderSubmitter(order, net.ledger.power_at(0), net.verify), t2)
    assert isinstance(out[0], Failed) and "stale_epoch" in out[0].reason
    assert vote_epoch_for(0, 2, net.ledger.known_through) == 2
    sub = OrderSubmitter(order, net.ledger.power_at(2), net.verify, vote_epoch=2)
    assert all(e.vote_epoch == 2 for e in sub.start())
    out = drive(net, sub, t2)
    assert isinstance(out[0], Certified) and out[0].cert.vote_epoch == 2 and out[0].cert.id == order.id
    net.broadcast(out[0].cert)
    assert len(net.digests()) == 1


def test_vote_epoch_for():
    assert vote_epoch_for(5, 5, 5) is None and vote_epoch_for(4, 5, 5) is None  # current or previous: its own
    assert vote_epoch_for(3, 5, 5) == 5 and vote_epoch_for(0, 9, 20) == 9  # renewed in the current epoch ...
    assert vote_epoch_for(3, 5, 4) == 4  # ... or the previous one while the current table is not fixed
    with pytest.raises(ValueError, match="not fixed"):
        vote_epoch_for(1, 5, 3)


def test_unreachable_says_how_much_power_is_reachable():
    power = {bytes([i]) * 32: 2_500 for i in range(4)}
    assert unreachable(power, {bytes([0]) * 32, bytes([1]) * 32, b"x" * 32}) == \
        "only 5,000 of 6,667 voting power reachable"
    assert unreachable(power, {bytes([i]) * 32 for i in range(3)}) is None


def test_delivery_steps_resume_where_a_crash_left_an_order():
    oid, other = b"o" * 32, b"p" * 32
    assert delivery_steps(False, oid, None) == DELIVERY == ("collect", "record", "publish", "apply", "close")
    assert delivery_steps(True, oid, None) == ("publish", "apply", "close")  # certificate written: get it out
    assert delivery_steps(True, oid, oid) == ("publish", "apply", "close")  # applied too: publish it again
    assert delivery_steps(False, oid, oid) == ("close",)  # someone else certified it and it arrived
    assert delivery_steps(False, oid, other) == ("drop",)  # its sequence holds another order: it cannot certify
