"""The shipped reference corpus: sizes, labels, token bounds, splits and manifest integrity."""

import collections
import hashlib
import json

import pytest
from tokenizers import Tokenizer

from moenode import corpus
from moenode.core.codec import canonical
from moenode.core.crypto import H


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(corpus.bert_tokenizer_json()))
    tok.no_truncation()
    tok.no_padding()
    return tok


def test_at_least_five_domains_each_over_300_items():
    names = corpus.domains()
    assert len(names) >= 5
    for name in names:
        items = corpus.load(name)
        assert len(items) > 300, name
        assert all(item.domain == name for item in items)
    assert len(corpus.load()) == sum(len(corpus.load(n)) for n in names)


def test_items_are_labelled_unique_and_nonempty():
    items = corpus.load()
    assert len({item.id for item in items}) == len(items)
    for item in items:
        assert item.id.startswith(item.domain + "/")
        assert item.source.strip() and item.text.strip()
    for name in corpus.domains():  # no exact duplicates inside a domain
        texts = [item.text for item in corpus.load(name)]
        assert len(set(texts)) == len(texts), name


def test_every_item_fits_one_encoder_window(tokenizer):
    texts = [item.text for item in corpus.load()]
    lengths = [len(enc.ids) for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]
    bad = [(t[:60], n) for t, n in zip(texts, lengths) if not corpus.MIN_TOKENS <= n <= corpus.MAX_TOKENS]
    assert not bad, bad[:5]


def test_sources_are_shared_so_same_source_retrieval_means_something():
    for name in corpus.domains():
        per_source = collections.Counter(item.source for item in corpus.load(name))
        assert min(per_source.values()) >= 2, name
        assert max(per_source.values()) <= 4, name
        assert len(per_source) >= 100, name


def test_splits_are_disjoint_cover_everything_and_roughly_sized():
    for name in corpus.domains():
        items = corpus.load(name)
        parts = {p: {i.id for i in corpus.split(name, p)} for p in corpus.PARTS}
        assert parts["eval"].isdisjoint(parts["reference"])
        assert parts["eval"].isdisjoint(parts["adapter"])
        assert parts["reference"].isdisjoint(parts["adapter"])
        assert set().union(*parts.values()) == {i.id for i in items}
        n = len(items)
        assert 0.55 * n < len(parts["eval"]) < 0.78 * n, name
        assert 0.05 * n < len(parts["reference"]) < 0.18 * n, name
        assert 0.14 * n < len(parts["adapter"]) < 0.30 * n, name


def test_split_depends_on_the_id_alone():
    # stable across calls and processes: a fixed digest, not Python's salted hash()
    table = ["eval"] * 6 + ["reference"] + ["adapter"] * 2
    for item_id in ("legal/0", "manpages/17", "code_py/449"):
        bucket = int.from_bytes(H("corpus-split", item_id.encode())[:8], "big") % 9
        assert corpus.part_of(item_id) == table[bucket]
    # the split of an item follows its id, not its position in the list
    items = corpus.load("legal")
    assert [i.id for i in corpus.split("legal", "reference")] == \
        [i.id for i in items if corpus.part_of(i.id) == "reference"]
    with pytest.raises(ValueError):
        corpus.split("legal", "train")
    with pytest.raises(KeyError):
        corpus.load("no-such-domain")


def test_manifest_matches_the_files():
    manifest = corpus.manifest()
    assert sorted(manifest) == corpus.domains()
    for name, entry in manifest.items():
        data = corpus.domain_bytes(name)
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
        assert entry["items"] == len(rows)
        assert entry["sources"] == len({r["source"] for r in rows})


def test_reference_digest_pins_the_manifest():
    digest = corpus.reference_digest()
    assert len(digest) == 32
    assert digest == H("corpus", canonical(corpus.manifest()))
    altered = json.loads(json.dumps(corpus.manifest()))
    altered[corpus.domains()[0]]["sha256"] = "0" * 64
    assert H("corpus", canonical(altered)) != digest


def test_provenance_names_every_domain():
    text = (corpus._dir() / "PROVENANCE.md").read_text(encoding="utf-8")
    for name in corpus.domains():
        assert f"`{name}`" in text


def test_the_held_out_audit_set_is_labelled_bounded_and_disjoint_from_the_corpus(tokenizer):
    names = corpus.audit_domains()
    assert len(names) >= 3
    seen = {item.text for item in corpus.load()}
    manifest = json.loads((corpus._dir("audit") / "manifest.json").read_text(encoding="utf-8"))
    provenance = (corpus._dir("audit") / "PROVENANCE.md").read_text(encoding="utf-8")
    for name in names:
        items = corpus.audit(name)
        assert 300 <= len(items) == manifest[name]["items"], name
        assert f"`{name}`" in provenance
        texts = [item.text for item in items]
        assert len(set(texts)) == len(texts) and seen.isdisjoint(texts), name
        per_source = collections.Counter(item.source for item in items)
        assert 2 <= min(per_source.values()) and max(per_source.values()) <= 4, name
        lengths = [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
        assert corpus.MIN_TOKENS <= min(lengths) and max(lengths) <= corpus.MAX_TOKENS, name
    with pytest.raises(KeyError):
        corpus.audit("legal")  # a corpus domain is not an audit domain
