"""The winner index as every node keeps it: routing vectors of certified items with (producer, item loss).

Theory of operation: a ring buffer of the most recent `cap` entries (the protocol's size cap; oldest out first),
searched by inner product over unit vectors with FAISS's exact `IndexFlatIP`, as the daemon does. The FAISS index is
rebuilt lazily from the buffer when it changed, so many searches between certificates cost one rebuild. `lists`
turns a search into the `[(producer, item_loss_micro, cos_micro)]` lists that `moenode.core.routing` takes.
"""

from typing import Any

import numpy as np


class WinnerIndex:
    def __init__(self, dim: int, cap: int):
        self.dim, self.cap = dim, cap
        self.vec = np.zeros((cap, dim), dtype=np.float32)
        self.producer = np.full(cap, -1, dtype=np.int64)
        self.loss = np.zeros(cap, dtype=np.int64)
        self.n = 0  # entries ever added
        self._faiss: Any = None  # a faiss.IndexFlatIP over vec[:len], rebuilt when dirty
        self._dirty = True

    def __len__(self) -> int:
        return min(self.n, self.cap)

    def add(self, vectors: np.ndarray, producers: np.ndarray, losses: np.ndarray) -> None:
        m = len(vectors)
        if m == 0:
            return
        pos = (self.n + np.arange(m)) % self.cap
        self.vec[pos] = vectors
        self.producer[pos] = producers
        self.loss[pos] = losses
        self.n += m
        self._dirty = True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(producers, losses, cos_micro), each (q, k); producer -1 where there is no entry."""
        import faiss

        q = np.ascontiguousarray(queries, dtype=np.float32)
        size = len(self)
        if size == 0:
            shape = (len(q), k)
            return np.full(shape, -1, np.int64), np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        if self._dirty or self._faiss is None:
            self._faiss = faiss.IndexFlatIP(self.dim)
            self._faiss.add(self.vec[:size])
            self._dirty = False
        sims, ids = self._faiss.search(q, min(k, size))
        ok = ids >= 0
        safe = np.where(ok, ids, 0)
        prod = np.where(ok, self.producer[safe], -1)
        loss = np.where(ok, self.loss[safe], 0)
        cos = np.where(ok, np.rint(np.clip(sims, -1, 1) * 1e6), 0).astype(np.int64)
        return prod, loss, cos

    @staticmethod
    def lists(prod: np.ndarray, loss: np.ndarray, cos: np.ndarray, keys: list[bytes]) -> list[list[tuple]]:
        """Per query row, the routing rule's neighbour list with producers as public keys."""
        out = []
        for p_row, l_row, c_row in zip(prod.tolist(), loss.tolist(), cos.tolist()):
            out.append([(keys[p], l, c) for p, l, c in zip(p_row, l_row, c_row) if p >= 0])
        return out
