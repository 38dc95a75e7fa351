"""Our own submissions: pay, send the Input, wait for the certificate; on failure refund and try again.

Theory of operation: `submit(texts, fee, attempts)` checks the space first (one the network lists and some stake
serves: else nothing is paid), then makes up to `attempts` attempts. An attempt draws a nonce, derives the shard id,
gets the escrow certified (`Payments.pay_escrow`, a PayEscrow of the fee until the round's deadline), seals the
`Input` and hands it to the round driver (`Rounds.run_submission`), which runs our submitter's session and returns
how it ended. A certified round with the winning reveal is done: its certificate goes through the certificates'
door (`on_certificate`) and the embeddings back to the caller. Any other ending refunds the escrow after its
deadline (`Payments.refund`), unless the round was certified after all (then the winner settles it).

A refund can only come after the escrow's deadline (a Settle may still be on its way until then), which is a whole
`round_abort_ms` away. So a failed attempt with another one to come, and a balance that covers a second fee, does
not wait for it: the next attempt pays and starts at once, and the refund runs in the background (the attempt says
so). The last attempt, or one whose next fee the balance cannot cover, waits for its refund as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import trio

from moenode.core.errors import LocalRoundError, ProtocolError
from moenode.core.messages import Certificate, Input, seal
from moenode.core.messages import shard_id as derive_shard_id
from moenode.core.orders import CertifiedOrder
from moenode.core.round import Outcome, Status
from moenode.core.selection import data_hash
from moenode.node.context import Context
from moenode.node.payments import Payments
from moenode.node.rounds import Rounds

log = logging.getLogger("moenode.node")


@dataclass
class Attempt:
    """One try at a round of ours: how its submitter's round ended ("incomplete": certified, but the winning
    reveal never reached us), and what it cost."""

    shard_id: bytes
    status: Status | Literal["incomplete"]
    reason: str = ""
    outcome: Outcome | None = None
    refunded: bool = False
    elapsed_ms: int = 0
    pay_ms: int = 0

    def summary(self) -> dict:
        return {"shard_id": self.shard_id.hex(), "status": self.status, "reason": self.reason,
                "refunded": self.refunded, "elapsed_ms": self.elapsed_ms, "pay_ms": self.pay_ms}


class SubmitError(RuntimeError):
    def __init__(self, message: str, attempts: list[Attempt]):
        super().__init__(message)
        self.attempts = attempts


class Submitter:
    """Collaborators: the context, the round driver, payments (escrow and refund), this node's default space
    ("" for the network's), and the certificates' door."""

    def __init__(self, ctx: Context, rounds: Rounds, payments: Payments, default_space: str,
                 on_certificate: Callable[[Certificate, bytes | None, bytes], Awaitable[object]]):
        self.ctx, self.rounds, self.payments = ctx, rounds, payments
        self.default_space, self.on_certificate = default_space, on_certificate

    async def submit(self, texts: list[str], fee: int, attempts: int, wait_ms: int = 0, space: str = ""
                     ) -> tuple[Attempt, list[Attempt]]:
        """Pay, send the Input, drive the SubmitterRound; on failure refund after the deadline and retry.
        `wait_ms` > 0: members may take that long to commit (the Input's `commit_by_ms`), for slow, strong models.
        `space` "" is this node's default (config submit_space, else the network's); a space the network does not
        list or that no stake serves raises SubmitError before anything is paid."""
        space = self.submit_space(space)
        done: list[Attempt] = []
        for i in range(attempts):
            a = await self._attempt(texts, fee, wait_ms, space, retry_at_once=i + 1 < attempts)
            done.append(a)
            if a.status == "certified":
                return a, done
        raise SubmitError(f"no certificate after {len(done)} attempt(s)", done)

    def submit_space(self, space: str = "") -> str:
        """The space a submission names, checked against the genesis and the current stake table."""
        book = self.ctx.genesis.space_book
        space = space or self.default_space or book.default.id
        try:
            book.space(space)
        except ProtocolError as e:
            raise SubmitError(str(e), []) from None
        epoch = self.ctx.epoch()
        try:
            power, book = self.payments.ledger.power_at(epoch), self.payments.ledger.space_book_at(epoch)
        except KeyError:
            return space
        if not any(vp > 0 for vp in book.power_in(power, space).values()):
            raise SubmitError(f"no staked node serves space {space} in epoch {epoch}: nothing was paid", [])
        return space

    async def _attempt(self, texts: list[str], fee: int, wait_ms: int, space: str, retry_at_once: bool = False
                       ) -> Attempt:
        t0 = self.ctx.now_ms()
        epoch = max(0, self.ctx.genesis.epoch(t0))
        nonce = os.urandom(32)
        dh = data_hash([t.encode("utf-8") for t in texts])
        sid = derive_shard_id(epoch, dh, nonce, self.ctx.account, space)
        commit_by = t0 + wait_ms if wait_ms > 0 else 0
        deadline = t0 + wait_ms + self.ctx.params.round_abort_ms
        pay = await self.payments.pay_escrow(sid, fee, deadline)
        paid = self.ctx.now_ms()
        try:
            inp = Input(shard_id=sid, epoch=epoch, submitter=self.ctx.account, pay_id=pay.id, pay_cert=pay.encode(),
                        fee=fee, data_hash=dh, nonce=nonce, modality="text", deadline_ms=deadline,
                        items=tuple(texts), commit_by_ms=commit_by, space=space)
            a = await self._run_round(inp, t0)
        except (ProtocolError, LocalRoundError) as e:  # e.g. the epoch's table closed between paying and sending
            a = Attempt(sid, "failed", f"could not start the round: {e}", None, elapsed_ms=self.ctx.now_ms() - t0)
        a.pay_ms = paid - t0
        if a.status == "certified":
            return a
        if retry_at_once and self.payments.ledger.balance(self.ctx.account) >= fee:
            a.reason += "; retried at once, the fee comes back after the escrow's deadline"
            self.ctx.spawn(self._refund_unless_certified, a, pay, deadline)
            return a
        await self._refund_unless_certified(a, pay, deadline)
        return a

    async def _run_round(self, inp: Input, t0: int) -> Attempt:
        out = await self.rounds.run_submission(seal(inp, self.ctx.signer, self.ctx.net_id))
        sid, elapsed = inp.shard_id, self.ctx.now_ms() - t0
        if out is None:
            return Attempt(sid, "failed", "the round was abandoned", None, elapsed_ms=elapsed)
        a = Attempt(sid, out.status, out.reason, out, elapsed_ms=elapsed)
        if out.status == "certified" and out.winner_reveal is not None:
            assert out.certificate is not None
            self.ctx.spawn(self.on_certificate, out.certificate, None, b"")
        elif out.status == "certified":
            a.status, a.reason = "incomplete", out.reason or "the winning reveal never arrived"
        return a

    async def _refund_unless_certified(self, a: Attempt, pay: CertifiedOrder, deadline: int) -> None:
        """After the escrow's deadline, refund it, unless the round was certified (its winner settles it)."""
        wait = (deadline - self.ctx.now_ms()) / 1000
        if wait > 0:
            await trio.sleep(wait + 0.05)
        if a.outcome is None or a.outcome.certificate is None:
            try:
                a.refunded = await self.payments.refund(pay) is not None
            except Exception as e:
                a.reason += f"; refund failed: {e}"
                log.warning("refund of shard %s failed: %s", a.shard_id.hex()[:16], e)
