"""The node's CPU work: embedding, scoring and verification, run on worker threads.

Theory of operation: everything here is plain blocking code that the node calls through `trio.to_thread.run_sync`
(ONNX Runtime and FAISS release the GIL, so the event loop keeps serving the network meanwhile). The node holds
two models: its own encoder (what it sells, committed by model id) and the network's router model (named by the
genesis), whose vectors place a batch in the routing space shared by every node.

Verification re-executes a candidate's committed model. A candidate's `model_id` is looked up among the zoo's
models by hashing their ONNX bytes (cheap, cached); an unknown model cannot be re-executed, so it fails
verification, which is the protocol's answer to "prove it".
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from moenode.core.genesis import Params
from moenode.core.messages import Payload


@lru_cache(maxsize=1)
def reference_texts() -> tuple[str, ...]:
    """The shipped reference corpus (every domain's `reference` split, domains in name order)."""
    from moenode.encoders import corpus

    return tuple(it.text for d in corpus.domains() for it in corpus.split(d, "reference"))


class Compute:
    def __init__(self, model: str, router_model: str, params: Params):
        from moenode.encoders import zoo

        self.params = params
        self.encoder = zoo.load(model)
        self.router = zoo.load(router_model)
        self.reference = list(reference_texts())
        self._by_id_lock = threading.Lock()
        self._by_id: dict[bytes, str] | None = None

    @property
    def model_id(self) -> bytes:
        return self.encoder.model_id

    @property
    def routing_dim(self) -> int:
        return self.router.dim

    def routing_vectors(self, items: list[str]) -> np.ndarray:
        return self.router.embed(items)

    def payload(self, items: list[str], shard_seed: bytes) -> Payload:
        from moenode.encoders.scoring import make_payload

        return make_payload(self.encoder, self.router, items, shard_seed, self.params, self.reference)

    def _model_names(self) -> dict[bytes, str]:
        from moenode.encoders import zoo
        from moenode.encoders.runtime import ModelError, model_id_of

        with self._by_id_lock:
            if self._by_id is None:
                table: dict[bytes, str] = {}
                for name in zoo.names():
                    try:
                        table[model_id_of(zoo.model_bytes(name)[1])] = name
                    except ModelError:
                        continue  # a model whose package is not installed here
                self._by_id = table
            return self._by_id

    def encoder_for(self, model_id: bytes):
        from moenode.encoders import zoo

        if model_id == self.encoder.model_id:
            return self.encoder
        if model_id == self.router.model_id:
            return self.router
        name = self._model_names().get(model_id)
        return zoo.load(name) if name else None

    def verify(self, items: list[str], shard_seed: bytes, payload: Payload,
               sample_seed: bytes | None = None) -> tuple[bool, str]:
        """Re-execute a candidate's committed model on a sample (see `scoring.verify_payload`)."""
        from moenode.encoders.scoring import verify_payload

        enc = self.encoder_for(payload.model_id)
        if enc is None:
            return False, f"model {payload.model_id.hex()[:16]} is not known here and cannot be re-executed"
        return verify_payload(enc, self.router, items, shard_seed, payload, self.params, self.reference,
                              sample_seed)
