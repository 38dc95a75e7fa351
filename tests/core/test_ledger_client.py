"""The sans-IO submitter, driven in process against real authorities (Ed25519)."""

from ledgerkit import T0, Net
from moenode.core.errors import ProtocolError
from moenode.core.ledger_client import CertPool, Certified, Failed, OrderSubmitter, SendOrder, refusal_of
from moenode.core.orders import Transfer


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
        try:
            sig = by_pk[eff.authority].handle_order(eff.order, now, eff.attachments)
            queue += sub.on_vote(eff.authority, sig)
        except ProtocolError as e:
            queue += sub.on_refusal(eff.authority, *refusal_of(e))
    return done


def test_retries_with_the_credit_certificates_an_authority_asks_for():
    net = Net(n=5)
    alice, bob = net.user_keys[:2]
    # bob pays alice; only three authorities learn of it
    credit = net.certify(net.seal(Transfer(bob.public_key, 0, 0, alice.public_key, 500_000), bob))
    for a in net.authorities[:3]:
        a.accept_certificate(credit.encode())
    pool = CertPool()
    pool.add(credit)
    spend = net.seal(Transfer(alice.public_key, 0, 0, bob.public_key, 1_200_000), alice)
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
