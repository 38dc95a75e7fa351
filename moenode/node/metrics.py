"""What /metrics exports: every series named by Prometheus conventions, with a HELP text, present from the start.

The node counts events by name (`Context.metrics`, e.g. `rounds_certified`, `proxies_sent`) and so does its net
layer (`received.gossip.certs`, `rejected.oversized`). This module is the one catalogue that maps those names to
exported series: `moenode_<what>_total` for counters (a status, a topic or a reason becomes a label), plain
`moenode_<what>` for gauges, units in the name. Every series of the catalogue is exported from the first scrape,
at 0 until its event happens, so a dashboard or an alert rule never sees a series appear from nothing. A counter
the catalogue does not know yet is still exported (as `moenode_<name>_total`), and `test_metrics` fails until it
is described here. docs/status-and-metrics.md lists the same series.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """Counters `prefix<value>` exported as one labelled counter."""

    prefix: str
    name: str
    label: str
    values: tuple[str, ...]
    help: str


# node.counters() name -> (exported name without _total, HELP)
COUNTERS: dict[str, tuple[str, str]] = {
    "node_submissions": ("moenode_submissions", "Batches this node submitted (each starts a round it pays for)."),
    "node_certificates": ("moenode_certificates", "Shard certificates this node verified and archived (its own "
                          "rounds and gossiped ones)."),
    "node_wins": ("moenode_wins", "Certified rounds this node won as a shard member."),
    "node_proxy_wins": ("moenode_proxy_wins", "Certified rounds won by another member with an embedding this node "
                        "produced as the proxied expert."),
    "node_settled": ("moenode_settlements", "Won rounds whose fee this node settled to itself."),
    "node_settle_failed": ("moenode_settle_failures", "Won rounds whose Settle order could not be certified."),
    "node_proxies_sent": ("moenode_proxy_requests_sent", "Proxy requests this node sent to an expert as a member."),
    "node_proxies_served": ("moenode_proxy_requests_served", "Proxy requests this node served as the expert."),
    "node_proxies_refused": ("moenode_proxy_refusals", "Proxy requests an expert refused."),
    "node_proxies_bad": ("moenode_proxy_bad_answers", "Proxy answers whose embedding did not verify."),
    "node_proxy_fallbacks": ("moenode_proxy_fallbacks", "Rounds in which this member fell back to its own "
                             "embedding after a failed proxy."),
    "node_proxy_hedged": ("moenode_proxy_hedged", "Rounds in which this member committed its own embedding because "
                          "the expert had not answered before the vote."),
    "node_rounds_opened": ("moenode_rounds_opened", "Rounds this node took part in as a member."),
    "node_envelopes_sent": ("moenode_envelopes_sent", "Round messages this node sent to shard members."),
    "node_send_failed": ("moenode_envelope_send_failures", "Round messages that could not be delivered."),
    "node_send_retried": ("moenode_envelope_send_retries", "Round messages sent again after a failure."),
    "node_early_dropped": ("moenode_early_messages_dropped", "Round messages that arrived before their round and "
                           "were dropped (over the early-message bound)."),
    "node_outbox_dropped": ("moenode_round_outbox_dropped", "Round messages dropped from a full per-peer outbox."),
    "node_work_failed": ("moenode_embedding_failures", "Embedding or scoring work of a round that failed here."),
    "node_verify_failed": ("moenode_verification_failures", "Candidate embeddings that failed this node's "
                           "verification."),
    "node_verify_own_skipped": ("moenode_verifications_skipped_own", "Verifications skipped because the candidate was "
                                "this member's own submission (computed here, or an expert's answer verified here)."),
    "node_evidence": ("moenode_evidence_filed", "Evidence of misbehaviour this node filed against a member."),
    "node_evidence_received": ("moenode_evidence_received", "New evidence received by gossip."),
    "node_evidence_duplicate": ("moenode_evidence_duplicates", "Evidence received by gossip that was known."),
    "node_conflicting_certificates": ("moenode_conflicting_order_certificates", "Two certified orders for one "
                                      "(account, sequence): proof that over a third of the stake equivocated."),
    "node_order_batches": ("moenode_order_vote_batches", "Order vote requests that arrived together and were voted "
                           "on with one lock write and one batch signature."),
    "node_orders_batched": ("moenode_orders_batched", "Orders voted on in batches (divided by "
                            "moenode_order_vote_batches_total: the mean batch size)."),
    "node_orders_served": ("moenode_order_votes_served", "Order vote requests this node answered as an authority."),
    "node_orders_renewed": ("moenode_orders_renewed", "Orders of this node certified again in a later epoch."),
    "node_orders_finished_late": ("moenode_orders_finished_late", "Orders of this node certified after a restart "
                                  "or a lost quorum."),
    "node_orders_unreachable": ("moenode_order_authorities_unreachable", "Authorities that could not be asked "
                                "for a vote on an order."),
    "node_control_evicted": ("moenode_control_connections_evicted", "Idle control API connections closed to make "
                             "room for a new one."),
    "node_control_refused_busy": ("moenode_control_connections_refused", "Control API connections refused because "
                                  "every slot was inside a request."),
    "net_connected": ("moenode_net_dials", "Outgoing libp2p connections opened."),
    "net_bootstrap_failed": ("moenode_net_bootstrap_dial_failures", "Failed dials of a bootstrap or remembered "
                             "peer (each retried with backoff)."),
    "net_handler_error": ("moenode_net_handler_errors", "Stream handlers that failed on a peer's input."),
    "net_partial_waits": ("moenode_net_partial_message_waits", "Reads that waited on a partial message."),
    "net_streams_idle_closed": ("moenode_net_idle_streams_closed", "Streams closed after idling."),
    "net_sent_envelope": ("moenode_net_envelopes_sent", "Direct envelopes written to a peer's stream."),
    "net_sent_request": ("moenode_net_requests_sent", "Requests (order, proxy, checkpoint, sync) sent to a peer."),
    "net_received_envelope": ("moenode_net_envelopes_received", "Direct envelopes received from peers."),
    "net_received_request": ("moenode_net_requests_received", "Requests received from peers."),
}

TOPICS = ("certs", "orders", "adverts", "checkpoints")
FAMILIES = (
    Family("node_rounds_", "moenode_rounds", "outcome", ("certified", "failed", "opted_out", "reported"),
           "Rounds this node finished as a member or submitter, by outcome."),
    Family("node_orders_", "moenode_orders_accepted", "status", ("applied", "duplicate", "pending", "conflict"),
           "Certified orders received (gossip or sync), by what the ledger did with them."),
    Family("node_checkpoints_", "moenode_checkpoints", "status", ("applied", "duplicate", "adopted", "skipped"),
           "Checkpoint certificates applied, known already, adopted over a carry-over, or epochs carried over."),
    Family("node_control_refused_", "moenode_control_requests_refused", "reason",
           ("host", "origin", "token", "content_type"), "Control API requests refused before being read, by reason."),
    Family("net_published_", "moenode_gossip_published", "topic", TOPICS, "Gossip messages this node published."),
    Family("net_received_gossip_", "moenode_gossip_received", "topic", TOPICS, "Gossip messages received and "
           "accepted by the topic's validator."),
)
REJECTION_REASONS = ("malformed", "oversized", "bad_signature", "wrong_network", "out_of_shard", "replay")

# /status key -> (exported gauge, HELP)
GAUGES: dict[str, tuple[str, str]] = {
    "peers": ("moenode_peers", "Peers connected now."),
    "epoch": ("moenode_epoch", "The current epoch."),
    "balance": ("moenode_balance", "This node's spendable balance, in base units."),
    "stake": ("moenode_stake", "This node's stake in the newest fixed stake table, in base units."),
    "bonding": ("moenode_stake_bonding", "Stake placed but not yet in a stake table, in base units."),
    "voting_power": ("moenode_voting_power_bps", "This node's voting power in the current epoch, in basis points."),
    "strikes": ("moenode_strikes", "Strikes against this node waiting for the next checkpoint."),
    "uptime_s": ("moenode_uptime_seconds", "Seconds since this node started (counters count from then)."),
    "adverts": ("moenode_adverts", "Expert adverts known (one per peer)."),
}


def _family_of(name: str) -> Family | None:
    return next((f for f in FAMILIES if name.startswith(f.prefix)), None)


def counter_series(counters: dict[str, int]) -> Iterator[tuple[str, str, dict[str, str], int]]:
    """(name without _total, HELP, labels, value) of every counter: the catalogue at 0 and whatever has counted."""
    values: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    helps: dict[str, str] = {}
    for key, (name, help_) in COUNTERS.items():
        values[(name, ())] = counters.get(key, 0)
        helps[name] = help_
    for f in FAMILIES:
        helps[f.name] = f.help
        for v in f.values:
            values[(f.name, ((f.label, v),))] = counters.get(f.prefix + v, 0)
    for key, n in counters.items():
        if key in COUNTERS or key.startswith("net_rejected_") or key == "net_peers":
            continue
        fam = _family_of(key)
        if fam is not None:
            values[(fam.name, ((fam.label, key.removeprefix(fam.prefix)),))] = n
        else:  # not described yet: exported anyway, so nothing counted is hidden
            name = "moenode_" + "".join(ch if ch.isalnum() else "_" for ch in key).lower().removesuffix("_total")
            values[(name, ())] = n
            helps.setdefault(name, f"Events counted as {key!r} (not yet described in moenode.node.metrics).")
    for (name, labels), n in sorted(values.items()):
        yield name, helps[name], dict(labels), n


def make_registry(node: Any) -> Any:
    """A prometheus_client registry of this node only, read at scrape time (several nodes can share a process)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class NodeCollector:
        def collect(self):  # noqa: ANN202 - prometheus_client's protocol
            families: dict[str, Any] = {}
            for name, help_, labels, value in counter_series(node.counters()):
                fam = families.get(name)
                if fam is None:
                    fam = families[name] = CounterMetricFamily(name, help_, labels=list(labels))
                fam.add_metric(list(labels.values()), value)
            yield from families.values()
            st = node.status()
            rej = CounterMetricFamily("moenode_rejected_messages", "Messages from peers refused, by reason (each is "
                                      "logged with the peer id).", labels=["reason"])
            seen = st.get("rejections") or {}
            for reason in sorted(set(REJECTION_REASONS) | set(seen)):
                rej.add_metric([reason], seen.get(reason, 0))
            yield rej
            for key, (name, help_) in GAUGES.items():
                g = GaugeMetricFamily(name, help_)
                g.add_metric([], st.get(key) or 0)
                yield g
            g = GaugeMetricFamily("moenode_winner_index_entries", "Routing vectors in the winner index.")
            g.add_metric([], st["index"]["entries"])
            yield g

    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector())
    return reg
