"""Property tests: whatever the network does to messages, a round never certifies two different reports."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moenode.core.crypto import Ed25519Signer
from moenode.testing.roundkit import Scenario, make_signers

SIGNERS = make_signers(12)  # n = 5, q = 4 per round
SUBMITTER = Ed25519Signer.from_entropy(b"prop-submitter")
ITEMS = ["alpha beta gamma", "delta epsilon", "zeta eta theta iota"]


def certificates(res):
    certs = [o.certificate for o in res.members.values() if o.certificate is not None]
    if res.submitter and res.submitter.certificate is not None:
        certs.append(res.submitter.certificate)
    return certs


def lossy_link(rng: random.Random, drop: float, dup: float, max_delay: int):
    def link(_src, _dst, _env):
        if rng.random() < drop:
            return []
        delays = [rng.randint(1, max_delay)]
        if rng.random() < dup:
            delays.append(rng.randint(1, max_delay))
        return delays
    return link


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), drop=st.sampled_from([0.0, 0.02, 0.1]), dup=st.sampled_from([0.0, 0.2]),
       max_delay=st.sampled_from([1, 50, 3_000]), nonce=st.binary(min_size=32, max_size=32))
def test_never_two_different_certificates(seed, drop, dup, max_delay, nonce):
    sc = Scenario(SIGNERS)
    rng = random.Random(seed)
    for s in SIGNERS:
        sc.took[s.public_key] = rng.randint(1, 2_000)
    shard = sc.shard(link=lossy_link(rng, drop, dup, max_delay))
    res = shard.run(SUBMITTER, ITEMS, nonce)
    ids = {c.id for c in certificates(res)}
    assert len(ids) <= 1
    for c in certificates(res):
        assert len(c.signatures) >= 4
        c.check(sc.genesis.network_id, shard.verify, sorted(res.members) or [s for s, _ in c.signatures], 4)
    if drop == 0.0 and dup == 0.0 and max_delay == 1:
        assert res.submitter.status == "certified"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), nonce=st.binary(min_size=32, max_size=32), silent=st.integers(0, 1))
def test_any_quorum_of_honest_members_certifies_the_best_accepted_candidate(seed, nonce, silent):
    """With up to n - q silent members and arbitrary reordering, the winner is the best candidate that was accepted."""
    sc = Scenario(SIGNERS)
    rng = random.Random(seed)
    first = sc.shard().run(SUBMITTER, ITEMS, nonce)
    members = sorted(first.members)
    sc.silent.update(rng.sample(members, silent))
    for m in members:
        sc.took[m] = rng.randint(1, 200)
    res = sc.shard(link=lossy_link(rng, 0.0, 0.0, 300)).run(SUBMITTER, ITEMS, nonce)
    assert res.submitter.status == "certified", res.submitter.reason
    report = res.submitter.certificate.report
    accepted = [m for m in members if m not in report.strikes and m not in sc.silent]
    assert report.winner == min(accepted, key=lambda m: sc.loss[m])
    assert set(sc.silent) <= set(report.strikes)  # late members may be struck too: grace is adaptive
    # every member that certified holds the very same report
    assert {o.certificate.id for o in res.members.values() if o.certificate} == {report.digest()}
