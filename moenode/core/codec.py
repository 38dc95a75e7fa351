"""Canonical msgpack: the one byte encoding of everything that is hashed or signed.

Rules (protocol/SPEC.md section 1): maps have `str` keys sorted by their UTF-8 bytes; values are int, bytes, str,
bool, None, list or map, each in msgpack's shortest form; tuples encode as lists. No floats anywhere. `decode` is
strict: it accepts only bytes that `canonical` would have written, so one value has exactly one encoding and a
signature can never be replayed under a second spelling.

Untrusted bytes cost at most a small constant factor of their size. `decode` counts values (containers, their
members and map keys) while msgpack unpacks, and stops as soon as they pass the caller's budget. Without that
count, a container costs about 145 bytes of memory per wire byte (an empty array is one byte on the wire and a list
object in memory), and 12 MiB of empty arrays took 1.7 GB and 22 s of CPU. Each message type derives its budget
from its schema (`moenode.core.messages`); `DEFAULT_MAX_VALUES` covers the small untyped structures (frame headers,
page envelopes). Within a budget, memory is the input's bytes about three times over (the input, the decoded
strings and the re-encoding) plus a bounded number of objects.
"""

from collections.abc import Mapping
from typing import Any

import msgpack

from moenode.core.errors import DecodeError, TooLarge

MAX_DEPTH = 16
DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_VALUES = 4096
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1


_SCALARS = frozenset((str, bytes, bool, type(None)))


def _normalise(obj: Any, depth: int) -> Any:
    t = type(obj)
    if t in _SCALARS:
        return obj
    if t is int:
        if not INT_MIN <= obj <= INT_MAX:
            raise DecodeError(f"integer {obj} outside the msgpack range")
        return obj
    if depth >= MAX_DEPTH:
        raise DecodeError(f"nesting deeper than {MAX_DEPTH}")
    # str, bytes, bool and None members are kept inline rather than through one call each (the same result)
    if t is list or t is tuple:
        return [v if type(v) in _SCALARS else _normalise(v, depth + 1) for v in obj]
    if t is dict or isinstance(obj, Mapping):
        for k in obj:
            if type(k) is not str:
                raise DecodeError(f"map key {k!r} is not a str")
        # sorting str by code point is sorting by UTF-8 bytes: UTF-8 preserves code point order
        out = {}
        for k in sorted(obj):
            v = obj[k]
            out[k] = v if type(v) in _SCALARS else _normalise(v, depth + 1)
        return out
    if isinstance(obj, float):
        raise DecodeError("floats are not allowed in canonical encoding (use integer micro-units)")
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, int):  # int subclasses other than bool (IntEnum): encode the plain value
        return _normalise(int(obj), depth)
    if isinstance(obj, (list, tuple)):
        return [_normalise(v, depth + 1) for v in obj]
    raise DecodeError(f"type {t.__name__} is not encodable")


def canonical(obj: Any) -> bytes:
    """The canonical msgpack bytes of `obj`. Raises DecodeError for values outside the allowed types."""
    try:
        out: bytes = msgpack.packb(_normalise(obj, 0), use_bin_type=True)
        return out
    except UnicodeEncodeError:
        raise DecodeError("a string is not valid UTF-8 (lone surrogate)") from None


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, max_values: int = DEFAULT_MAX_VALUES) -> Any:
    """Decode untrusted canonical bytes holding at most `max_values` values. Raises only DecodeError (TooLarge for
    the size and for too many values)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("expected bytes")
    if len(data) > max_bytes:
        raise TooLarge(f"{len(data)} bytes exceeds the cap of {max_bytes}")
    data = bytes(data)
    budget = _Budget(max_values)
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            list_hook=budget.array,
            object_hook=budget.map,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=max_values,
            max_map_len=max_values,
            max_ext_len=0,
        )
    except _OverBudget:
        raise TooLarge(f"more than {max_values} values") from None
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        if "exceeds max_array_len" in str(e) or "exceeds max_map_len" in str(e):  # one container past the budget
            raise TooLarge(f"more than {max_values} values") from None
        raise DecodeError(f"not valid msgpack: {e}") from None
    except RecursionError:
        raise DecodeError("nesting too deep") from None
    try:
        again = canonical(obj)
    except RecursionError:
        raise DecodeError("nesting too deep") from None
    if again != data:
        raise DecodeError("not in canonical form (key order, shortest encoding or a float)")
    return obj


class _OverBudget(Exception):
    pass


class _Budget:
    """Counts values as msgpack completes each container (its members, and a map's keys; the top value counts
    itself), and stops the unpacking once they pass the budget. A container is counted as soon as it is complete,
    and none may be longer than the budget (msgpack's own length limits), so at most about twice the budget is ever
    built."""

    __slots__ = ("left",)

    def __init__(self, budget: int):
        self.left = budget - 1

    def array(self, v: list[Any]) -> list[Any]:
        self.left -= len(v)
        if self.left < 0:
            raise _OverBudget
        return v

    def map(self, v: dict[Any, Any]) -> dict[Any, Any]:
        self.left -= 2 * len(v)
        if self.left < 0:
            raise _OverBudget
        return v
