"""The routing rule: should a shard member do the work itself, or proxy the batch to an expert? (SPEC section 5)

Theory of operation
-------------------
Every certificate carries the routing vectors of its items and the winner's per-item losses, so every node keeps
the same *winner index*: unit vectors in the network's routing space, each tagged with the producer that won it
and its item loss. A member that has just been handed a batch looks up, for each item, the `routing_k` nearest
index entries (the driver does the lookup: FAISS in the daemon, numpy in the simulator) and calls `route` with
those neighbour lists. Everything from there on is this pure function: integers in, a `Decision` out, no I/O.

1. **Evidence per item.** Of an item's neighbours, only those with cosine >= `routing_min_cos_micro` count. A
   producer with at least `routing_min_hits` such hits on the item gets a per-item estimate: the median of those
   hits' losses (the lower median for an even count, so integers stay integers).
2. **Evidence per batch.** A producer's batch estimate `L_X` is the mean of its per-item estimates over the items
   it covers, and it qualifies only if it covers at least half the batch (a specialist in one item's region says
   little about the rest). Producers that are shard members (they cannot serve this shard), the member itself, and
   producers whose advertised price exceeds `max_producer_share_bps` (or the caller's tighter budget) drop out.
3. **Ranking.** Qualified producers are ranked by (`L_X`, price, more covered items first, pubkey): a total order,
   so every honest member that sees the same index ranks the same way.
4. **Decision.** Work yourself if nobody qualifies (cold regions go to self) or if
   `own_estimate * 10_000 <= routing_margin_bps * L_best`; otherwise proxy to the best-ranked producer. The margin
   (default 9,500: proxy only when the expert is expected to be more than ~5 % better) keeps members from paying a
   producer's share for noise.

5. **The member's own estimate** (`own_estimate`, used by `plan`). Winners' losses are only comparable with what
   the member would score *in the same region*: losses differ between domains by a factor of three, so a moving
   average over all of a member's batches says little about this one. A node keeps a second index of its own
   computed per-item losses (every payload it produced, won or lost), and its estimate is that history aggregated
   exactly like an expert's (`rank` over its own neighbours); a region it has never worked in falls back to its
   running average, and a node with neither takes the region's typical winning loss (`region_norm`), so it
   proxies only to an expert better than the norm there.

`plan` is what a driver executes: the own estimate, then the experts to ask in rank order (each one beyond the
margin), at most `tries` of them. `rank` and `decide` are the two halves of `route`; a driver that routes many members of one shard against the same
index (the simulator's market level) ranks once and decides per member, which is exactly `route` for each of them
(tests/core/test_routing.py checks the identity).

Tie-breaks are total and deterministic. Nothing here reads a clock or draws randomness.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from moenode.core.genesis import Params

Neighbour = tuple[bytes, int, int]  # (producer, item_loss_micro, cos_micro) from the winner index


@dataclass(frozen=True)
class Candidate:
    """A producer that qualified for the batch."""

    producer: bytes
    loss_micro: int  # L_X: mean over covered items of the median hit loss
    price_bps: int  # the producer's advertised share of the winner's reward
    covered: int  # items of the batch on which it had >= routing_min_hits hits
    hits: int  # qualifying hits over the whole batch


@dataclass(frozen=True)
class Decision:
    """`proxy` False: do the work yourself. True: send a ProxyRequest to `producer` at `price_bps`."""

    proxy: bool
    producer: bytes | None
    expected_loss_micro: int  # what the chosen path is expected to score (own estimate when self)
    price_bps: int = 0
    reason: str = ""


def median_low(values: Sequence[int]) -> int:
    """The lower median of a non-empty list of integers."""
    s = sorted(values)
    return s[(len(s) - 1) // 2]


def rank(
    neighbours: Sequence[Iterable[Neighbour]],
    prices: Mapping[bytes, int],
    params: Params,
    exclude: Iterable[bytes] = (),
    max_price_bps: int | None = None,
) -> list[Candidate]:
    """Qualified producers for a batch, best first. `neighbours[i]` is item i's list from the winner index.

    `prices` maps a producer to its advertised share in bps; a producer with no advert cannot be hired.
    `exclude` holds the shard's members (and the caller), who cannot serve as producers in this shard.
    """
    n_items = len(neighbours)
    if n_items == 0:
        return []
    budget = params.max_producer_share_bps if max_price_bps is None else min(max_price_bps,
                                                                              params.max_producer_share_bps)
    banned = set(exclude)
    min_cos, k, min_hits = params.routing_min_cos_micro, params.routing_k, params.routing_min_hits
    sums: dict[bytes, int] = {}
    covered: dict[bytes, int] = {}
    hits_total: dict[bytes, int] = {}
    for item in neighbours:
        per: dict[bytes, list[int]] = {}
        for producer, loss, cos in sorted(item, key=lambda nb: (-nb[2], nb[1], nb[0]))[:k]:
            if cos >= min_cos:
                per.setdefault(producer, []).append(loss)
        for producer, losses in per.items():
            if len(losses) >= min_hits:
                sums[producer] = sums.get(producer, 0) + median_low(losses)
                covered[producer] = covered.get(producer, 0) + 1
                hits_total[producer] = hits_total.get(producer, 0) + len(losses)
    out: list[Candidate] = []
    for producer, c in covered.items():
        if 2 * c < n_items or producer in banned:
            continue
        price = prices.get(producer)
        if price is None or price > budget:
            continue
        out.append(Candidate(producer, sums[producer] // c, price, c, hits_total[producer]))
    out.sort(key=lambda x: (x.loss_micro, x.price_bps, -x.covered, x.producer))
    return out


def decide(own_estimate_micro: int, ranked: Sequence[Candidate], params: Params, me: bytes = b"") -> Decision:
    """Self unless the best qualified producer (not `me`) beats our own estimate by the routing margin."""
    best = next((c for c in ranked if c.producer != me), None)
    if best is None:
        return Decision(False, None, own_estimate_micro, 0, "cold: no producer qualifies")
    if own_estimate_micro * 10_000 <= params.routing_margin_bps * best.loss_micro:
        return Decision(False, None, own_estimate_micro, 0, "own estimate within the margin")
    return Decision(True, best.producer, best.loss_micro, best.price_bps, "expert expected to win")


def route(
    own_estimate_micro: int,
    neighbours: Sequence[Iterable[Neighbour]],
    prices: Mapping[bytes, int],
    params: Params,
    me: bytes = b"",
    exclude: Iterable[bytes] = (),
    max_price_bps: int | None = None,
) -> Decision:
    """The whole rule: rank the producers of the batch's neighbourhood, then decide for this member."""
    banned = set(exclude)
    if me:
        banned.add(me)
    return decide(own_estimate_micro, rank(neighbours, prices, params, banned, max_price_bps), params, me)


@dataclass(frozen=True)
class Plan:
    """What a member does with a batch: `experts` (best first, each expected to beat `own_estimate_micro` by the
    margin) to ask in turn, or nobody (do the work yourself). `own_source` says where the estimate came from:
    "region" (own history near these items), "average" (own running average), "region norm" (the winners' typical
    loss near these items, for a member with no history at all) or "none"."""

    experts: tuple[Candidate, ...]
    own_estimate_micro: int | None
    own_source: str
    reason: str

    @property
    def proxy(self) -> bool:
        return bool(self.experts)

    @property
    def expected_loss_micro(self) -> int | None:
        return self.experts[0].loss_micro if self.experts else self.own_estimate_micro


def own_estimate(own_neighbours: Sequence[Iterable[Neighbour]], me: bytes, params: Params,
                 average_micro: int | None = None) -> tuple[int | None, str]:
    """The member's expected batch loss: its own per-item history near the batch's items, aggregated like an expert's
    evidence (lower median per item, mean over covered items, at least half the batch covered); else its running
    average; else unknown."""
    mine = [[nb for nb in item if nb[0] == me] for item in own_neighbours]
    region = rank(mine, {me: 0}, params)
    if region:
        return region[0].loss_micro, "region"
    if average_micro is not None:
        return average_micro, "average"
    return None, "none"


def region_norm(neighbours: Sequence[Iterable[Neighbour]], params: Params) -> int | None:
    """The typical winning loss near the batch (lower median of every qualifying neighbour's loss): the estimate of a
    member that knows nothing of itself yet, so its first rounds proxy only to an expert better than the norm."""
    losses = [loss for item in neighbours for _, loss, cos in item if cos >= params.routing_min_cos_micro]
    return median_low(losses) if losses else None


def plan(
    neighbours: Sequence[Iterable[Neighbour]],
    own_neighbours: Sequence[Iterable[Neighbour]],
    prices: Mapping[bytes, int],
    params: Params,
    me: bytes,
    members: Iterable[bytes],
    own_average_micro: int | None = None,
    max_price_bps: int | None = None,
    tries: int = 3,
) -> Plan:
    """The routing plan for one member and one batch: whom to ask, in which order, and why (pure, integers only).

    `neighbours[i]`: item i's winner-index neighbours; `own_neighbours[i]`: item i's neighbours in the member's own
    history (entries produced by `me`). Shard members and `me` never serve; see `rank` for the rest."""
    own: int | None  # declared: mypyc infers None from the `is None` branch below
    own, source = own_estimate(own_neighbours, me, params, own_average_micro)
    if own is None:
        own = region_norm(neighbours, params)
        source = "none" if own is None else "region norm"
    ranked = rank(neighbours, prices, params, set(members) | {me}, max_price_bps)
    if not ranked:
        return Plan((), own, source, "cold: no expert outside the shard qualifies")
    if own is None:
        return Plan((), own, source, "no own estimate yet")
    experts = tuple(c for c in ranked if own * 10_000 > params.routing_margin_bps * c.loss_micro)[:max(0, tries)]
    if not experts:
        return Plan((), own, source, "own estimate within the margin")
    return Plan(experts, own, source, "expert expected to win")
