"""Two error families.

`ProtocolError` and its subclasses describe what a *peer* sent: recoverable, counted, logged with the peer id, and
sometimes turned into evidence. Decoding untrusted bytes raises nothing else. A bug in our own calls raises a plain
exception (ValueError, TypeError, RuntimeError) and should fail loudly.
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
