import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moenode.core.codec import MAX_DEPTH, canonical, decode
from moenode.core.errors import DecodeError, ProtocolError, TooLarge
from moenode.testing.fuzzkit import SHAPES, dense, measure, values_in

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.binary(max_size=64) | st.text(max_size=32),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@given(values)
def test_roundtrip(v):
    data = canonical(v)
    assert decode(data) == v
    assert canonical(decode(data)) == data


@given(st.dictionaries(st.text(max_size=6), st.integers(0, 9), min_size=2, max_size=8))
def test_map_order_does_not_matter(d):
    shuffled = dict(reversed(list(d.items())))
    assert canonical(d) == canonical(shuffled)


def test_keys_sorted_by_utf8_bytes():
    # "é" (c3 a9) sorts after "z" (7a) by bytes
    assert list(decode(canonical({"é": 1, "z": 2, "a": 3}))) == ["a", "z", "é"]


def test_tuples_encode_as_lists():
    assert canonical((1, 2)) == canonical([1, 2])


@pytest.mark.parametrize("bad", [1.5, float("nan"), {"x": [0.0]}, {1: 2}, {b"k": 1}, object(), 1 << 64, -(1 << 63) - 1])
def test_rejects_unencodable(bad):
    with pytest.raises(DecodeError):
        canonical(bad)


def test_rejects_too_deep():
    v: list = []
    for _ in range(MAX_DEPTH + 2):
        v = [v]
    with pytest.raises(DecodeError, match="deeper"):
        canonical(v)


def test_decode_rejects_non_canonical_forms():
    # unsorted keys
    with pytest.raises(DecodeError, match="canonical"):
        decode(msgpack.packb({"b": 1, "a": 2}))
    # a float
    with pytest.raises(DecodeError):
        decode(msgpack.packb(1.0))
    # an int in a longer-than-shortest form (uint16 holding 1)
    with pytest.raises(DecodeError, match="canonical"):
        decode(b"\xcd\x00\x01")
    # str written as bin is a different value, and raw bytes in a str slot are invalid utf-8
    with pytest.raises(DecodeError):
        decode(b"\xa2\xff\xfe")
    # trailing bytes
    with pytest.raises(DecodeError):
        decode(canonical(1) + b"\x00")
    # non-str map key
    with pytest.raises(DecodeError):
        decode(msgpack.packb({1: 2}))


def test_decode_size_cap():
    with pytest.raises(TooLarge):
        decode(canonical(b"x" * 100), max_bytes=50)


@given(st.binary(max_size=200))
def test_decode_untrusted_bytes_only_raises_protocol_errors(data):
    try:
        decode(data)
    except ProtocolError:
        pass


def test_lone_surrogate_is_refused():
    with pytest.raises(DecodeError, match="UTF-8"):
        canonical({"k": "\ud800"})


# the value budget ---------------------------------------------------------------------------------------------
def test_the_value_budget_counts_every_value_once():
    v = {"a": [1, 2, [3]], "b": {"c": None}, "d": b"x" * 100}
    assert values_in(v) == 13
    assert decode(canonical(v), max_values=13) == v
    with pytest.raises(TooLarge, match="more than 12 values"):
        decode(canonical(v), max_values=12)
    with pytest.raises(TooLarge):
        decode(canonical(list(range(20))), max_values=20)  # one container longer than the budget


@pytest.mark.parametrize("shape", SHAPES)
def test_container_dense_input_costs_a_small_multiple_of_its_size(shape):
    """4 MiB of about one value per byte took 530 MB and 6 s of CPU to decode, all before any schema check (one
    12 MiB envelope froze a node for 40 s). Counting values while unpacking stops it at the budget."""
    data = dense(4 << 20, shape)
    blob = canonical(bytes(len(data)))  # a legitimate value of the same size, decoded in the same run
    base = measure(lambda: decode(blob, max_bytes=16 << 20))
    cost = measure(lambda: decode(data, max_bytes=16 << 20))
    assert isinstance(cost.result, TooLarge), cost.result
    assert cost.peak_bytes <= 4 * len(data), f"{cost.peak_bytes / len(data):.0f} bytes of memory per input byte"
    assert cost.cpu_s <= 10 * base.cpu_s + 0.1, f"{cost.cpu_s:.3f} s against {base.cpu_s:.3f} s for a blob"


def test_a_budget_large_enough_decodes_dense_input_and_costs_what_it_holds():
    data = dense(1 << 16, "arrays")
    n = values_in(decode(data, max_bytes=1 << 20, max_values=1 << 20))
    assert decode(data, max_bytes=1 << 20, max_values=n) is not None
    with pytest.raises(TooLarge):
        decode(data, max_bytes=1 << 20, max_values=n - 1)
