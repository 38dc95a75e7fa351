"""The simulator's balance book: balances, stakes and escrows, with the ledger's own arithmetic.

Theory of operation: a fee moves from the submitter's balance into an escrow; a certificate releases it with
`moenode.core.ledger.settle_split` (90 % to the winner, the proxy producer's share out of that, 10 % evenly to the
other signers, remainders to the winner); a round without a certificate refunds it. Strikes, faulty marks and
evidence become `checkpoint.Item`s tagged with their epoch, and the epoch transition applies
`checkpoint.next_table` (latency slashing 10 bps per strike capped at 100 bps, 50 % for equivocation, 5 % for a
faulty reveal, slashed stake shared pro rata among the unslashed). Certified orders, authority votes and checkpoint
signatures are abstracted away: the book applies what a certified order would apply. `supply()` = balances +
stakes + escrows never changes, and `check()` says so.
"""

from dataclasses import dataclass, field

from moenode.core.checkpoint import Item, next_table
from moenode.core.genesis import Params
from moenode.core.ledger import settle_split
from moenode.core.orders import escrow_account as escrow_id  # a shard's escrow is the ledger's account


@dataclass(frozen=True)
class SplitReport:
    """The Report fields settle_split reads (a full Report is built only at the message level)."""

    fee: int
    winner: bytes
    producer: bytes
    producer_share_bps: int
    strikes: tuple[bytes, ...] = ()
    faulty: tuple[bytes, ...] = ()


@dataclass
class Book:
    params: Params
    balances: dict[bytes, int]
    stakes: dict[bytes, int]
    escrows: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)  # escrow id -> (payer, amount)
    items: list[Item] = field(default_factory=list)
    settled: int = 0
    refunded: int = 0
    slashed_total: int = 0

    def __post_init__(self) -> None:
        self.initial = self.supply()

    def supply(self) -> int:
        return sum(self.balances.values()) + sum(self.stakes.values()) + sum(a for _, a in self.escrows.values())

    def check(self) -> None:
        if self.supply() != self.initial:
            raise AssertionError(f"supply changed: {self.initial} -> {self.supply()}")

    def pay(self, payer: bytes, escrow: bytes, fee: int) -> bool:
        if self.balances.get(payer, 0) < fee or escrow in self.escrows:
            return False
        self.balances[payer] -= fee
        self.escrows[escrow] = (payer, fee)
        return True

    def settle(self, escrow: bytes, winner: bytes, producer: bytes, share_bps: int,
               signers: list[bytes] | tuple[bytes, ...], strikes: tuple[bytes, ...] = (),
               faulty: tuple[bytes, ...] = ()) -> dict[bytes, int]:
        _, fee = self.escrows.pop(escrow)
        report = SplitReport(fee, winner, producer, share_bps, tuple(strikes), tuple(faulty))
        split = settle_split(report, signers, self.params.winner_bps)  # type: ignore[arg-type]
        bal = self.balances
        for pk, amount in split.items():
            bal[pk] = bal.get(pk, 0) + amount
        self.settled += 1
        return split

    def refund(self, escrow: bytes) -> None:
        payer, fee = self.escrows.pop(escrow)
        self.balances[payer] = self.balances.get(payer, 0) + fee
        self.refunded += 1

    def end_epoch(self, upto: int) -> dict[bytes, int]:
        """Apply the items tagged <= upto to the stake table (the checkpoint's arithmetic); returns slash per account."""
        due = [it for it in self.items if it.epoch <= upto]
        if not due:
            return {}
        self.items = [it for it in self.items if it.epoch > upto]
        unique = sorted({it.key: it for it in due}.values())  # one item per (kind, account, source), as the ledger
        before = dict(self.stakes)
        new, payouts = next_table(self.stakes, unique, self.params)
        for pk, amount in payouts.items():
            self.balances[pk] = self.balances.get(pk, 0) + amount
        self.stakes = new
        lost = {pk: s - new.get(pk, 0) for pk, s in before.items() if s > new.get(pk, 0)}
        self.slashed_total += sum(lost.values())
        return lost
