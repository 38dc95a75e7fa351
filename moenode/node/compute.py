"""The node's CPU work: embedding, scoring and verification, run on worker threads.

Theory of operation: everything here is plain blocking code that the node calls through `trio.to_thread.run_sync`
(ONNX Runtime and FAISS release the GIL, so the event loop keeps serving the network meanwhile). The node holds
two models: its own encoder (what it sells, committed by model id) and the network's router model (named by the
genesis), whose vectors place a batch in the routing space shared by every node.

Verification re-executes a candidate's committed model. A candidate's `model_id` is looked up among the zoo's
models by hashing their ONNX bytes (cheap, cached); an unknown model cannot be re-executed, so it fails
verification, which is the protocol's answer to "prove it".

Every piece of work is accounted to its stage in `moenode.node.stages.STAGES` (thread CPU time).
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from moenode.core.genesis import Params
from moenode.core.messages import Payload
from moenode.node.stages import STAGES


@lru_cache(maxsize=1)
def reference_texts() -> tuple[str, ...]:
    """The shipped reference corpus (every domain's `reference` split, domains in name order)."""
    from moenode.encoders import corpus

    return tuple(it.text for d in corpus.domains() for it in corpus.split(d, "reference"))


_ids_lock = threading.Lock()
_ids: dict[str, bytes | None] = {}  # zoo name -> model id (None: not installed here), filled as names are needed


def model_name_of(model_id: bytes) -> str | None:
    """The zoo name whose bytes hash to `model_id`, or None. Names are hashed lazily, the cheap ones first, each once
    per process: a verifier meeting minilm-l6 never builds and hashes the 436 MB mpnet graph to find it."""
    from moenode.encoders import zoo
    from moenode.encoders.runtime import ModelError, model_id_of

    order = sorted(zoo.names(), key=lambda n: n == zoo.MPNET)  # the one that must be built at first use, last
    with _ids_lock:
        for name in order:
            if name not in _ids:
                try:
                    _ids[name] = model_id_of(zoo.model_bytes(name)[1])
                except ModelError:
                    _ids[name] = None  # a model whose package is not installed here
            if _ids[name] == model_id:
                return name
    return None


class Compute:
    def __init__(self, model: str, router_model: str, params: Params):
        from moenode.encoders import zoo

        self.params = params
        self.encoder = zoo.load(model)
        self.router = zoo.load(router_model)
        self.reference = list(reference_texts())

    @property
    def model_id(self) -> bytes:
        return self.encoder.model_id

    @property
    def routing_dim(self) -> int:
        return self.router.dim

    def routing_vectors(self, items: list[str]) -> np.ndarray:
        with STAGES.measure("routing_vectors"):
            return self.router.embed(items)

    def payload(self, items: list[str], shard_seed: bytes, routing: np.ndarray | None = None) -> Payload:
        """`routing`: the router's vectors of `items`, if already computed to choose the route (not computed twice)."""
        from moenode.encoders.scoring import make_payload

        return make_payload(self.encoder, self.router, items, shard_seed, self.params, self.reference,
                            STAGES.measure, routing)

    def encoder_for(self, model_id: bytes):
        from moenode.encoders import zoo

        if model_id == self.encoder.model_id:
            return self.encoder
        if model_id == self.router.model_id:
            return self.router
        name = model_name_of(model_id)
        return zoo.load(name) if name else None

    def verify(self, items: list[str], shard_seed: bytes, payload: Payload,
               sample_seed: bytes | None = None) -> tuple[bool, str]:
        """Re-execute a candidate's committed model on a sample (see `scoring.verify_payload`)."""
        from moenode.encoders.scoring import verify_payload

        with STAGES.measure("verification"):
            enc = self.encoder_for(payload.model_id)
            if enc is None:
                return False, f"model {payload.model_id.hex()[:16]} is not known here and cannot be re-executed"
            return verify_payload(enc, self.router, items, shard_seed, payload, self.params, self.reference,
                                  sample_seed)
