"""The client side of settlement: get one order certified (SPEC section 6.6). Sans-IO.

Theory of operation: an `OrderSubmitter` holds one signed order and the voting power of its epoch. `start()`
returns one `SendOrder` per authority; the node's net layer sends them in parallel and feeds each answer back:
`on_vote(authority, sig or BatchVote)` or `on_refusal(authority, reason, account)` (`OrderRequest` and
`OrderAnswer` in orders.py are what goes over the wire). Certificates in `first` (a Settle's payment, the
client's own last orders) go with every first request, which saves an authority that lacks them a refusal and a
retry. A vote is checked before it counts (a batch vote's signature covers many orders: pass a `VerifyCache` as
`verify` to check it once). Once the votes carry >= 6,667 of 10,000 power the submitter emits `Certified(cert)`
and ignores the rest.

A refusal that names a missing credit or a gap (`insufficient_funds`, `sequence_gap`, `unknown_escrow`) is
answered by sending the order again to that authority with the certificates from the client's `CertPool` that
touch the named account and that this authority has not been sent yet (a bounded number of retries). Any other
refusal is final for that authority. When the power still able to vote cannot reach the threshold, the submitter
emits `Failed(reason)` naming every authority's refusal.

An order whose epoch has passed before it certified is *renewed* (SPEC 6.8): the same bytes, with votes asked in
a later epoch (`vote_epoch`, see `vote_epoch_for`), counted in that epoch's voting power.

States: collecting -> certified | failed (data, below); no clock: deadlines are the net layer's.

The client's rules around it (SPEC 6.6), which keep an account from ever locking itself:
- ask only when the voting power the client can reach (itself and the authorities it is connected to) carries the
  quorum (`unreachable`); below it, nothing is signed;
- an order the client signed is kept, durably, until it certifies, and the client signs no other order for the
  same (account, sequence) meanwhile: it sends that one again (renewing it once its epoch has passed);
- a certificate it obtained is kept, durably, and published before it is applied locally, so a crash can leave
  the client behind the network (it applies on restart) but never ahead of it.
`delivery_steps` is that life as data: the steps left for one entry of the outbox, which the node runs in order,
each durable before the next, so a crash between two steps resumes with at most the last step done twice (every
step is idempotent).
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from moenode.core.crypto import Verifier
from moenode.core.errors import ProtocolError
from moenode.core.messages import Message, Signed
from moenode.core.orders import (
    MAX_ATTACH,
    BatchVote,
    CertifiedOrder,
    Order,
    PayEscrow,
    Refund,
    Settle,
    Transfer,
    certify,
    escrow_account,
    signed_digest,
    vote_digest,
    vote_entry,
)
from moenode.core.selection import CERT_THRESHOLD

RETRYABLE = ("insufficient_funds", "sequence_gap", "unknown_escrow")
TRANSITIONS = {"collecting": ("certified", "failed"), "certified": (), "failed": ()}


@dataclass(frozen=True)
class SendOrder:
    authority: bytes
    order: bytes
    attachments: tuple[bytes, ...] = ()
    vote_epoch: int | None = None  # a renewal: the vote is asked for in this later epoch


@dataclass(frozen=True)
class Certified:
    cert: CertifiedOrder


@dataclass(frozen=True)
class Failed:
    reason: str


Effect = SendOrder | Certified | Failed


class CertPool:
    """Certified orders this client holds, indexed by every account they debit or credit."""

    def __init__(self) -> None:
        self._by_account: dict[bytes, dict[bytes, bytes]] = {}

    def add(self, cert: CertifiedOrder) -> None:
        o = cert.msg
        touched = {o.account}
        if isinstance(o, Transfer):
            touched.add(o.recipient)
        elif isinstance(o, PayEscrow):
            touched.add(escrow_account(o.shard_id))
        elif isinstance(o, Refund):
            touched.add(cert.order.signer)
        elif isinstance(o, Settle):
            r = o.certificate.report
            touched |= {r.winner, r.producer} | {pk for pk, _ in o.certificate.signatures}
        data = cert.encode()
        for acct in touched:
            self._by_account.setdefault(acct, {})[cert.id] = data

    def for_account(self, account: bytes) -> dict[bytes, bytes]:
        return dict(self._by_account.get(account, {}))


def refusal_of(err: ProtocolError) -> tuple[str, bytes | None]:
    """(reason, account) of an authority's refusal, as the net layer carries it."""
    return err.reason, getattr(err, "account", None)


@dataclass
class OrderSubmitter:
    order: Signed[Order]
    power: dict[bytes, int]  # the voting power of the epoch the votes are asked in (`vote_epoch` or the order's)
    verify: Verifier
    pool: CertPool = field(default_factory=CertPool)
    first: tuple[CertifiedOrder, ...] = ()  # sent with the first request to each authority (at most MAX_ATTACH)
    max_retries: int = 3
    vote_epoch: int | None = None  # a renewal: ask for votes in this epoch, later than the order's
    state: str = "collecting"
    votes: dict[bytes, bytes | BatchVote] = field(default_factory=dict)
    refused: dict[bytes, str] = field(default_factory=dict)
    _sent: dict[bytes, set[bytes]] = field(default_factory=dict)
    _retries: dict[bytes, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        epoch = self.order.msg.epoch if self.vote_epoch is None else self.vote_epoch
        self._digest = vote_digest(self.order.id, epoch)
        self._data = self.order.encode()
        self.first = self.first[:MAX_ATTACH]

    def _to(self, state: str) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"submitter: {self.state} -> {state} is not a transition")
        self.state = state

    def start(self) -> list[Effect]:
        first = tuple(c.encode() for c in self.first)
        out: list[Effect] = []
        for pk in sorted(self.power):
            if self.power[pk] > 0:
                self._sent[pk] = {c.id for c in self.first}
                out.append(SendOrder(pk, self._data, first, self.vote_epoch))
        return out

    def power_of(self, pks: Iterable[bytes]) -> int:
        return sum(self.power.get(pk, 0) for pk in pks)

    def on_vote(self, authority: bytes, vote: bytes | BatchVote) -> list[Effect]:
        """Count a vote (a signature, or a batch vote with this order's membership proof) once it verifies."""
        if self.state != "collecting" or authority in self.votes or self.power.get(authority, 0) <= 0:
            return []
        entry = vote_entry(authority, vote)
        if not self.verify(authority, signed_digest(self._digest, entry), entry[1]):
            return self._refuse(authority, "bad_vote")
        self.votes[authority] = vote
        self.refused.pop(authority, None)
        if self.power_of(self.votes) >= CERT_THRESHOLD:
            self._to("certified")
            return [Certified(self.certificate())]
        return []

    def on_refusal(self, authority: bytes, reason: str, account: bytes | None = None, detail: str = "") -> list[Effect]:
        """Count a refusal (`reason` a token such as "sequence_gap"; `detail` is shown in the failure message)."""
        if self.state != "collecting" or authority in self.votes:
            return []
        if reason in RETRYABLE and account is not None and self._retries.get(authority, 0) < self.max_retries:
            sent = self._sent.setdefault(authority, set())
            fresh = {i: d for i, d in sorted(self.pool.for_account(account).items()) if i not in sent}
            fresh = dict(list(fresh.items())[:MAX_ATTACH])  # what one request carries; a next retry sends more
            if fresh:
                self._retries[authority] = self._retries.get(authority, 0) + 1
                sent.update(fresh)
                return [SendOrder(authority, self._data, tuple(fresh[i] for i in sorted(fresh)), self.vote_epoch)]
        return self._refuse(authority, f"{reason} ({detail})" if detail else reason)

    def _refuse(self, authority: bytes, reason: str) -> list[Effect]:
        self.refused[authority] = reason
        still = self.power_of(pk for pk in self.power if pk not in self.refused)
        if still < CERT_THRESHOLD:
            self._to("failed")
            why = ", ".join(f"{pk.hex()[:8]}: {r}" for pk, r in sorted(self.refused.items()))
            return [Failed(f"cannot reach {CERT_THRESHOLD} voting power; refusals: {why}")]
        return []

    def certificate(self) -> CertifiedOrder:
        return certify(self.order, self.votes, self.vote_epoch)


def vote_epoch_for(order_epoch: int, now_epoch: int, known_through: int) -> int | None:
    """The epoch to ask votes for an order of `order_epoch` in, now: None (its own) while it is current or the
    previous one; else a renewal in the newest epoch an authority accepts (now's, or the previous while now's
    stake table is not fixed yet). Raises ValueError when no such epoch is fixed yet."""
    if order_epoch >= now_epoch - 1:
        return None
    epoch = min(now_epoch, known_through)
    if epoch < now_epoch - 1:
        raise ValueError(f"the stake table of epoch {now_epoch - 1} is not fixed yet; the renewal waits for it")
    return epoch


def reachable_power(power: dict[bytes, int], reachable: set[bytes] | frozenset[bytes]) -> int:
    return sum(vp for pk, vp in power.items() if pk in reachable)


def unreachable(power: dict[bytes, int], reachable: set[bytes] | frozenset[bytes]) -> str | None:
    """Why votes should not be asked for now (`reachable`: ourselves and the accounts we are connected to), or
    None when they carry the quorum. Asking below it can only lock the order at the authorities that answer."""
    got = reachable_power(power, reachable)
    if got >= CERT_THRESHOLD:
        return None
    return f"only {got:,} of {CERT_THRESHOLD:,} voting power reachable"


# the outbox: an order this node signed, from signing until its certificate is out ---------------------------------
DELIVERY = ("collect", "record", "publish", "apply", "close")  # the whole life of an order once it is written


def delivery_steps(has_cert: bool, order_id: bytes, applied_id: bytes | None) -> tuple[str, ...]:
    """The steps left for an outbox entry: `has_cert` says whether its certificate is recorded, `applied_id` is
    what this node's ledger holds at the order's (account, sequence).

    collect: get the votes (renewing in a later epoch if the order's has passed); record: write the certificate
    (durably, before anything else sees it); publish: gossip it; apply: apply it here; close: the entry is done.
    An entry whose sequence this ledger already holds for another order (an escrow settled by someone else's
    Settle, say) is dropped: nothing is left to do, and it could never certify.
    """
    if has_cert:
        return DELIVERY[2:]
    if applied_id is None:
        return DELIVERY
    return ("close",) if applied_id == order_id else ("drop",)
