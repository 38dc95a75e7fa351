"""The ledger: balances, stakes, escrows and sequence numbers, moved only by certified orders (SPEC section 6).

Theory of operation (FastPay without a chain). Every node holds this whole state. It changes in exactly two ways:
1. `apply_certified`: a certified order (>= 6,667 voting power of its epoch) is applied once per (account,
   sequence). Applying is pure arithmetic on the amounts the order itself names: debit the account, credit the
   recipients. Credits only add and every debit is unique per (account, sequence), so the result is the same
   whatever order certificates arrive in. A node that lags may see a balance or an escrow dip below zero until the
   missing credit arrives: a quorum already checked the debit against a complete view, so this is a transient of
   delivery, never an overdraft. A second *different* certificate for a used (account, sequence) means more than a
   third of the voting power signed two conflicting orders; it raises `ConflictingCertificates` loudly.
2. `apply_checkpoint`: a certified checkpoint of epoch E fixes the stake table of E+2 (see checkpoint.py).

`check_order` is the authority's question: is this order valid in *my* view? It checks the signature rule, the
epoch, the sequence number (exactly the account's next one), funds, escrow state, deadlines, and for a Settle
the shard certificate against the recomputed shard. The lock (one order per (account, sequence)) lives in
authority.py, because only an authority signs.

Stake bookkeeping. `table` is the latest fixed stake table; `tables[e]` is the table of epoch e for every epoch
known so far (`known_through`). A Stake order moves its amount from balance to `bonding` (still supply, not yet
voting); the checkpoint that includes it moves it into the table. An Unstake moves nothing until its checkpoint
pays `min(amount, stake left after slashing)` to the balance. Supply = balances + bonding + table + escrows and
never changes; every node asserts it after every step.

Spaces. A Stake order may declare the spaces its account's model serves; its `serve` item, checkpointed with the
stake, replaces the account's declaration in `serving` from the table that checkpoint fixes on (`serving_at[e]`,
one mapping per fixed epoch, shared until a declaration changes it). `space_book_at(e)` is the genesis book with
those declarations over it: what shards of epoch e are drawn from.

Certified orders of an epoch whose stake table is not yet known wait in `pending` and are retried when a checkpoint
(or `skip_checkpoint`) fixes it; the ones that then apply are listed in `released` for the owner to log (an order
is logged when it is applied, never while it waits). What may wait is bounded: its epoch is at most two ahead of
the newest table known here, its votes are checked against that table first (they must carry more than a third
of its voting power: at least one honest authority voted, so it is a real order of a real epoch; SPEC
settlement.md 6.3), and at most `PENDING_PER_EPOCH` wait per epoch and `PENDING_PER_ACCOUNT` per account.
Nothing here reads a clock: callers pass `now_ms`.
"""

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from moenode.core.checkpoint import (
    ZERO,
    Checkpoint,
    CheckpointCert,
    Item,
    MAX_CP_ITEMS,
    check_evidence,
    evidence_key,
    next_table,
)
from moenode.core.codec import canonical
from moenode.core.crypto import H, Verifier
from moenode.core.errors import (  # the ledger's refusals live in errors.py with the other protocol errors
    ConflictingCertificates,
    FutureCertificate,
    InsufficientFunds,
    ProtocolError,
    Replay,
    SchemaError,
    SequenceGap,
    SignatureError,
    StateError,
    UnknownEscrow,
)
from moenode.core.genesis import Genesis, next_epoch_seed
from moenode.core.messages import Certificate, Evidence, Input, Message, Report, Signed, shard_id as derive_shard_id
from moenode.core.orders import (
    CertifiedOrder,
    Order,
    PayEscrow,
    Refund,
    Settle,
    Stake,
    Transfer,
    Unstake,
    escrow_account,
    verify_pay_cert,
)
from moenode.core.selection import sample_shard, shard_seed, shard_size, voting_power
from moenode.core.spaces import SpaceBook

PENDING_AHEAD = 2  # a certified order waits for its table only if its epoch is at most this far ahead of ours
PENDING_THRESHOLD = 3_334  # the voting power of the newest known table its votes must carry to wait: over a third
PENDING_PER_EPOCH = 4096  # certified orders that wait, per epoch ...
PENDING_PER_ACCOUNT = 64  # ... and per account whose order it is


K = TypeVar("K")


def _uncount(counter: "Counter[K]", key: K) -> None:
    counter[key] -= 1
    if not counter[key]:
        del counter[key]


class Pending:
    """Certified orders waiting for their epoch's stake table, bounded per epoch and per account (the signer of a
    Transfer, PayEscrow, Stake or Unstake; the escrow of a Settle or Refund)."""

    def __init__(self) -> None:
        self._certs: dict[bytes, CertifiedOrder] = {}
        self._per_epoch: Counter[int] = Counter()
        self._per_account: Counter[bytes] = Counter()

    def __len__(self) -> int:
        return len(self._certs)

    def __contains__(self, order_id: bytes) -> bool:
        return order_id in self._certs

    def values(self) -> list[CertifiedOrder]:
        return list(self._certs.values())

    def add(self, cert: CertifiedOrder) -> None:
        o, epoch = cert.msg, cert.vote_epoch
        if self._per_epoch[epoch] >= PENDING_PER_EPOCH or self._per_account[o.account] >= PENDING_PER_ACCOUNT:
            raise FutureCertificate(f"{o.TYPE}: too many certified orders of epoch {epoch} or of account "
                                    f"{o.account.hex()[:16]} wait for their stake table here", reason="pending_full")
        self._certs[cert.id] = cert
        self._per_epoch[epoch] += 1
        self._per_account[o.account] += 1

    def discard(self, order_id: bytes) -> None:
        cert = self._certs.pop(order_id, None)
        if cert is not None:
            _uncount(self._per_epoch, cert.vote_epoch)
            _uncount(self._per_account, cert.msg.account)

    def due(self, through: int) -> list[CertifiedOrder]:
        """Take out every certificate of an epoch <= `through`, in order id order."""
        out = sorted((c for c in self._certs.values() if c.vote_epoch <= through), key=lambda c: c.id)
        for cert in out:
            self.discard(cert.id)
        return out


@dataclass(frozen=True)
class EscrowInfo:
    payer: bytes
    fee: int
    deadline_ms: int
    pay_id: bytes
    shard_id: bytes


def settle_split(report: Report, signers: list[bytes] | tuple[bytes, ...], winner_bps: int) -> dict[bytes, int]:
    """Who gets what from a settled fee. Integer only; the amounts always sum to `report.fee`.

    winner_bps (90 %) to the winning member, of which its proxy producer takes `producer_share_bps`; the rest split
    evenly among the signers other than the winner that the report neither struck nor marked faulty (a late member
    that still signs must not earn the on-time share: the simulator measured slow nodes out-earning honest ones
    otherwise); every remainder goes to the winner.
    """
    fee = report.fee
    win = fee * winner_bps // 10_000
    unpaid = set(report.strikes) | set(report.faulty) | {report.winner}
    others = sorted(s for s in set(signers) if s not in unpaid)
    rest = fee - win
    each = rest // len(others) if others else 0
    out: dict[bytes, int] = {}

    def credit(pk: bytes, amount: int) -> None:
        if amount:
            out[pk] = out.get(pk, 0) + amount

    take = win * report.producer_share_bps // 10_000 if report.producer != report.winner else 0
    credit(report.winner, win - take + rest - each * len(others))
    credit(report.producer, take)
    for o in others:
        credit(o, each)
    return out


class VerifyCache:
    """A verifier that remembers signatures it has already found valid (bounded LRU).

    An authority checks an order's signature when it votes and again inside the certificate; the second check, and
    the check of its own vote, are then free.
    """

    def __init__(self, verify: Verifier, size: int = 1 << 16):
        self.verify, self.size = verify, size
        self._ok: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()

    def remember(self, pk: bytes, digest: bytes, sig: bytes) -> None:
        self._ok[(pk, digest, sig)] = None
        if len(self._ok) > self.size:
            self._ok.popitem(last=False)

    def __call__(self, pk: bytes, digest: bytes, sig: bytes) -> bool:
        key = (pk, digest, sig)
        if key in self._ok:
            return True
        if self.verify(pk, digest, sig):
            self.remember(pk, digest, sig)
            return True
        return False


def applied_entry(account: bytes, sequence: int, order_id: bytes) -> int:
    """One applied order's term in the state digest's sum: the hash of (account, sequence, order id), as an integer.
    A sum of hashes is the same whatever order the terms came in, and is updated in constant time."""
    return int.from_bytes(H("ledger-applied", canonical([account, sequence, order_id])), "big")

class Ledger:
    def __init__(self, genesis: Genesis, verify: Verifier):
        self.genesis, self.params, self.net, self.verify = genesis, genesis.params, genesis.network_id, verify
        self.balances: dict[bytes, int] = {a.pubkey: a.balance for a in genesis.accounts if a.balance}
        self.bonding: dict[bytes, int] = {}
        self.table: dict[bytes, int] = genesis.initial_stakes()
        self.tables: dict[int, dict[bytes, int]] = {0: dict(self.table), 1: dict(self.table)}
        self.known_through = 1  # stake tables are fixed for every epoch <= known_through
        self.cp_digests: dict[int, bytes] = {}
        self.skipped: set[int] = set()  # checkpoint epochs carried over here: provisional, a late certificate wins
        self.last_cp = ZERO
        self.escrow_bal: dict[bytes, int] = {}
        self.escrows: dict[bytes, EscrowInfo] = {}
        self.applied: dict[tuple[bytes, int], bytes] = {}  # (account, sequence) -> order id
        self.applied_sum = 0  # the sum of `applied_entry` over `applied`, mod 2^256: its part of the state digest
        self.settled_report: dict[bytes, bytes] = {}  # escrow account -> report id of its applied Settle
        self.next_seq: dict[bytes, int] = {}
        self.items: dict[tuple[str, bytes, bytes], Item] = {}  # stake-changing items not yet checkpointed
        self.checkpointed: set[tuple[str, bytes, bytes]] = set()
        self.unstaking: dict[bytes, int] = {}  # uncheckpointed Unstake amounts, per account
        self.serving: dict[bytes, tuple[str, ...]] = {}  # spaces declared by checkpointed Stake orders
        self.serving_at: dict[int, dict[bytes, tuple[str, ...]]] = {0: self.serving, 1: self.serving}
        self._books: dict[int, SpaceBook] = {}
        self.pending = Pending()  # certified orders waiting for their epoch's stake table
        self.released: list[CertifiedOrder] = []  # applied out of `pending` since the owner last took them
        self.supply = genesis.supply()
        self._seeds: dict[int, bytes] = {0: genesis.seed0()}
        self._powers: dict[int, dict[bytes, int]] = {}

    # views --------------------------------------------------------------------------------------------------------
    def balance(self, account: bytes) -> int:
        return self.balances.get(account, 0)

    def stake(self, account: bytes) -> int:
        return self.table.get(account, 0)

    def sequence(self, account: bytes) -> int:
        return self.next_seq.get(account, 0)

    def total(self) -> int:
        return (sum(self.balances.values()) + sum(self.bonding.values()) + sum(self.table.values())
                + sum(self.escrow_bal.values()))

    def assert_supply(self) -> None:
        if self.total() != self.supply:
            raise AssertionError(f"supply invariant broken: {self.total()} != {self.supply}")

    def stakes_at(self, epoch: int) -> dict[bytes, int]:
        """The stake table of `epoch`. KeyError if it is not fixed yet (its checkpoint is outstanding)."""
        if epoch > self.known_through:
            raise KeyError(f"the stake table of epoch {epoch} is not fixed yet (known through {self.known_through})")
        return self.tables[epoch]  # one entry per epoch 0..known_through (a carried-over table is a copy)

    def space_book_at(self, epoch: int) -> SpaceBook:
        """Who serves which space in `epoch`: the genesis declarations, overridden by the ones that checkpoints made
        (a Stake's `spaces`) up to the one that fixed this epoch's table. KeyError if it is not fixed yet."""
        if epoch > self.known_through:
            raise KeyError(f"the spaces of epoch {epoch} are not fixed yet (known through {self.known_through})")
        if epoch not in self._books:
            self._books[epoch] = self.genesis.space_book.declaring(self.serving_at[epoch])
        return self._books[epoch]

    def power_at(self, epoch: int) -> dict[bytes, int]:
        if epoch not in self._powers:
            self._powers[epoch] = voting_power(self.stakes_at(epoch))
        return self._powers[epoch]

    def epoch_seed(self, epoch: int) -> bytes:
        """seed[E] = next_epoch_seed(E, seed[E-1], digest of the checkpoint formed during E-1, or b"" if none).

        The checkpoint formed during E-1 is the one *of* epoch E-2 (it also fixes table(E)), so seed and table of
        an epoch are both known when it starts.
        """
        if epoch > self.known_through:
            raise KeyError(f"the seed of epoch {epoch} is not fixed yet")
        for e in range(max(self._seeds) + 1, epoch + 1):
            self._seeds[e] = next_epoch_seed(e, self._seeds[e - 1], self.cp_digests.get(e - 2, b""))
        return self._seeds[epoch]

    def state_digest(self) -> bytes:
        """Identity of the whole state: equal on two nodes iff they hold the same ledger.

        Its cost does not grow with the history: the orders ever applied enter as their count and the running sum
        of one hash each (`applied_sum`, kept as they apply), the rest (balances, stakes, escrows holding funds,
        items not yet checkpointed) is current state. /status and /metrics compute it on every call."""
        state = {
            "balances": sorted(self.balances.items()), "bonding": sorted(self.bonding.items()),
            "table": sorted(self.table.items()), "escrow": sorted(self.escrow_bal.items()),
            "applied": [len(self.applied), self.applied_sum.to_bytes(32, "big")],
            "items": sorted(i.to_wire() for i in self.items.values()),
            "cp": [self.known_through, self.last_cp],
            "serving": sorted([pk, list(ids)] for pk, ids in self.serving.items()),
        }
        return H("ledger-state", canonical(state))

    def payment_check(self) -> Callable[[Input], None]:
        """The round's injected payment check: `pay_cert` is a certified PayEscrow matching the Input."""
        def check(inp: Input) -> None:
            pay_id = verify_pay_cert(inp.pay_cert, shard_id=inp.shard_id, fee=inp.fee, submitter=inp.submitter,
                                     net=self.net, verify=self.verify, stake_table_for_epoch=self.stakes_at)
            if pay_id != inp.pay_id:
                raise SchemaError("Input: pay_id is not the id of the certified payment")
        return check

    # the authority's view -----------------------------------------------------------------------------------------
    def check_order(self, signed: Signed[Order], now_ms: int, vote_epoch: int | None = None) -> None:
        """Raise a ProtocolError unless the order is valid in this view (the lock is the authority's business).

        `vote_epoch`: a renewal (SPEC 6.8) asks for a vote in that epoch, later than the order's; the epoch rule
        applies to it instead of the order's, and the rules that only time makes fail and that protect no one
        but the account that signed (a PayEscrow's deadline, an Unstake's bound) are not judged again.
        """
        o = signed.msg
        cur = self.genesis.epoch(now_ms)
        renewal = vote_epoch is not None
        epoch = o.epoch if vote_epoch is None else vote_epoch
        if renewal and epoch <= o.epoch:
            raise SchemaError(f"{o.TYPE}: a renewal's vote epoch {epoch} is not later than the order's {o.epoch}")
        if epoch not in (cur - 1, cur):
            raise StateError(f"{o.TYPE}: epoch {epoch} is not current (now {cur})", reason="stale_epoch")
        if epoch > self.known_through:
            raise StateError(f"{o.TYPE}: the stake table of epoch {epoch} is not fixed here yet",
                             reason="unknown_epoch")
        have = self.sequence(o.account)
        done = self.applied.get((o.account, o.sequence))
        if done is not None or o.sequence < have:
            raise Replay(f"{o.TYPE}: sequence {o.sequence} of {o.account.hex()[:16]} is already used")
        if o.sequence > have:
            raise SequenceGap(f"{o.TYPE}: sequence {o.sequence} but the account is at {have}",
                              account=o.account, have=have, want=o.sequence)
        if isinstance(o, (Transfer, PayEscrow, Stake)):
            need = o.fee if isinstance(o, PayEscrow) else o.amount
            bal = self.balance(o.account)
            if bal < need:
                raise InsufficientFunds(f"{o.TYPE}: balance {bal} < {need}", account=o.account,
                                        shortfall=need - bal)
        if isinstance(o, PayEscrow):
            esc = escrow_account(o.shard_id)
            if esc in self.escrows or self.sequence(esc) > 0:
                raise StateError("PayEscrow: this shard is already paid", reason="escrow_exists")
            if o.deadline_ms <= now_ms and not renewal:
                raise StateError("PayEscrow: the deadline has passed", reason="deadline")
        elif isinstance(o, Stake):
            for space_id in o.spaces:
                self.genesis.space_book.space(space_id)  # a space the genesis lists, or a SchemaError
        elif isinstance(o, Unstake) and not renewal:
            free = self.stake(o.account) - self.unstaking.get(o.account, 0)
            if o.amount > free:
                raise StateError(f"Unstake: {o.amount} exceeds the free stake {free}", reason="insufficient_stake")
        elif isinstance(o, Settle):
            self._check_settle(o)
        elif isinstance(o, Refund):
            info = self._escrow(o.account)
            if signed.signer != info.payer:
                raise SignatureError("Refund: only the payer may sign a refund")
            if o.pay_id != info.pay_id or o.amount != info.fee:
                raise SchemaError("Refund: pay_id or amount does not match the escrow")
            if now_ms < info.deadline_ms:
                raise StateError(f"Refund: the escrow's deadline is {info.deadline_ms}, now is {now_ms}",
                                 reason="too_early")

    def _escrow(self, account: bytes) -> EscrowInfo:
        esc = self.escrows.get(account)
        if esc is None:
            raise UnknownEscrow("no PayEscrow into this escrow is applied here", account=account)
        return esc

    def _check_settle(self, o: Settle) -> None:
        r = o.certificate.report
        esc = self._escrow(o.account)
        if (r.pay_id, r.fee, r.submitter, r.shard_id) != (esc.pay_id, esc.fee, esc.payer, esc.shard_id):
            raise SchemaError("Settle: the report's payment, fee or submitter does not match the escrow")
        if r.producer_share_bps > self.params.max_producer_share_bps:
            raise SchemaError("Settle: producer_share_bps is above the network maximum")
        self.check_shard_certificate(o.certificate)

    def check_shard_certificate(self, cert: Certificate) -> list[bytes]:
        """Recompute the shard of the certified report and check q member signatures; return the members."""
        members, q = self.shard_of(cert.report)
        cert.check(self.net, self.verify, members, q)
        return members

    def shard_of(self, r: Report) -> tuple[list[bytes], int]:
        """(members, quorum) of the report's shard, recomputed from the stake that served its space in its epoch."""
        if r.shard_id != derive_shard_id(r.epoch, r.data_hash, r.nonce, r.submitter, r.space):
            raise SchemaError("shard certificate: shard_id is not derived from the report")
        try:
            power = self.space_book_at(r.epoch).power_in(self.power_at(r.epoch), r.space)
            seed = self.epoch_seed(r.epoch)
        except KeyError as e:
            raise StateError(f"shard certificate: {e}") from None
        n, q = shard_size(max(1, sum(1 for vp in power.values() if vp > 0)))
        return sample_shard(power, shard_seed(seed, r.data_hash, r.nonce, r.pay_id), n), q

    # applying certificates ----------------------------------------------------------------------------------------
    def accept_certificate(self, cert: CertifiedOrder, verify: Verifier | None = None) -> str:
        """Check the quorum and apply. Returns "applied", "duplicate" (applied, or waiting, already) or "pending"
        (the table of the epoch its votes count in is not fixed yet: see `_hold`)."""
        o, epoch = cert.msg, cert.vote_epoch
        if self.applied.get((o.account, o.sequence)) == cert.id or cert.id in self.pending:
            return "duplicate"
        if epoch > self.known_through:
            self._hold(cert, verify or self.verify)
            return "pending"
        cert.check(self.power_at(epoch), verify or self.verify)
        return self.apply_certified(cert)

    def _hold(self, cert: CertifiedOrder, verify: Verifier) -> None:
        """Keep a certificate of a not yet fixed epoch until its table is, if its votes pass against the newest
        table known here; raise FutureCertificate if not.

        Stake changes take effect two epochs after they are made, so an epoch at most two ahead has a table that
        differs from the newest known one only by the stake items of the checkpoints in between. Its votes from
        authorities of the newest table must verify and carry more than a third of that table's power: more than
        the byzantine bound, so one honest authority voted for this order in its current epoch. Votes of accounts
        outside that table (new stakers) are not counted. The full check against the order's own table runs when
        that table is fixed (`_fix_next`).
        """
        o, epoch, newest = cert.msg, cert.vote_epoch, self.known_through
        if epoch > newest + PENDING_AHEAD:
            raise FutureCertificate(f"{o.TYPE}: epoch {epoch} is too far ahead (stake tables known through "
                                    f"{newest})")
        try:
            cert.check(self.power_at(newest), verify, threshold=PENDING_THRESHOLD, outsiders=True)
        except ProtocolError as e:
            raise FutureCertificate(f"{o.TYPE} voted in epoch {epoch}, checked against the table of epoch {newest}: {e}",
                                    reason=e.reason) from None
        self.pending.add(cert)

    def take_released(self) -> list[CertifiedOrder]:
        """The certified orders applied out of `pending` since the last call (for the owner's log)."""
        out, self.released = self.released, []
        return out

    def apply_certified(self, cert: CertifiedOrder) -> str:
        """Apply a certificate whose quorum was checked. Idempotent."""
        o, oid = cert.msg, cert.id
        key = (o.account, o.sequence)
        prev = self.applied.get(key)
        if prev is not None:
            if prev == oid or (isinstance(o, Settle) and self.settled_report.get(o.account) == o.report_id):
                return "duplicate"
            raise ConflictingCertificates(f"two certified orders for {o.account.hex()[:16]}/{o.sequence}")
        self.applied[key] = oid
        self.applied_sum = (self.applied_sum + applied_entry(o.account, o.sequence, oid)) % (1 << 256)
        seq = self.next_seq.get(o.account, 0)
        while (o.account, seq) in self.applied:
            seq += 1
        self.next_seq[o.account] = seq
        signer = cert.order.signer
        if isinstance(o, Transfer):
            self._move(self.balances, o.account, -o.amount)
            self._move(self.balances, o.recipient, o.amount)
        elif isinstance(o, PayEscrow):
            esc = escrow_account(o.shard_id)
            self._move(self.balances, o.account, -o.fee)
            self._move(self.escrow_bal, esc, o.fee)
            self.escrows[esc] = EscrowInfo(o.account, o.fee, o.deadline_ms, oid, o.shard_id)
        elif isinstance(o, Settle):
            r = o.certificate.report
            self.settled_report[o.account] = o.report_id
            self._move(self.escrow_bal, o.account, -r.fee)
            signers = [pk for pk, _ in o.certificate.signatures]
            for pk, amount in settle_split(r, signers, self.params.winner_bps).items():
                self._move(self.balances, pk, amount)
            for m in r.strikes:
                self._add_item(Item(r.epoch, "strike", m, o.report_id, 1))
            for m in r.faulty:
                self._add_item(Item(r.epoch, "faulty", m, o.report_id, 1))
        elif isinstance(o, Refund):
            self._move(self.escrow_bal, o.account, -o.amount)
            self._move(self.balances, signer, o.amount)
        elif isinstance(o, Stake):
            self._move(self.balances, o.account, -o.amount)
            self._move(self.bonding, o.account, o.amount)
            self._add_item(Item(o.epoch, "stake", o.account, oid, o.amount))
            if o.spaces:
                self._add_item(Item(o.epoch, "serve", o.account, oid, self.genesis.space_book.mask(o.spaces)))
        elif isinstance(o, Unstake):
            if self._add_item(Item(o.epoch, "unstake", o.account, oid, o.amount)):
                self._move(self.unstaking, o.account, o.amount)
        self.pending.discard(oid)
        return "applied"

    @staticmethod
    def _move(book: dict[bytes, int], account: bytes, delta: int) -> None:
        v = book.get(account, 0) + delta
        if v:
            book[account] = v
        else:
            book.pop(account, None)

    def _add_item(self, item: Item) -> bool:
        if item.key in self.checkpointed or item.key in self.items:
            return False
        self.items[item.key] = item
        return True

    # evidence and checkpoints -------------------------------------------------------------------------------------
    def add_evidence(self, ev: Evidence, now_ms: int) -> bool:
        """Prove `ev` and record it as an item tagged with the current epoch. False if already known."""
        offender = check_evidence(ev, self.net, self.verify)
        epoch = max(0, self.genesis.epoch(now_ms))
        return self._add_item(Item(epoch, ev.kind, offender, evidence_key(ev), 1))

    def next_checkpoint_epoch(self) -> int:
        """The checkpoint that can be applied next fixes table(known_through + 1), so it is of that epoch - 2."""
        return self.known_through - 1

    def propose_checkpoint(self, epoch: int) -> Checkpoint:
        """This view's checkpoint of `epoch`: every uncheckpointed item tagged <= epoch, sorted, capped."""
        if epoch != self.next_checkpoint_epoch():
            raise StateError(f"checkpoint {epoch}: the next one here is {self.next_checkpoint_epoch()}")
        items = sorted(i for i in self.items.values() if i.epoch <= epoch)[:MAX_CP_ITEMS]
        return Checkpoint(epoch=epoch, prev=self.last_cp, items=tuple(items))

    def accept_checkpoint(self, cc: CheckpointCert, verify: Verifier | None = None) -> str:
        cp = cc.checkpoint
        if cp.epoch < self.next_checkpoint_epoch():
            if self.cp_digests.get(cp.epoch) == cp.digest_for(self.net):
                return "duplicate"
            raise StateError(f"checkpoint {cp.epoch}: that epoch's table is already fixed here", reason="late")
        if cp.epoch > self.next_checkpoint_epoch():
            raise StateError(f"checkpoint {cp.epoch}: waiting for epoch {self.next_checkpoint_epoch()} first",
                             reason="early")
        if cp.prev != self.last_cp:
            raise StateError(f"checkpoint {cp.epoch}: builds on another checkpoint history", reason="fork")
        cc.check(self.net, self.power_at(cp.epoch + 1), verify or self.verify)
        self.apply_checkpoint(cp)
        return "applied"

    def apply_checkpoint(self, cp: Checkpoint) -> None:
        table, payouts = next_table(self.table, cp.items, self.params)
        declared = {it.account: it.value for it in cp.items if it.kind == "serve"}  # the last in item order holds
        if declared:  # a new mapping, so the epochs fixed before keep theirs
            book = self.genesis.space_book
            self.serving = {**self.serving, **{pk: ids for pk, mask in declared.items() if (ids := book.unmask(mask))}}
        for it in cp.items:
            self.checkpointed.add(it.key)
            mine = self.items.pop(it.key, None)
            if it.kind == "stake":
                self._move(self.bonding, it.account, -it.value)
            elif it.kind == "unstake" and mine is not None:
                self._move(self.unstaking, it.account, -it.value)
        for acct, amount in payouts.items():
            self._move(self.balances, acct, amount)
        self.table = table
        self.cp_digests[cp.epoch] = cp.digest_for(self.net)
        self.last_cp = self.cp_digests[cp.epoch]
        self._fix_next(dict(table))

    def skip_checkpoint(self, epoch: int) -> None:
        """No checkpoint of `epoch` formed in time: its table carries over and its items wait for the next one."""
        if epoch != self.next_checkpoint_epoch():
            raise ValueError(f"can only skip checkpoint {self.next_checkpoint_epoch()}, not {epoch}")
        self.skipped.add(epoch)
        self._fix_next(dict(self.table))

    def prev_of(self, epoch: int) -> bytes:
        """The `prev` a checkpoint of `epoch` must carry here: the digest of the last one applied before it."""
        earlier = [e for e in self.cp_digests if e < epoch]
        return self.cp_digests[max(earlier)] if earlier else ZERO

    def restore(self, other: "Ledger") -> None:
        """Take over the whole state of `other` (a ledger rebuilt from the log), keeping this object's identity,
        which the node's parts hold."""
        if other.net != self.net:
            raise ValueError("restore: the other ledger belongs to another network")
        vars(self).clear()
        vars(self).update(vars(other))

    def _fix_next(self, table: dict[bytes, int]) -> None:
        self.known_through += 1
        self.tables[self.known_through] = table
        self.serving_at[self.known_through] = self.serving
        for cert in self.pending.due(self.known_through):
            try:
                if self.accept_certificate(cert) == "applied":
                    self.released.append(cert)
            except ProtocolError:
                pass  # under-quorum for the now-fixed table: it was never a certificate
