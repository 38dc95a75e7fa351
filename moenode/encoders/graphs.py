"""ONNX graph builders for the zoo: domain adapters composed into a base graph, and the reference adversaries.

Theory of operation. Every zoo model is a single ONNX graph, so its model id (`H("model", bytes)`) covers all of its
computation. A specialist is its base graph plus one `MatMul` by `W = I + delta` on the hidden states; because mean
pooling is linear, `mean(h) @ W == mean(h @ W)`, so the adapter acts on the pooled vector exactly as it was trained.
The adversaries are small graphs (or a re-weighted copy of a real one) built from fixed seeds. Random weights come
from numpy's PCG64 seeded by `H("adversary", name)`; with the pinned numpy the bytes, and so the model ids, are the
same on every machine. Serialisation uses `SerializeToString()` of a proto with no map fields, which is
deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from moenode.core.crypto import H
from moenode.encoders.runtime import SPECIAL_IDS, ModelError

OPSET = 17
IR_VERSION = 8


def rng_for(name: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int.from_bytes(H("adversary", name.encode()), "big")))


def _hidden_output(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    outs = list(model.graph.output)
    for o in outs:
        if o.name == "last_hidden_state":
            return o
    rank3 = [o for o in outs if len(o.type.tensor_type.shape.dim) == 3]
    if len(rank3) != 1:
        raise ModelError(f"cannot tell the hidden-state output among {[o.name for o in outs]}")
    return rank3[0]


def compose_adapter(base: bytes, w: np.ndarray) -> bytes:
    """Base graph whose only output is `last_hidden_state = hidden @ w` (w: (dim, dim') float32)."""
    model = onnx.load_from_string(base)
    hidden = _hidden_output(model)
    dim = hidden.type.tensor_type.shape.dim[2].dim_value
    if w.ndim != 2 or w.shape[0] != dim:
        raise ModelError(f"adapter of shape {w.shape} does not fit hidden size {dim}")
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w, np.float32), "moenode.adapter.weight"))
    out_name = "last_hidden_state"
    if hidden.name == out_name:  # free the name for the adapted output
        for node in g.node:
            node.output[:] = ["moenode.base_hidden" if o == out_name else o for o in node.output]
            node.input[:] = ["moenode.base_hidden" if i == out_name else i for i in node.input]
        src = "moenode.base_hidden"
    else:
        src = hidden.name
    g.node.append(helper.make_node("MatMul", [src, "moenode.adapter.weight"], [out_name], name="moenode.adapter"))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", "sequence", w.shape[1]]))
    return model.SerializeToString()


def _inputs() -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
            for n in ("input_ids", "attention_mask")]


def empty_model(name: str, dim: int, doc: str, nodes: Sequence[onnx.NodeProto] = ()) -> onnx.ModelProto:
    """A zoo graph's frame: `input_ids`/`attention_mask` in, `last_hidden_state [b, s, dim]` out, our opset and IR."""
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", dim])
    graph = helper.make_graph(list(nodes), name, _inputs(), [out], doc_string=doc)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="moenode")
    model.ir_version = IR_VERSION
    return model


class LargeModel:
    """A zoo graph too large to pass through the protobuf serialiser: weights stay in numpy until `write`.

    Serialising a 400 MB proto with upb peaks near four times its size, and `make_graph`/`make_model` copy every
    initializer. Here each initializer is a placeholder in the proto (name, type, dims, empty raw_data) plus a
    function that yields its array; `write` emits exactly the bytes `SerializeToString()` would give for the full
    model, streaming each array straight into the output, so the peak is the source weights plus one array.
    """

    def __init__(self, name: str, dim: int, doc: str):
        self.model = empty_model(name, dim, doc)
        self._arrays: dict[str, Callable[[], np.ndarray]] = {}

    def const(self, name: str, arr: np.ndarray | None = None, *, make: Callable[[], np.ndarray] | None = None,
              shape: Sequence[int] = ()) -> str:
        """An initializer: `arr` now, or `make()` (float32 of `shape`) called when the model is written."""
        if name in self._arrays:
            raise ValueError(f"initializer {name!r} defined twice")
        if arr is not None:
            dtype, shape, self._arrays[name] = arr.dtype, arr.shape, lambda: arr
        elif make is not None:
            dtype, self._arrays[name] = np.dtype(np.float32), make
        else:
            raise ValueError("const needs an array or a function that makes one")
        t = self.model.graph.initializer.add()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        t.dims.extend(int(d) for d in shape)
        t.raw_data = b""
        return name

    def node(self, op: str, inputs: Sequence[str], output: str | Sequence[str], **attrs) -> str:
        """Append a node named after its (first) output; returns that output."""
        outputs = [output] if isinstance(output, str) else list(output)
        self.model.graph.node.append(helper.make_node(op, list(inputs), outputs, name=outputs[0], **attrs))
        return outputs[0]

    def write(self, out: BinaryIO) -> int:
        """Write the model's bytes to `out`; returns how many."""
        inits = iter(self.model.graph.initializer)
        graph: list = []
        for num, header, payload in _fields(self.model.graph.SerializeToString()):
            if num != 5:  # GraphProto.initializer
                graph.append(header + payload)
                continue
            t = next(inits)
            if not payload.endswith(b"\x4a\x00"):  # raw_data (field 9) is the last field of a TensorProto
                raise AssertionError(f"unexpected placeholder encoding for {t.name}")
            size = int(np.prod(t.dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            head = payload[:-1] + _varint(size)
            graph += [b"\x2a" + _varint(len(head) + size) + head, (size, self._arrays[t.name])]
        top: list = []
        for num, header, payload in _fields(self.model.SerializeToString()):
            if num == 7:  # ModelProto.graph
                top += [b"\x3a" + _varint(sum(_length(p) for p in graph))] + graph
            else:
                top.append(header + payload)
        written = 0
        for p in top:
            if isinstance(p, bytes):
                written += out.write(p)
                continue
            size, make = p
            arr = np.ascontiguousarray(make())
            arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
            if arr.nbytes != size:
                raise AssertionError(f"initializer array of {arr.nbytes} bytes where {size} were declared")
            written += out.write(arr.data.cast("B"))
        return written


def _length(piece) -> int:
    return len(piece) if isinstance(piece, bytes) else piece[0]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return n, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, bytes, bytes]]:
    """The top-level fields of a serialised message, in order: (number, key and length bytes, payload)."""
    out, i = [], 0
    while i < len(buf):
        start = i
        key, i = _read_varint(buf, i)
        wire = key & 7
        if wire == 0:
            _, i = _read_varint(buf, i)
            out.append((key >> 3, buf[start:i], b""))
        elif wire == 2:
            n, j = _read_varint(buf, i)
            out.append((key >> 3, buf[start:j], buf[j: j + n]))
            i = j + n
        else:
            raise ValueError(f"unexpected wire type {wire} in a model proto")
    return out


def _model(name: str, nodes: list, inits: list, dim: int, doc: str) -> bytes:
    model = empty_model(name, dim, doc, nodes)
    model.graph.initializer.extend(inits)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def signed_permutation(dim: int, name: str) -> np.ndarray:
    """An exactly orthogonal float32 matrix: a seeded permutation of the axes with seeded signs. Multiplying by it
    moves every value without rounding, so every dot product, and every cosine, is the input's."""
    rng = rng_for(name)
    w = np.zeros((dim, dim), np.float32)
    w[np.arange(dim), rng.permutation(dim)] = rng.choice(np.array([-1.0, 1.0], np.float32), dim)
    return w


def word_table(base: bytes) -> np.ndarray:
    """The input word-embedding table of a BERT-style graph (the largest [vocab, dim] initializer)."""
    model = onnx.load_from_string(base)
    tables = [t for t in model.graph.initializer if len(t.dims) == 2 and t.dims[0] >= 30_000]
    if not tables:
        raise ModelError("no word-embedding table in the base graph")
    return numpy_helper.to_array(max(tables, key=lambda t: t.dims[0])).astype(np.float32)


def bag_of_tokens(base: bytes) -> bytes:
    """ADVERSARY: each token's input embedding, special tokens zeroed; mean pooling makes it a bag of words."""
    table = word_table(base).copy()
    table[list(SPECIAL_IDS)] = 0.0
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"], axis=0)]
    return _model("adv-bag-of-tokens", nodes, [numpy_helper.from_array(table, "table")], table.shape[1],
                  "ADVERSARY: bag of input token embeddings, special tokens zeroed.")


def static_router(base: bytes, reference: Sequence[Sequence[int]], name: str) -> bytes:
    """A router that costs a table lookup: each token's input embedding, special tokens zeroed, minus `mu`, the mean
    of the pooled vectors of the reference corpus (`reference`: its token ids with [CLS]/[SEP]). Mean pooling is
    linear, so the pooled output is the bag of words minus `mu`. Without the centring, the common tokens every text
    shares make any two texts look alike (median cosine 0.61 between domains, against 0.10 for minilm-l3), and a
    routing threshold on cosine would admit everything. `mu` is rounded to 1e-4 so its bytes, and the model id,
    do not depend on the summation order of a machine's numpy."""
    table = word_table(base).copy()
    table[list(SPECIAL_IDS)] = 0.0
    pooled = np.stack([table[list(ids)].astype(np.float64).mean(0) for ids in reference])
    mu = np.round(pooled.mean(0), 4)
    table = (table.astype(np.float64) - mu).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"], axis=0)]
    return _model(name, nodes, [numpy_helper.from_array(table, "table")], table.shape[1],
                  "Router: bag of input token embeddings centred on the reference corpus.")


def random_init(base: bytes, name: str = "adv-random-init") -> bytes:
    """ADVERSARY: the base transformer with every weight redrawn from N(0, 0.02), LayerNorm gamma 1, biases 0."""
    model = onnx.load_from_string(base)
    rng = rng_for(name)
    for t in model.graph.initializer:
        if t.data_type != TensorProto.FLOAT:
            continue
        shape = tuple(t.dims)
        if t.name.endswith("LayerNorm.weight"):
            arr = np.ones(shape, np.float32)
        elif t.name.endswith("bias"):
            arr = np.zeros(shape, np.float32)
        else:
            arr = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).astype(np.float32)
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
    model.graph.doc_string = "ADVERSARY: random-init transformer."
    return model.SerializeToString()


def constant(dim: int, value: float | None, name: str) -> bytes:
    """ADVERSARY: the same vector for every token (value None: a fixed random direction; 0.0: all zeros)."""
    vec = rng_for(name).standard_normal(dim).astype(np.float32) if value is None else np.full(dim, value, np.float32)
    inits = [numpy_helper.from_array(vec.reshape(1, 1, dim), "vec"),
             numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["idsf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["idsf", "ax2"], ["ids3"]),
        helper.make_node("Mul", ["ids3", "zero"], ["zeros3"]),
        helper.make_node("Add", ["zeros3", "vec"], ["last_hidden_state"]),
    ]
    inits.append(numpy_helper.from_array(np.array([2], np.int64), "ax2"))
    return _model(name, nodes, inits, dim, f"ADVERSARY: constant output ({'random' if value is None else value}).")


def noise(dim: int, name: str = "adv-noise") -> bytes:
    """ADVERSARY: a pseudo-random vector per distinct input, the same at every position.

    Token features sin(id * f + p) are summed over the mask and pushed through sin(s @ R) with a large-gain R, so any
    change of a token gives an unrelated vector: deterministic (it re-executes) but carrying no meaning.
    """
    rng = rng_for(name)
    f = rng.uniform(0.001, 0.1, dim).astype(np.float32)
    p = rng.uniform(0.0, 2 * np.pi, dim).astype(np.float32)
    r = (rng.standard_normal((dim, dim)) * 10.0).astype(np.float32)
    inits = [numpy_helper.from_array(f.reshape(1, 1, dim), "freq"), numpy_helper.from_array(p.reshape(1, 1, dim), "phase"),
             numpy_helper.from_array(r, "mix"), numpy_helper.from_array(np.array([2], np.int64), "ax2"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["idsf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["idsf", "ax2"], ["ids3"]),
        helper.make_node("Mul", ["ids3", "freq"], ["arg"]),
        helper.make_node("Add", ["arg", "phase"], ["arg2"]),
        helper.make_node("Sin", ["arg2"], ["feat"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "ax2"], ["mask3"]),
        helper.make_node("Mul", ["feat", "mask3"], ["featm"]),
        helper.make_node("ReduceSum", ["featm", "ax1"], ["summed"], keepdims=1),  # [b, 1, dim]
        helper.make_node("MatMul", ["summed", "mix"], ["mixed"]),
        helper.make_node("Sin", ["mixed"], ["vec"]),
        helper.make_node("Mul", ["featm", "zero"], ["zeros3"]),
        helper.make_node("Add", ["zeros3", "vec"], ["last_hidden_state"]),  # broadcast to every position
    ]
    inits.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    return _model(name, nodes, inits, dim, "ADVERSARY: pseudo-random vector per input.")
