"""The protocol's errors, in two families (the split h11 makes between remote and local protocol errors).

Remote: `ProtocolError` and its subclasses describe what a *peer* sent: recoverable, counted by `reason`, logged
with the peer id, and sometimes turned into evidence. Decoding untrusted bytes raises nothing else. The ledger's
refusals carry what the sender needs to fix them (the account, the shortfall, the gap).

Local: `LocalError` and its subclasses say that our own side called the core in a way its state does not allow,
or that a safety bound of the protocol was broken; a bug or an emergency, never a peer's mistake: they fail loudly.
(Plain ValueError and TypeError remain for arguments of the wrong kind.)
"""


class ProtocolError(Exception):
    """A remote party sent something we reject. `reason` is a short stable token for counters and logs."""

    reason = "protocol"

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DecodeError(ProtocolError):
    """Bytes that are not canonical msgpack of the allowed types, or exceed a cap."""

    reason = "malformed"


class TooLarge(DecodeError):
    reason = "oversized"


class SchemaError(ProtocolError):
    """Well-formed encoding, but a field is missing, of the wrong type, or out of bounds."""

    reason = "schema"


class SignatureError(ProtocolError):
    reason = "bad_signature"


class WrongNetwork(ProtocolError):
    reason = "wrong_network"


class NotInShard(ProtocolError):
    reason = "out_of_shard"


class Replay(ProtocolError):
    reason = "replay"


class StateError(ProtocolError):
    """A valid message that the receiver's state machine cannot accept now (too late, duplicate, wrong phase)."""

    reason = "state"


# local errors ------------------------------------------------------------------------------------------------------
class LocalError(RuntimeError):
    """Our own side broke a rule of the core, or a bound the protocol relies on was broken: fail loudly."""


class LocalRoundError(LocalError):
    """The driver called a round in a way its state does not allow: a bug on our side."""


# the ledger's and the authority's refusals -----------------------------------------------------------------------
class InsufficientFunds(StateError):
    """The account's balance in this authority's view is short; credit certificates may fix it."""

    reason = "insufficient_funds"

    def __init__(self, message: str, *, account: bytes, shortfall: int):
        super().__init__(message)
        self.account, self.shortfall = account, shortfall


class SequenceGap(StateError):
    """The order's sequence is ahead of this authority's view; the sender's earlier certificates fill the gap."""

    reason = "sequence_gap"

    def __init__(self, message: str, *, account: bytes, have: int, want: int):
        super().__init__(message)
        self.account, self.have, self.want = account, have, want


class UnknownEscrow(StateError):
    """The escrow's PayEscrow is not applied in this authority's view; attach its certificate."""

    reason = "unknown_escrow"

    def __init__(self, message: str, *, account: bytes):
        super().__init__(message)
        self.account = account


class ConflictingCertificates(LocalError):
    """Two certified orders for one (account, sequence): the byzantine bound was broken. Never silently ignored."""


class FutureCertificate(StateError):
    """A certified order of an epoch whose stake table is not fixed here, and that is not held to wait for it: too
    far ahead, its votes do not carry a third of the newest known table, or too many wait already. Nothing of it is
    kept; once the table is known it can be sent again (sync brings it, from any peer that applied it)."""

    reason = "future_epoch"


class Conflict(StateError):
    """This authority already signed a different order for this (account, sequence), or checkpoint epoch."""

    reason = "conflict"


class UnderQuorum(SignatureError):
    reason = "under_quorum"
