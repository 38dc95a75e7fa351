"""The winner index: who won which region of the routing space, learnt from every shard certificate.

Theory of operation: each certified round adds one entry per item: the item's unit routing vector (the router
model's embedding, float16 in the certificate) with the round's producer, that item's winning loss (micro-units),
the round's epoch and its vector space. Routing is per space: `neighbours(..., space=S)` answers only from rounds
of space S (it searches deeper and filters, so a node serving several spaces keeps one index). Lookups are exact inner-product search in FAISS (`IndexIDMap2(IndexFlatIP)`): for unit
vectors the inner product is the cosine. `neighbours` answers what `moenode.core.routing` consumes: per query
item, a list of `(producer, item_loss_micro, cos_micro)` with cosine >= `min_cos_micro`, best first.

The index forgets: `trim(epoch)` drops entries older than `epochs` epochs and then the oldest entries beyond
`max_entries` (ids grow with insertion, so the smallest ids are the oldest). Each certificate is added once
(`seen` holds certificate ids).

Persistence: `save()` writes one `.npz` snapshot (the serialized FAISS index, ids, metadata, seen certificates)
to a temporary file and renames it over `index/winners.npz`, so a crash leaves the old snapshot or the new one,
never half of either. `open()` reloads it; a corrupt or foreign-dimension snapshot is set aside (renamed with a
`.bad` suffix) and the index starts empty, because it is a cache of public certificates that sync can rebuild.

Thread safety: FAISS releases the GIL and the node calls this from worker threads, so every public method takes
one lock. Nothing here is consensus-critical: two nodes may hold slightly different indexes.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moenode.core.messages import Payload, Report
from moenode.core.spaces import DEFAULT_SPACE

log = logging.getLogger("moenode.index")

SNAPSHOT = "winners.npz"
MAX_SEEN = 100_000


def routing_vectors(of: Report | Payload) -> np.ndarray:
    """The routing vectors a report or payload carries (float16 on the wire), one row per item, as float32."""
    n = len(of.item_losses)
    return np.frombuffer(of.routing, "<f2").reshape(n, -1).astype(np.float32)


@dataclass(frozen=True)
class Entry:
    producer: bytes
    loss_micro: int
    epoch: int
    space: str = DEFAULT_SPACE


class WinnerIndex:
    def __init__(self, dim: int, *, epochs: int = 64, max_entries: int = 200_000, directory: Path | None = None):
        import faiss

        if dim < 1:
            raise ValueError("dim must be positive")
        self.dim, self.epochs, self.max_entries = dim, epochs, max_entries
        self.directory = Path(directory) if directory is not None else None
        self._lock = threading.Lock()
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))  # faiss's stubs type ids as IDSelector
        self._meta: dict[int, Entry] = {}
        self._seen: dict[bytes, None] = {}  # insertion-ordered set of certificate ids
        self._next_id = 0
        self.dirty = False

    # building ------------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._meta)

    def has(self, cert_id: bytes) -> bool:
        return cert_id in self._seen

    def add(self, cert_id: bytes, vectors: np.ndarray, producer: bytes, losses: list[int] | tuple[int, ...],
            epoch: int, space: str = DEFAULT_SPACE) -> int:
        """Add one certificate's items; returns how many were added (0 if the certificate was seen before)."""
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim or v.shape[0] != len(losses):
            raise ValueError(f"expected ({len(losses)}, {self.dim}) routing vectors, got {v.shape}")
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        keep = (norms[:, 0] > 1e-6) & np.isfinite(v).all(axis=1)
        v = (v / np.maximum(norms, 1e-12))[keep].astype(np.float32)
        kept_losses = [int(x) for x, k in zip(losses, keep) if k]
        with self._lock:
            if cert_id in self._seen:
                return 0
            self._seen[cert_id] = None
            while len(self._seen) > MAX_SEEN:
                self._seen.pop(next(iter(self._seen)))
            ids = np.arange(self._next_id, self._next_id + len(kept_losses), dtype=np.int64)
            self._next_id += len(kept_losses)
            if len(ids):
                self._index.add_with_ids(v, ids)
                for i, loss in zip(ids.tolist(), kept_losses):
                    self._meta[i] = Entry(producer, loss, epoch, space)
            self.dirty = True
            return len(ids)

    def trim(self, current_epoch: int) -> int:
        """Forget entries older than `epochs` epochs, then the oldest beyond `max_entries`. Returns how many."""
        with self._lock:
            floor = current_epoch - self.epochs + 1
            drop = [i for i, e in self._meta.items() if e.epoch < floor]
            excess = len(self._meta) - len(drop) - self.max_entries
            if excess > 0:
                dropped = set(drop)
                drop += [i for i in sorted(self._meta) if i not in dropped][:excess]
            if drop:
                self._index.remove_ids(np.asarray(sorted(drop), dtype=np.int64))
                for i in drop:
                    del self._meta[i]
                self.dirty = True
            return len(drop)

    # lookups -------------------------------------------------------------------------------------------------------
    def neighbours(self, vectors: np.ndarray, k: int, min_cos_micro: int, space: str | None = None
                   ) -> list[list[tuple[bytes, int, int]]]:
        """Per query row: up to k `(producer, item_loss_micro, cos_micro)` with cosine >= min_cos_micro/1e6, from
        rounds of `space` only (None: any)."""
        q = np.asarray(vectors, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) query vectors, got {q.shape}")
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        with self._lock:
            if not self._meta or len(q) == 0:
                return [[] for _ in range(len(q))]
            depth = k if space is None or all(e.space == space for e in self._meta.values()) else 4 * k
            sims, ids = self._index.search(np.ascontiguousarray(q, dtype=np.float32), min(depth, len(self._meta)))
            out: list[list[tuple[bytes, int, int]]] = []
            for row_s, row_i in zip(sims, ids):
                hits = []
                for s, i in zip(row_s.tolist(), row_i.tolist()):
                    if i < 0:
                        continue
                    cos = int(round(min(1.0, s) * 1_000_000))
                    e = self._meta[i]
                    if cos >= min_cos_micro and (space is None or e.space == space):
                        hits.append((e.producer, e.loss_micro, cos))
                out.append(hits[:k])
            return out

    def producers(self) -> dict[bytes, int]:
        """Entries per producer (for status)."""
        with self._lock:
            out: dict[bytes, int] = {}
            for e in self._meta.values():
                out[e.producer] = out.get(e.producer, 0) + 1
            return out

    # persistence ---------------------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        """Snapshot to `directory/winners.npz` atomically. Returns the path (None without a directory)."""
        import faiss

        if self.directory is None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / SNAPSHOT
        tmp = self.directory / f".{SNAPSHOT}.{os.getpid()}.tmp"
        with self._lock:
            ids = np.asarray(sorted(self._meta), dtype=np.int64)
            meta = [self._meta[i] for i in ids.tolist()]
            arrays: dict[str, Any] = {
                "dim": np.asarray([self.dim], np.int64),
                "next_id": np.asarray([self._next_id], np.int64),
                "faiss": faiss.serialize_index(self._index),
                "ids": ids,
                "producers": np.frombuffer(b"".join(e.producer for e in meta), np.uint8).reshape(len(meta), 32)
                if meta else np.zeros((0, 32), np.uint8),
                "losses": np.asarray([e.loss_micro for e in meta], np.int64),
                "epochs": np.asarray([e.epoch for e in meta], np.int64),
                "spaces": np.asarray([e.space for e in meta], dtype="U32"),
                "seen": np.frombuffer(b"".join(self._seen), np.uint8).reshape(len(self._seen), 32)
                if self._seen else np.zeros((0, 32), np.uint8),
            }
            self.dirty = False
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def open(cls, directory: Path, dim: int, *, epochs: int = 64, max_entries: int = 200_000) -> "WinnerIndex":
        """Load the snapshot in `directory` if there is a usable one, else an empty index there."""
        import faiss

        idx = cls(dim, epochs=epochs, max_entries=max_entries, directory=directory)
        path = Path(directory) / SNAPSHOT
        if not path.exists():
            return idx
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["dim"][0]) != dim:
                    raise ValueError(f"snapshot dimension {int(z['dim'][0])}, the router's is {dim}")
                index = faiss.deserialize_index(z["faiss"])
                ids, producers = z["ids"].tolist(), z["producers"]
                losses, epochs_, seen = z["losses"].tolist(), z["epochs"].tolist(), z["seen"]
                spaces = z["spaces"].tolist() if "spaces" in z.files else [DEFAULT_SPACE] * len(ids)
                next_id = int(z["next_id"][0])
            if index.ntotal != len(ids) or index.d != dim:
                raise ValueError("the FAISS index and its metadata disagree")
        except Exception as e:  # a damaged cache: keep it for inspection and start afresh
            bad = path.with_suffix(".npz.bad")
            os.replace(path, bad)
            log.warning("winner index snapshot %s unusable (%s); moved to %s, starting empty", path, e, bad)
            return idx
        idx._index = index
        idx._meta = {i: Entry(bytes(p), int(l), int(ep), str(s))
                     for i, p, l, ep, s in zip(ids, producers, losses, epochs_, spaces)}
        idx._seen = {bytes(s): None for s in seen}
        idx._next_id = next_id
        return idx
