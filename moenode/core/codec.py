"""Canonical msgpack: the one byte encoding of everything that is hashed or signed.

Rules (protocol/SPEC.md section 1): maps have `str` keys sorted by their UTF-8 bytes; values are int, bytes, str,
bool, None, list or map, each in msgpack's shortest form; tuples encode as lists. No floats anywhere. `decode` is
strict: it accepts only bytes that `canonical` would have written, so one value has exactly one encoding and a
signature can never be replayed under a second spelling.
"""

from collections.abc import Mapping
from typing import Any

import msgpack

from moenode.core.errors import DecodeError, TooLarge

MAX_DEPTH = 16
DEFAULT_MAX_BYTES = 1 << 20
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
        return msgpack.packb(_normalise(obj, 0), use_bin_type=True)
    except UnicodeEncodeError:
        raise DecodeError("a string is not valid UTF-8 (lone surrogate)") from None


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode untrusted canonical bytes. Raises only DecodeError (TooLarge for size)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("expected bytes")
    if len(data) > max_bytes:
        raise TooLarge(f"{len(data)} bytes exceeds the cap of {max_bytes}")
    try:
        obj = msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=max_bytes,
            max_map_len=max_bytes,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise DecodeError(f"not valid msgpack: {e}") from None
    except RecursionError:
        raise DecodeError("nesting too deep") from None
    try:
        again = canonical(obj)
    except RecursionError:
        raise DecodeError("nesting too deep") from None
    if again != bytes(data):
        raise DecodeError("not in canonical form (key order, shortest encoding or a float)")
    return obj
