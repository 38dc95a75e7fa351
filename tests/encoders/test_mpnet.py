"""mpnet-base: the graph built from the safetensors agrees with transformers, its bytes are pinned, it takes the
network's ids, and it works wherever a zoo model does (embedding, scoring, re-execution)."""

import dataclasses
import hashlib
import io
import json
import zipfile

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from moenode.core.crypto import H
from moenode.core.genesis import Params
from moenode.encoders import corpus
from moenode.encoders import graphs, mpnet, scoring, zoo
from moenode.encoders.runtime import CLS, MASK, PAD, SEP, UNK, ModelError, full_ids, normalise

S = ["A man is playing a guitar on stage.", "Someone performs music with a stringed instrument.",
     "The quarterly tax filing deadline is next Tuesday."]


@pytest.fixture(scope="module")
def own_vocab() -> dict[str, int]:
    with mpnet.open_archive() as zf:
        return json.loads(bytes(mpnet.read_member(zf, "tokenizer.json")))["model"]["vocab"]


# --- the graph against the reference forward pass ----------------------------------------------------------------
def check_golden(enc, meta: dict, ref: np.ndarray, rows: list[int]) -> None:
    got = enc.embed([meta["texts"][i]["text"] for i in rows])
    cos = (got * ref[rows]).sum(1) / np.linalg.norm(ref[rows], axis=1)
    assert cos.min() >= meta["min_cosine"], f"min cosine {cos.min():.6f} (text {rows[int(cos.argmin())]})"


def test_golden_vectors_agree_with_the_reference(mpnet, mpnet_golden):
    """Every golden text of at most 64 tokens (the longer ones, up to the 256 window: the slow test below)."""
    meta, ref = mpnet_golden
    assert ref.dtype == np.float32 and ref.shape == (len(meta["texts"]), 768)
    assert {t["domain"] for t in meta["texts"]} >= set(corpus.domains())
    check_golden(mpnet, meta, ref, [i for i, t in enumerate(meta["texts"]) if t["tokens"] <= 64])


@pytest.mark.slow
def test_golden_vectors_agree_up_to_the_window(mpnet, mpnet_golden):
    meta, ref = mpnet_golden
    long = [i for i, t in enumerate(meta["texts"]) if t["tokens"] > 64]
    assert max(meta["texts"][i]["tokens"] for i in long) == 256  # the window is exercised, and cut
    check_golden(mpnet, meta, ref, long)
    texts = [meta["texts"][i]["text"] for i in long]
    assert np.allclose(mpnet.embed_ids(full_ids(texts)), mpnet.embed(texts), atol=1e-6)  # ids path == text path


def test_the_graph_bytes_are_pinned(mpnet, mpnet_golden):
    """A machine that builds different bytes would hold a different model id: re-execution could not find it."""
    meta, _ = mpnet_golden
    data = mpnet_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["graph_sha256"]
    assert mpnet.model_id == H("model", data) and mpnet.size == len(data)


def mpnet_bytes() -> bytes:
    return zoo.model_bytes("mpnet-base")[1]


@pytest.mark.slow
def test_two_builds_give_identical_bytes(mpnet_golden):
    meta, _ = mpnet_golden

    class Sha:
        def __init__(self):
            self.h = hashlib.sha256()

        def write(self, b) -> int:
            self.h.update(b)
            return len(b)

    first, second = Sha(), Sha()
    n1, n2 = mpnet.write_graph(first), mpnet.write_graph(second)  # type: ignore[arg-type]
    assert n1 == n2 and first.h.hexdigest() == second.h.hexdigest() == meta["graph_sha256"]
    onnx.checker.check_model(str(mpnet.cache_path()))  # the full checker, on the file (it needs the path at this size)


def test_relative_buckets_equal_transformers(mpnet_golden):
    meta, _ = mpnet_golden
    span = np.arange(-(mpnet.MAX_POSITIONS - 1), mpnet.MAX_POSITIONS)
    assert mpnet.relative_buckets(span).tolist() == meta["relative_position_bucket"]
    with pytest.raises(ValueError, match="32 buckets"):
        mpnet.relative_buckets(span, buckets=64)


# --- the network's ids -------------------------------------------------------------------------------------------
def test_remap_table_properties(own_vocab):
    net = mpnet.network_vocab()
    table = mpnet.remap_table(net, own_vocab)
    assert table.shape == (30_522,) and table.dtype == np.int64
    assert len(np.unique(table)) == len(table) and table.min() >= 0 and table.max() < len(own_vocab)
    assert [table[i] for i in (CLS, SEP, PAD, MASK)] == [own_vocab[t] for t in ("<s>", "</s>", "<pad>", "<mask>")]
    assert table[UNK] == own_vocab["[UNK]"] == 104  # what MPNet's own tokenizer emits for an unknown word
    inverse = {i: t for t, i in own_vocab.items()}
    specials = {"[CLS]", "[SEP]", "[PAD]", "[MASK]"}
    assert all(inverse[int(table[i])] == t for t, i in net.items() if t not in specials)


def test_remap_table_refuses_what_it_cannot_map():
    with pytest.raises(ModelError, match="no MPNet counterpart"):
        mpnet.remap_table({"[CLS]": 0, "hello": 1}, {"<s>": 0})
    with pytest.raises(ModelError, match="0..n-1"):
        mpnet.remap_table({"a": 0, "b": 2}, {"a": 0, "b": 1})
    with pytest.raises(ModelError, match="one-to-one"):
        mpnet.remap_table({"[CLS]": 0, "<s>": 1}, {"<s>": 0})


def test_the_network_tokenization_equals_mpnets_own_on_the_corpus(own_vocab):
    """Remapped network ids are exactly MPNet's tokenizer's on every corpus item (the figure docs/scoring.md gives)."""
    from tokenizers import Tokenizer

    with mpnet.open_archive() as zf:
        own = Tokenizer.from_str(bytes(mpnet.read_member(zf, "tokenizer.json")).decode())
    own.no_padding()
    own.enable_truncation(256)
    table = mpnet.remap_table(mpnet.network_vocab(), own_vocab)
    texts = [it.text for it in corpus.load()]
    ours = [table[np.array(ids)].tolist() for ids in full_ids(texts)]
    theirs = [e.ids for e in own.encode_batch(texts)]
    assert sum(a != b for a, b in zip(ours, theirs)) == 0
    assert sum(own_vocab["[UNK]"] in ids for ids in theirs) == 1  # the one item with [UNK]: mapping it to <unk> breaks it


# --- zoo, embedding, scoring ---------------------------------------------------------------------------------------
def test_in_the_zoo_with_768_unit_vectors(mpnet):
    assert "mpnet-base" in zoo.names() and not zoo.is_adversary("mpnet-base")
    assert zoo.load("mpnet-base") is mpnet and mpnet.dim == 768
    v = mpnet.embed(S)
    assert v.shape == (3, 768) and v.dtype == np.float32 and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > 0.4 > 0.1 > sims[0, 2]
    assert np.array_equal(mpnet.embed(S), v)


def test_padding_in_a_batch_does_not_change_vectors(mpnet):
    texts = S + ["short", "a much longer sentence " * 20]
    alone = np.concatenate([mpnet.embed([t]) for t in texts])
    assert np.min(np.sum(alone * mpnet.embed(texts), axis=1)) > 0.99999


def test_a_payload_made_with_mpnet_verifies_by_reexecution(mpnet):
    """The scorer runs it like any zoo model, and a verifier holding the same bytes re-executes it."""
    l3 = zoo.load("minilm-l3")
    items = [it.text for it in corpus.split("manpages", "eval")[:4]] + ["too short"]
    ref = [it.text for it in corpus.split("legal", "reference")[:3]]
    seed = H("test", b"mpnet")
    pay = scoring.make_payload(mpnet, l3, items, seed, Params(), ref)
    assert pay.dim == 768 and pay.model_id == mpnet.model_id
    assert all(0 <= x < scoring.MICRO for x in pay.item_losses[:-1]) and pay.item_losses[-1] == scoring.UNSCORED
    ok, why = scoring.verify_payload(mpnet, l3, items, seed, pay, Params(), ref)
    assert ok, why
    rolled = np.roll(np.frombuffer(pay.embeddings, "<f4").reshape(-1, 768), 1, axis=1)  # unit rows, wrong model
    forged = dataclasses.replace(pay, embeddings=normalise(rolled).astype("<f4").tobytes())
    assert not scoring.verify_payload(mpnet, l3, items, seed, forged, Params(), ref)[0]


# --- the pieces of the build ----------------------------------------------------------------------------------------
def test_parts_reader_reads_a_zip_split_in_parts(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(mpnet.ARCHIVE_DIR + "config.json", json.dumps({"a": 1}))
        z.writestr(mpnet.ARCHIVE_DIR + "model.safetensors", bytes(range(256)) * 5000)
    data = buf.getvalue()
    cuts = [0, 1000, 1001, 1001, 700_000, len(data)]  # one part of 1 byte, one empty
    paths = []
    for i in range(len(cuts) - 1):
        paths.append(tmp_path / f"x.zip.00{i + 1}")
        paths[-1].write_bytes(data[cuts[i]: cuts[i + 1]])
    r = mpnet.PartsReader(paths)
    assert r.read() == data
    r.seek(999)
    assert r.read(3) == data[999:1002] and r.tell() == 1002
    r.seek(-5, io.SEEK_END)
    assert r.read(100) == data[-5:]
    r.close()
    with mpnet.open_archive(paths) as zf:
        assert bytes(mpnet.read_member(zf, "model.safetensors")) == bytes(range(256)) * 5000
        with pytest.raises(ModelError, match="no tokenizer.json"):
            mpnet.read_member(zf, "tokenizer.json")
    with pytest.raises(ModelError, match="do not form a zip"):
        mpnet.open_archive(paths[:2])


def safetensors_bytes(tensors: dict[str, np.ndarray], header_extra: dict | None = None) -> bytes:
    header, body = {"__metadata__": {"format": "pt"}}, b""
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": {"float32": "F32", "int64": "I64"}[arr.dtype.name], "shape": list(arr.shape),
                        "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    header.update(header_extra or {})
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + body


def test_read_safetensors_round_trip_and_refusals():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([[1, 2]], np.int64)
    got = mpnet.read_safetensors(safetensors_bytes({"a": a, "b": b}))
    assert set(got) == {"a", "b"} and np.array_equal(got["a"], a) and np.array_equal(got["b"], b)
    with pytest.raises(ModelError, match="shorter"):
        mpnet.read_safetensors(b"\x01\x00")
    with pytest.raises(ModelError, match="does not fit the file"):
        mpnet.read_safetensors((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(ModelError, match="not JSON"):
        mpnet.read_safetensors((3).to_bytes(8, "little") + b"{{{")
    with pytest.raises(ModelError, match="offsets"):
        mpnet.read_safetensors(safetensors_bytes({"a": a}, {"c": {"dtype": "F32", "shape": [5],
                                                               "data_offsets": [0, 20_000]}}))
    with pytest.raises(ModelError, match="malformed header entry"):
        mpnet.read_safetensors(safetensors_bytes({"a": a}, {"c": {"dtype": "F32", "shape": [5]}}))
    with pytest.raises(ModelError, match="not a JSON object"):
        mpnet.read_safetensors((2).to_bytes(8, "little") + b"[]")
    with pytest.raises(ModelError, match="unsupported dtype"):
        mpnet.read_safetensors(safetensors_bytes({"a": a}, {"c": {"dtype": "BOOL", "shape": [1],
                                                               "data_offsets": [0, 1]}}))


def test_large_model_writes_what_protobuf_would():
    """`LargeModel.write` streams the weights, and its bytes equal SerializeToString() of the same model."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((40, 8)).astype(np.float32)
    m = graphs.LargeModel("t", 8, "a test graph")
    m.node("Gather", [m.const("table", make=lambda: table * 2, shape=(40, 8)), "input_ids"], "g", axis=0)
    m.node("Add", ["g", m.const("bias", np.ones(8, np.float32))], "last_hidden_state")
    m.const("unused", np.arange(3, dtype=np.int64))
    out = io.BytesIO()
    n = m.write(out)
    full = graphs.empty_model("t", 8, "a test graph", m.model.graph.node)
    full.graph.initializer.extend([numpy_helper.from_array(table * 2, "table"),
                                   numpy_helper.from_array(np.ones(8, np.float32), "bias"),
                                   numpy_helper.from_array(np.arange(3, dtype=np.int64), "unused")])
    assert out.getvalue() == full.SerializeToString() and n == len(out.getvalue())
    onnx.checker.check_model(onnx.load_from_string(out.getvalue()))
    with pytest.raises(ValueError, match="twice"):
        m.const("bias", np.ones(8, np.float32))


def test_part_files_are_checked_against_the_pinned_digests(tmp_path):
    assert mpnet.installed_part_hashes() == list(mpnet.PART_SHA256)
    fake = [tmp_path / f"p{i}" for i in range(5)]
    for p in fake:
        p.write_bytes(b"not the model")
    with pytest.raises(ModelError, match="do not match the pinned"):
        mpnet.verify_parts(fake)


def test_cache_builds_once_rebuilds_when_stale_and_never_leaves_a_partial_file(tmp_path, monkeypatch):
    """The cache logic, with the real 8-second build replaced by a stand-in (the real one: the slow test above)."""
    monkeypatch.setenv(mpnet.CACHE_ENV, str(tmp_path))
    calls = []

    def fake_write(out, paths=None):
        calls.append(1)
        return out.write(b"graph " + mpnet.builder_digest().encode())

    monkeypatch.setattr(mpnet, "write_graph", fake_write)
    monkeypatch.setattr(mpnet, "builder_digest", lambda: "v1")
    said: list[str] = []
    path, built = mpnet.ensure_built(said.append)
    assert built and path.read_bytes() == b"graph v1" and len(said) == 1 and path.parent == tmp_path
    assert mpnet.ensure_built(said.append) == (path, False) and len(calls) == 1  # up to date: nothing to do
    monkeypatch.setattr(mpnet, "builder_digest", lambda: "v2")  # the builder's code changed
    new, built = mpnet.ensure_built()
    assert built and new != path and not path.exists() and new.read_bytes() == b"graph v2"  # stale one removed

    def broken(out, paths=None):
        out.write(b"half a gra")
        raise ModelError("parts went missing")

    monkeypatch.setattr(mpnet, "write_graph", broken)
    monkeypatch.setattr(mpnet, "builder_digest", lambda: "v3")
    with pytest.raises(ModelError):
        mpnet.ensure_built()
    assert sorted(p.name for p in tmp_path.iterdir()) == [new.name]  # no partial file, the old graph untouched


def test_a_config_the_graph_does_not_fit_is_refused(tmp_path, monkeypatch):
    """Other MPNet shapes are refused by name rather than built into a wrong graph."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(mpnet.ARCHIVE_DIR + "tokenizer.json", json.dumps({"model": {"vocab": {"<s>": 0}}}))
        z.writestr(mpnet.ARCHIVE_DIR + "config.json", json.dumps({"hidden_size": 1024}))
        z.writestr(mpnet.ARCHIVE_DIR + "model.safetensors", safetensors_bytes({"a": np.zeros(1, np.float32)}))
    p = tmp_path / "x.zip.001"
    p.write_bytes(buf.getvalue())
    monkeypatch.setattr(mpnet, "verify_parts", lambda paths: None)
    with pytest.raises(ModelError, match="hidden_size"):
        mpnet.build([p])

