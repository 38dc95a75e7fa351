"""The authority: signs an order iff it is valid in its view and it signed no conflicting one (SPEC section 6.2).

Theory of operation: an authority is a `Ledger` plus a signing key plus a *lock table*: (account, sequence) ->
the id of the one order it signed there. `handle_order` applies any credit certificates attached to the request,
checks the order against the ledger view (`Ledger.check_order`), then consults the lock:
- no lock: write the lock through the injected `LedgerStore` (which must make it durable before returning), then
  sign. The signature never leaves before the lock is on disk, so a crash between the two can never end in a
  conflicting signature after restart;
- a lock on the same order (or, for an escrow, a Settle of the same shard report): sign again (idempotent);
- a lock on another order: refuse with `Conflict`.
`handle_orders` does the same for a batch of orders and signs them all at once (a batch vote, see orders.py).
Both are three steps, which a caller may also take itself to write the locks off its own thread: `prepare` checks
the orders and reserves their locks (a reserved lock refuses every other order at its sequence, and the same order
too until it is durable), the store's `put_locks` writes them, then `sign` (or `release`, if the write failed).
Checkpoint votes use the same lock table, keyed by epoch. Every certified order the ledger applies, checkpoint
certificate it applies and piece of evidence it accepts is appended to the store's log, from which a restart
rebuilds the ledger (see moenode/store). A certified order that waits for its epoch's stake table is not logged
until it applies (the ledger lists it in `released` then): so the log holds what was applied, in the order it was,
and nothing a peer made up can be appended to it, however often it is offered.

An authority whose locks were lost (its ledger store was lost and fetched again from peers) is created with
`votes_from_epoch`: it votes on no order and no checkpoint before that epoch (`abstaining`), by when everything it
may have voted for before can no longer gather votes (see moenode/store).

A carried-over checkpoint (`skip_checkpoint`: none arrived in its window) is a local, provisional decision. A
certificate for that epoch that arrives later wins: the skip's log entry is replaced by it and the ledger rebuilt
from the log (`accept_checkpoint` returns "adopted"). So a node that was down, partitioned or slow to hear a
checkpoint converges on the same history as the others instead of forking from them for good.

The object is sans-IO: no clock (callers pass `now_ms`), no disk (the store is injected), no network (the node's
net layer carries requests and replies).
"""

from dataclasses import dataclass, field
from typing import Protocol

from moenode.core.checkpoint import Checkpoint, CheckpointCert, disagreement
from moenode.core.codec import canonical
from moenode.core.crypto import Signer, Verifier
from moenode.core.errors import Conflict, ProtocolError, StateError
from moenode.core.ledger import Ledger, VerifyCache
from moenode.core.messages import Evidence, body_of
from moenode.core.orders import (
    MAX_BATCH,
    BatchVote,
    CertifiedOrder,
    Settle,
    batch_proofs,
    batch_vote_digest,
    open_order,
    vote_digest,
)


class LedgerStore(Protocol):
    """What an authority needs from persistence. `put_locks` must be durable when it returns, all rows or none."""

    def locks(self) -> dict[bytes, tuple[bytes, bytes]]: ...

    def put_locks(self, rows: list[tuple[bytes, bytes, bytes, bytes]]) -> None:
        """Store (key, order id, settle key, signed bytes) rows in one transaction."""

    def append(self, kind: str, ident: bytes, data: bytes) -> None: ...

    def entries(self) -> list[tuple[str, bytes, bytes]]: ...

    def rewrite(self, entries: list[tuple[str, bytes, bytes]]) -> None:
        """Replace the whole log atomically (a kill -9 leaves the old log or the new one, never a mix)."""


class MemoryStore:
    """A store that forgets on exit: for the simulator and unit tests. The daemon uses moenode.store.LedgerDB."""

    def __init__(self) -> None:
        self._locks: dict[bytes, tuple[bytes, bytes]] = {}
        self.log: list[tuple[str, bytes, bytes]] = []

    def locks(self) -> dict[bytes, tuple[bytes, bytes]]:
        return dict(self._locks)

    def put_locks(self, rows: list[tuple[bytes, bytes, bytes, bytes]]) -> None:
        for key, order_id, settle_key, _ in rows:
            self._locks[key] = (order_id, settle_key)

    def append(self, kind: str, ident: bytes, data: bytes) -> None:
        self.log.append((kind, ident, data))

    def entries(self) -> list[tuple[str, bytes, bytes]]:
        return list(self.log)

    def rewrite(self, entries: list[tuple[str, bytes, bytes]]) -> None:
        self.log = list(entries)


ASIDE_EPOCHS = 8  # checkpoint certificates kept aside: the newest epochs ...
ASIDE_PER_EPOCH = 3  # ... and a few per epoch, so a forged one cannot crowd out the real one


def order_lock_key(account: bytes, sequence: int) -> bytes:
    return b"o" + account + sequence.to_bytes(8, "big")


def skip_entry(epoch: int) -> tuple[str, bytes, bytes]:
    """The log entry of a carried-over checkpoint."""
    return "skip", epoch.to_bytes(8, "big"), b""


def checkpoint_lock_key(epoch: int) -> bytes:
    return b"c" + epoch.to_bytes(8, "big")


@dataclass
class Ballot:
    """Orders an authority checked and whose locks it reserved, before the locks are written and the vote signed."""

    batch_vote: bool  # one batch vote over the accepted orders; else one order and a plain vote
    answers: list[int | ProtocolError] = field(default_factory=list)  # per order: its leaf index, or the refusal
    leaves: list[bytes] = field(default_factory=list)  # the accepted orders' vote digests
    rows: list[tuple[bytes, bytes, bytes, bytes]] = field(default_factory=list)  # locks to write first


class Authority:
    def __init__(self, ledger: Ledger, signer: Signer, store: LedgerStore, votes_from_epoch: int = 0):
        self.ledger, self.signer, self.store = ledger, signer, store
        self.votes_from_epoch = votes_from_epoch
        self.me = signer.public_key
        self.verify = VerifyCache(ledger.verify)
        ledger.take_released()  # what the ledger applied before it had an authority came from the store's log
        self._locks = store.locks()
        self._reserved: set[bytes] = set()  # lock keys of a prepared ballot, not yet on disk
        self._aside: dict[int, list[bytes]] = {}  # checkpoint certificates that could not apply yet, by epoch
        self.dropped: list[tuple[str, str]] = []  # log entries the last adoption dropped, with why

    # orders -------------------------------------------------------------------------------------------------------
    def handle_order(self, data: bytes, now_ms: int, attachments: tuple[bytes, ...] | list[bytes] = (),
                     vote_epoch: int | None = None) -> bytes:
        """Vote for the order in `data` or raise a ProtocolError that says why not.

        `attachments` are certified orders the sender adds when this authority lacked a credit or an earlier order
        (the InsufficientFunds, SequenceGap and UnknownEscrow errors say which account to bring up to date).
        `vote_epoch` asks for a renewal: a vote in that epoch for an order of an earlier one (SPEC 6.8).
        """
        self.take_attachments(attachments, now_ms)
        ballot = self.prepare([data], now_ms, batch_vote=False, vote_epochs=[vote_epoch])
        if isinstance(ballot.answers[0], ProtocolError):
            raise ballot.answers[0]
        self.write_locks(ballot)
        return self.sign(ballot)[0]  # type: ignore[return-value]

    def take_attachments(self, attachments: tuple[bytes, ...] | list[bytes], now_ms: int) -> None:
        """Fix the stake tables the clock has made due, then apply the certified orders a client attached."""
        self.catch_up(now_ms)
        for cert in attachments:
            self.accept_certificate(cert)

    def handle_orders(self, batch: list[bytes], now_ms: int) -> list[BatchVote | ProtocolError]:
        """Vote for every order in `batch` that `handle_order` would vote for, with one signature; the answer at each
        position is that order's `BatchVote` or the ProtocolError that says why not.

        Each order is opened, checked and locked exactly as by `handle_order`; once every lock is written, the
        authority signs the Merkle root of the accepted orders' vote digests (SPEC section 6.3). A refused order
        can be sent again on its own, with attachments.
        """
        ballot = self.prepare(batch, now_ms, batch_vote=True)
        self.write_locks(ballot)
        return self.sign(ballot)  # type: ignore[return-value]

    # the three steps of a vote, for a caller that writes the locks elsewhere (the node, on a worker thread):
    # prepare (check, reserve the locks), the store's put_locks(ballot.rows), then sign, or release if it failed.
    def prepare(self, batch: list[bytes], now_ms: int, batch_vote: bool,
                vote_epochs: list[int | None] | None = None) -> Ballot:
        """Check every order and reserve the locks the accepted ones need. Nothing is signed or written yet.

        `vote_epochs[i]`, if given and not None, asks for a renewal of order i in that epoch (SPEC 6.8)."""
        most = MAX_BATCH if batch_vote else 1
        if len(batch) > most:
            raise ValueError(f"a ballot holds at most {most} orders, not {len(batch)}")
        self.catch_up(now_ms)
        ballot = Ballot(batch_vote)
        fresh: dict[bytes, tuple[bytes, bytes, bytes]] = {}
        for data, vote_epoch in zip(batch, vote_epochs or [None] * len(batch)):
            try:
                ballot.leaves.append(self._admit(data, now_ms, fresh, vote_epoch))
                ballot.answers.append(len(ballot.leaves) - 1)
            except ProtocolError as e:
                ballot.answers.append(e)
        ballot.rows = [(key, oid, settle, data) for key, (oid, settle, data) in fresh.items()]
        self._reserved.update(fresh)
        return ballot

    def write_locks(self, ballot: Ballot) -> None:
        """Write the ballot's locks through the store (durable when it returns); on failure, release them."""
        try:
            if ballot.rows:
                self.store.put_locks(ballot.rows)
        except BaseException:
            self.release(ballot)
            raise

    def release(self, ballot: Ballot) -> None:
        """The locks could not be written: forget their reservations, so nothing is ever signed for them."""
        self._reserved.difference_update(key for key, *_ in ballot.rows)

    def sign(self, ballot: Ballot) -> list[bytes | BatchVote | ProtocolError]:
        """The ballot's locks are durable: hold them, and sign (one signature, over the Merkle root for a batch)."""
        for key, oid, settle, _ in ballot.rows:
            self._reserved.discard(key)
            self._locks[key] = (oid, settle)
        if not ballot.leaves:
            return list(ballot.answers)  # type: ignore[arg-type]  # every order refused: nothing to sign
        if ballot.batch_vote:
            root, proofs = batch_proofs(ballot.leaves)
            digest = batch_vote_digest(root)
        else:
            digest = ballot.leaves[0]
        sig = self.signer.sign(digest)
        self.verify.remember(self.me, digest, sig)
        if not ballot.batch_vote:
            return [sig]
        return [a if isinstance(a, ProtocolError) else BatchVote(sig, *proofs[a]) for a in ballot.answers]

    def _admit(self, data: bytes, now_ms: int, fresh: dict[bytes, tuple[bytes, bytes, bytes]],
               vote_epoch: int | None = None) -> bytes:
        """Open and check the order in `data` and return its vote digest (raise if refused). A lock it needs is
        added to `fresh` (key -> order id, settle key, bytes). The lock holds the order id whatever the epoch of
        the vote: a renewal (`vote_epoch`) of the locked order is voted for again, any other order refused."""
        led = self.ledger
        signed = open_order(data, led.net, self.verify)
        order = signed.msg
        led.check_order(signed, now_ms, vote_epoch)
        epoch = order.epoch if vote_epoch is None else vote_epoch
        if led.power_at(epoch).get(self.me, 0) <= 0:
            raise StateError(f"not an authority in epoch {epoch}", reason="not_authority")
        self._check_voting(now_ms)
        key = order_lock_key(order.account, order.sequence)
        settle_key = order.report_id if isinstance(order, Settle) else b""
        if key in self._reserved:  # another ballot's lock for this sequence is being written: not durable yet
            raise StateError(f"{order.TYPE}: a vote for sequence {order.sequence} of {order.account.hex()[:16]} is "
                             "being written; ask again", reason="busy")
        held = self._locks.get(key) or fresh.get(key)
        if held is None:
            fresh[key] = (signed.id, settle_key, data)
        elif held[0] != signed.id and not (settle_key and held[1] == settle_key):
            raise Conflict(f"{order.TYPE}: already signed order {held[0].hex()[:16]} for sequence {order.sequence}"
                           f" of {order.account.hex()[:16]}")
        return vote_digest(signed.id, epoch)

    def accept_certificate(self, data: bytes, now_ms: int | None = None) -> str:
        """Check and apply a certified order; log it once it is applied. Returns the ledger's status ("applied",
        "duplicate" or "pending"); a certificate that may not wait for its table raises FutureCertificate.

        With `now_ms`, stake tables the clock has made due are fixed first (see `catch_up`).
        """
        return self.accept_decoded(CertifiedOrder.decode(data, self.ledger.net, self.verify), data, now_ms)

    def accept_decoded(self, cert: CertifiedOrder, data: bytes, now_ms: int | None = None) -> str:
        """`accept_certificate` of a certificate its caller has decoded (with this authority's `verify`) from
        `data`, for a caller that needs the decoded order too: it is not decoded twice."""
        if now_ms is not None:
            self.catch_up(now_ms)
        status = self.ledger.accept_certificate(cert, self.verify)
        if status == "applied":
            self.store.append("order", cert.id, data)
        return status

    def _log_released(self) -> None:
        """Log the waiting certified orders that a newly fixed stake table let apply (after that table's entry)."""
        for cert in self.ledger.take_released():
            self.store.append("order", cert.id, cert.encode())

    def _check_voting(self, now_ms: int) -> None:
        if self.ledger.genesis.epoch(now_ms) < self.votes_from_epoch:
            raise StateError(f"this authority's vote locks were lost; it votes again from epoch "
                             f"{self.votes_from_epoch}", reason="abstaining")

    def locked(self, account: bytes, sequence: int) -> bytes | None:
        held = self._locks.get(order_lock_key(account, sequence))
        return held[0] if held else None

    # checkpoints and evidence -------------------------------------------------------------------------------------
    def sign_checkpoint(self, cp: Checkpoint, now_ms: int) -> bytes:
        """Vote for checkpoint `cp` iff it is due now (epoch E+1), agrees with this view (`disagreement`), and this
        authority signed no other checkpoint of its epoch."""
        led = self.ledger
        if led.genesis.epoch(now_ms) != cp.epoch + 1:
            raise StateError(f"checkpoint {cp.epoch} is signed during epoch {cp.epoch + 1} only", reason="window")
        self._check_voting(now_ms)
        why = disagreement(cp, led.propose_checkpoint(cp.epoch), led.items)
        if why:
            raise StateError(f"checkpoint {cp.epoch}: {why}", reason="view_differs")
        digest = cp.digest_for(led.net)
        if led.power_at(cp.epoch + 1).get(self.me, 0) <= 0:
            raise StateError(f"not an authority in epoch {cp.epoch + 1}", reason="not_authority")
        key = checkpoint_lock_key(cp.epoch)
        held = self._locks.get(key)
        if held is None:
            self.store.put_locks([(key, digest, b"", cp_bytes(cp, led.net))])  # durable before the signature
            self._locks[key] = (digest, b"")
        elif held[0] != digest:
            raise Conflict(f"checkpoint {cp.epoch}: already signed another digest")
        sig = self.signer.sign(digest)
        self.verify.remember(self.me, digest, sig)
        return sig

    def accept_checkpoint(self, data: bytes) -> str:
        """Apply a checkpoint certificate: "applied", "duplicate", or "adopted" (it replaced a local carry-over).

        One that cannot apply yet ("early", or "fork" because an earlier certificate is missing here) is kept
        aside, a few per epoch, and retried whenever the checkpoint history moves on.
        """
        cc = CheckpointCert.decode(data)
        cp, led = cc.checkpoint, self.ledger
        try:
            if cp.epoch in led.skipped:
                status = self._adopt(cc, data)
            else:
                status = led.accept_checkpoint(cc, self.verify)
                if status == "applied":
                    self.store.append("checkpoint", cp.digest_for(led.net), data)
                    self._log_released()
        except StateError as e:
            if e.reason in ("early", "fork"):
                self._set_aside(cp.epoch, data)
            raise
        if status != "duplicate":
            self._retry_set_aside()
        return status

    def _adopt(self, cc: CheckpointCert, data: bytes) -> str:
        """A certificate for an epoch this node carried over: the certificate wins. The skip in the log is replaced
        by it and the ledger is rebuilt from the log; entries that no longer hold (a certificate whose quorum was
        counted on the carried-over table, a checkpoint built on the skip) are dropped and listed in `dropped`."""
        led, cp = self.ledger, cc.checkpoint
        if cp.prev != led.prev_of(cp.epoch):
            raise StateError(f"checkpoint {cp.epoch}: builds on another checkpoint history", reason="fork")
        cc.check(led.net, led.power_at(cp.epoch + 1), self.verify)
        entries = self.store.entries()
        skip = skip_entry(cp.epoch)
        if skip not in entries:
            raise StateError(f"checkpoint {cp.epoch}: carried over here but not in the log", reason="late")
        entries[entries.index(skip)] = ("checkpoint", cp.digest_for(led.net), data)
        fresh = type(led)(led.genesis, led.verify)
        kept, self.dropped = [], []
        for entry in entries:
            try:
                replay(fresh, entry, self.verify)
            except (ProtocolError, ValueError, KeyError) as e:
                self.dropped.append((entry[0], str(e)))
                continue
            kept.append(entry)
        fresh.assert_supply()
        fresh.take_released()  # replayed from the log: already in it
        waiting = led.pending.values()  # never logged: offered again to the rebuilt ledger
        self.store.rewrite(kept)
        led.restore(fresh)
        for cert in waiting:
            try:
                if led.accept_certificate(cert, self.verify) == "applied":
                    self.store.append("order", cert.id, cert.encode())
            except ProtocolError:
                continue
        self._log_released()
        return "adopted"

    def _set_aside(self, epoch: int, data: bytes) -> None:
        pile = self._aside.setdefault(epoch, [])
        if data not in pile and len(pile) < ASIDE_PER_EPOCH:
            pile.append(data)
        for old in sorted(self._aside)[:-ASIDE_EPOCHS]:
            del self._aside[old]

    def _retry_set_aside(self) -> None:
        for epoch in sorted(self._aside):
            if epoch > self.ledger.next_checkpoint_epoch():
                break
            self._apply_set_aside(epoch)

    def _apply_set_aside(self, epoch: int) -> bool:
        """Try the certificates of `epoch` set aside until one applies; forget them all either way."""
        for data in self._aside.pop(epoch, []):
            try:
                self.accept_checkpoint(data)
                return True
            except ProtocolError:
                continue
        return False

    def tick(self, now_ms: int) -> Checkpoint | None:
        """Call once in a while (say every few seconds). Fixes the stake tables the clock has made due, and returns
        the checkpoint this authority should sign and send now, if one is in its window (else None).

        A checkpoint of E that has not arrived by the start of E+2 did not form: table(E+2) carries over. During
        E+1 the checkpoint of E is signed: `sign_checkpoint(tick(now), now)`, votes gathered with a
        `CheckpointCollector`, the certificate applied with `accept_checkpoint` everywhere.
        """
        led = self.ledger
        cur = self.catch_up(now_ms)
        due = led.next_checkpoint_epoch()
        if due + 1 == cur and led.power_at(cur).get(self.me, 0) > 0:
            return led.propose_checkpoint(due)
        return None

    def catch_up(self, now_ms: int) -> int:
        """Skip every checkpoint whose window has closed unformed (E+2 <= now's epoch); return now's epoch."""
        led = self.ledger
        cur = led.genesis.epoch(now_ms)
        while led.next_checkpoint_epoch() + 2 <= cur:
            self.skip_checkpoint(led.next_checkpoint_epoch())
        return cur

    def skip_checkpoint(self, epoch: int) -> None:
        """Carry the table over: no certificate of `epoch` applied in its window (one set aside is tried first)."""
        if self._apply_set_aside(epoch):
            return
        self.ledger.skip_checkpoint(epoch)
        self.store.append(*skip_entry(epoch))
        self._log_released()

    def add_evidence(self, ev: Evidence, now_ms: int) -> bool:
        fresh = self.ledger.add_evidence(ev, now_ms)
        if fresh:
            self.store.append("evidence", now_ms.to_bytes(8, "big"), ev.encode())
        return fresh


def cp_bytes(cp: Checkpoint, net: bytes) -> bytes:
    return canonical(body_of(cp, net))


def replay(ledger: Ledger, entry: tuple[str, bytes, bytes], verify: Verifier | None = None) -> None:
    """Apply one entry of a store's log to `ledger`, re-checking its certificate. Raises ProtocolError on a bad one."""
    v = verify or ledger.verify
    kind, ident, data = entry
    if kind == "order":
        ledger.accept_certificate(CertifiedOrder.decode(data, ledger.net, v), v)
    elif kind == "checkpoint":
        ledger.accept_checkpoint(CheckpointCert.decode(data), v)
    elif kind == "skip":
        ledger.skip_checkpoint(int.from_bytes(ident, "big"))
    elif kind == "evidence":
        ledger.add_evidence(Evidence.decode(data), int.from_bytes(ident, "big"))
    else:
        raise ValueError(f"unknown log entry kind {kind!r}")
