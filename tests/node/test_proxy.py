"""Proxies and refunds over the real network.

Three staked members serve a noise model (it re-executes, but its loss is poor); an unstaked expert serves
minilm-l3 and advertises a price. The members' winner indexes hold the expert's history in this region (added the
way certificates add it), so the routing rule sends the batch to the expert: one sponsor is served, the others
are refused (one sponsor per shard) and fall back to their own work; the expert's payload wins, and the Settle
pays the expert its share. Then a round the shard cannot certify (every member opts out) is refunded after its
deadline and retried once on a fresh shard with a new payment.
"""

import contextlib
import dataclasses

import pytest
import trio

from moenode.core.crypto import H, ed25519_verify
from moenode.core.orders import escrow_account
from moenode.core.spaces import Space
from moenode.node.submitter import SubmitError
from moenode.testing.nodekit import PARAMS, TEXTS, cluster, make_genesis, seed, wait_for

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def expert_market(tmp_path, tag: str, params=PARAMS):
    """Three staked noise members whose winner indexes send this region to an unstaked minilm-l3 expert."""
    seeds = [seed(i, tag) for i in range(4)]
    genesis = make_genesis([(s, 1_000, "adv-noise") for s in seeds[:3]] + [(seeds[3], 0, "minilm-l3")], params)
    # one open space with no in-round agreement bound: identical noise copies in a shard would otherwise outvote the
    # expert's vectors (the space check assumes most of a shard's candidates are honest; these members are not)
    genesis = dataclasses.replace(genesis, spaces=(Space(round_p5_micro=-1_000_000),))
    async with cluster(tmp_path, genesis) as c:
        ms = await c.start_all([c.add(s, "adv-noise") for s in seeds[:3]] + [c.add(seeds[3], "minilm-l3")])
        expert = ms[3].node
        vecs = await trio.to_thread.run_sync(expert.compute.routing_vectors, TEXTS)
        for m in ms[:3]:
            for k in range(3):  # three past wins per item: enough hits for the routing rule
                m.node.index.add(H("past", bytes([k])), vecs, expert.account, [100_000] * len(TEXTS), 0)
        yield c, ms, expert


async def test_expert_proxy_wins_and_failed_rounds_are_refunded(tmp_path):
    import dataclasses

    # the noise members commit within a second; a long grace lets the proxied member's expert finish first
    params = dataclasses.replace(PARAMS, round_abort_ms=15_000, min_fee=2, grace_min_ms=8_000, grace_cap_ms=8_000)
    async with expert_market(tmp_path, "proxy", params) as (_, ms, expert):
        final, attempts = await ms[0].node.submitter.submit(TEXTS, 100, 1)
        report = final.outcome.certificate.report
        assert report.producer == expert.account and report.winner in [m.account for m in ms[:3]]
        assert report.producer_share_bps == expert.config.price_bps
        served = expert.metrics.get("proxies_served")
        sent = sum(m.node.metrics.get("proxies_sent") for m in ms[:3])
        refused = sum(m.node.metrics.get("proxies_refused") for m in ms[:3])
        assert served == 1 and sent == 3 and refused == 2  # one sponsor per shard
        led = expert.payments.ledger
        await wait_for(lambda: led.sequence(escrow_account(report.shard_id)) == 1, 30)
        assert led.balance(expert.account) > 100_000  # the producer's share of the fee
        led.assert_supply()

        # every member opts out (the fee is below the network minimum): the retry starts at once on a fresh shard,
        # the first fee comes back in the background after its deadline, the last one before submit returns
        spent = led.balance(ms[1].account)
        with pytest.raises(SubmitError) as err:
            await ms[1].node.submitter.submit(TEXTS[:2], 1, 2)
        tries = err.value.attempts
        assert [a.status for a in tries] == ["failed", "failed"] and tries[-1].refunded
        assert "retried at once" in tries[0].reason  # the retry did not wait for its refund
        assert len({a.shard_id for a in tries}) == 2
        await wait_for(lambda: tries[0].refunded, 30)
        await wait_for(lambda: led.balance(ms[1].account) == spent, 10)  # both fees came back


async def test_a_slow_expert_does_not_get_its_sponsor_struck(tmp_path):
    """The expert takes longer than the shard's vote: the sponsor's hedge commits its own work in time (no strike),
    where waiting for the expert would have made it late."""
    from moenode.core.messages import ProxyRequest
    from moenode.node.rounds import PROXY_RESPONSE_CAP

    async with expert_market(tmp_path, "slowproxy") as (_, ms, expert):
        async def slow_proxy(peer: bytes, req: bytes) -> bytes:  # the real expert, answering too late
            await trio.sleep(PARAMS.commit_timeout_ms / 2000)
            served = expert.metrics.get("proxies_served")
            answer = await expert.rounds.serve_proxy(peer, req)
            if expert.metrics.get("proxies_served") > served:
                # the refused members commit now, so the shard votes within the grace cap; the sponsor's answer
                # comes after that however loaded the machine (its own embedding used to race the vote)
                await trio.sleep(PARAMS.grace_cap_ms / 1000 + 2)
            return answer

        expert.net.set_request_handler("proxy", slow_proxy, max_request=ProxyRequest.MAX_BYTES,
                                       max_response=PROXY_RESPONSE_CAP)
        final, _ = await ms[0].node.submitter.submit(TEXTS, 100, 1)
        report = final.outcome.certificate.report
        hedged = sum(m.node.metrics.get("proxy_hedged") for m in ms[:3])
        assert hedged == 1 and report.strikes == () and report.producer != expert.account


async def test_a_submitters_deadline_lets_the_slow_expert_win_without_strikes(tmp_path):
    """The same slow expert, but the submitter is willing to wait (`commit_by_ms`): the members hold the vote open,
    the sponsor waits for its expert instead of hedging, and the expert's better payload wins with nobody struck."""
    from moenode.core.messages import ProxyRequest
    from moenode.node.rounds import PROXY_RESPONSE_CAP

    async with expert_market(tmp_path, "patient") as (_, ms, expert):
        async def slow_proxy(peer: bytes, req: bytes) -> bytes:
            await trio.sleep(PARAMS.commit_timeout_ms / 2000)
            return await expert.rounds.serve_proxy(peer, req)

        expert.net.set_request_handler("proxy", slow_proxy, max_request=ProxyRequest.MAX_BYTES,
                                       max_response=PROXY_RESPONSE_CAP)
        final, _ = await ms[0].node.submitter.submit(TEXTS, 100, 1, wait_ms=PARAMS.commit_timeout_ms)
        report = final.outcome.certificate.report
        assert report.producer == expert.account and report.strikes == ()
        assert sum(m.node.metrics.get("proxy_hedged") for m in ms[:3]) == 0


async def test_a_lying_expert_is_counted_against_it_and_its_sponsors_do_their_own_work(tmp_path):
    """Three answers that break the contract, one per sponsor: `{"x": 1}` and `{"submission": null}` (they raised
    KeyError and TypeError in the sponsor and were logged as a network failure, not counted against the expert),
    and a well-formed submission whose payload claims losses it does not have. Each is a rejection by reason
    against the expert; each sponsor falls back to its own work and the round certifies."""
    import dataclasses

    from moenode.core.codec import canonical
    from moenode.core.messages import ProxyRequest, ProxySubmission, batch_loss, open_signed, seal
    from moenode.core.proxy import ProxyAnswer
    from moenode.node.rounds import PROXY_RESPONSE_CAP

    # a long grace, as above, so that the sponsors wait for the expert's (slower) third answer
    params = dataclasses.replace(PARAMS, grace_min_ms=8_000, grace_cap_ms=8_000)
    async with expert_market(tmp_path, "liar", params) as (_, ms, expert):
        lies = [canonical({"x": 1}), canonical({"submission": None})]

        async def lying_proxy(peer: bytes, req: bytes) -> bytes:
            if lies:
                return lies.pop()
            answer = ProxyAnswer.decode(await expert.rounds.serve_proxy(peer, req))
            sub = answer.submission
            losses = tuple(0 for _ in sub.payload.item_losses)  # a perfect score it did not earn
            fake = dataclasses.replace(sub.payload, item_losses=losses, batch_loss=batch_loss(losses))
            env = open_signed(req, expert.net_id, ed25519_verify, (ProxyRequest,))
            ps = seal(ProxySubmission(sub.shard_id, expert.account, sub.member, fake.digest(), env.msg.price_bps),
                      expert.signer, expert.net_id)
            return ProxyAnswer.of(dataclasses.replace(sub, payload=fake, proxy=ps.as_wire())).encode()

        expert.net.set_request_handler("proxy", lying_proxy, max_request=ProxyRequest.MAX_BYTES,
                                       max_response=PROXY_RESPONSE_CAP)
        final, _ = await ms[0].node.submitter.submit(TEXTS, 100, 1)
        report = final.outcome.certificate.report
        assert report.producer != expert.account and report.strikes == ()
        sponsors = [m.node for m in ms[:3]]
        assert sum(n.metrics.get("proxies_sent") for n in sponsors) == 3
        assert sum(n.net.counters.rejected("malformed") for n in sponsors) == 2
        assert sum(n.net.counters.rejected("bad_payload") for n in sponsors) == 1
