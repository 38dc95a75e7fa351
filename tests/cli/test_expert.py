"""`moenode expert score|train|zoo` through the real command root."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from moenode.cli import app
from moenode.core.crypto import H
from moenode.encoders import corpus
from moenode.encoders import zoo

runner = CliRunner()


def write_jsonl(path, items):
    path.write_text("".join(json.dumps({"text": it.text, "source": it.source}) + "\n" for it in items))


def test_score_json(tmp_path):
    items = corpus.split("manpages", "eval")[:6]
    f = tmp_path / "t.jsonl"
    write_jsonl(f, items)
    seed = H("test", b"cli").hex()
    r = runner.invoke(app, ["expert", "score", "--model", "minilm-l3", "--texts", str(f), "--seed", seed, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["model_id"] == zoo.load("minilm-l3").model_id.hex()
    assert len(out["losses"]) == 6 and all(0 <= x <= 1 for x in out["losses"])
    assert abs(out["batch_loss"] - np.mean(out["losses"])) < 1e-5
    again = runner.invoke(app, ["expert", "score", "--model", "minilm-l3", "--texts", str(f), "--seed", seed, "--json"])
    assert json.loads(again.stdout)["losses_micro"] == out["losses_micro"]


@pytest.mark.slow
def test_score_json_with_the_large_expert(tmp_path):
    """`expert score --model mpnet-base`: 768-d views of 3 items, each scored against the other two."""
    items = corpus.split("code_py", "eval")[:3]
    f = tmp_path / "t.jsonl"
    write_jsonl(f, items)
    r = runner.invoke(app, ["expert", "score", "--model", "mpnet-base", "--texts", str(f), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["model_id"] == zoo.load("mpnet-base").model_id.hex() and out["dim"] == 768
    assert len(out["losses"]) == 3 and all(0 <= x <= 1 for x in out["losses"]) and out["scored_items"] == 3


def test_score_refuses_bad_input(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "fine text here"}\n{"txt": "no"}\n')
    r = runner.invoke(app, ["expert", "score", "--model", "minilm-l3", "--texts", str(f)])
    assert r.exit_code == 2 and ":2:" in r.output
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"text": "fine text here"}\n')
    r = runner.invoke(app, ["expert", "score", "--model", "no-such-model", "--texts", str(ok)])
    assert r.exit_code == 2 and "unknown model" in r.output
    r = runner.invoke(app, ["expert", "score", "--model", "minilm-l3", "--texts", str(ok), "--seed", "abc"])
    assert r.exit_code == 2 and "--seed" in r.output


def test_train_writes_a_loadable_specialist(tmp_path):
    items = corpus.split("legal", "adapter")[:20]
    f = tmp_path / "legal.jsonl"
    write_jsonl(f, items)
    out, npy = tmp_path / "spec.onnx", tmp_path / "spec.npy"
    r = runner.invoke(app, ["expert", "train", "--base", "minilm-l6", "--domain", "my-legal", "--texts", str(f),
                            "--out", str(out), "--adapter-out", str(npy), "--steps", "10", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["audit_mrr_before"] is not None and rep["heldout_loss_before"] >= 0
    assert rep["space"] == "main" and rep["admission"]["admitted"] and rep["admission"]["p5"] >= 0.95
    assert rep["alignment"]["general"] > 0  # the fit also held general text of every domain in place
    enc = zoo.load(str(out))
    assert enc.model_id.hex() == rep["model_id"] and enc.dim == 384
    w = zoo.load_adapter(npy)
    assert w.shape == (384, 384)


def test_zoo_lists_adversaries():
    r = runner.invoke(app, ["expert", "zoo", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["adv-noise"]["adversary"] and not rows["minilm-l6"]["adversary"]
    assert {"spec-code", "spec-legal", "spec-man"} <= set(rows)
    assert rows["mpnet-base"]["dim"] == 768 and not rows["mpnet-base"]["adversary"]
    assert rows["mpnet-base"]["model_id"] == zoo.load("mpnet-base").model_id.hex()


def test_embed_writes_a_vector_file_that_matches_the_model(tmp_path):
    from moenode.client import read_vectors, write_vectors
    from moenode.encoders import zoo

    texts = tmp_path / "t.jsonl"
    texts.write_text('{"text": "a first text"}\n{"text": "the second one"}\n')
    out = tmp_path / "v.npz"
    r = CliRunner().invoke(app, ["expert", "embed", "--model", "minilm-l6", "--texts", str(texts), "--out", str(out),
                                 "--space", "main", "--json"])
    assert r.exit_code == 0, r.output
    enc = zoo.load("minilm-l6")
    v = read_vectors(out)
    assert v["space"] == "main" and list(v["model_ids"]) == [enc.model_id.hex()] * 2
    np.testing.assert_allclose(v["vectors"], enc.embed(["a first text", "the second one"]), atol=1e-6)
    other = write_vectors(tmp_path / "o.npz", v["vectors"], "mpnet", ["00" * 32] * 2)
    with pytest.raises(ValueError, match="different spaces"):
        read_vectors(out, other)
    bad = CliRunner().invoke(app, ["expert", "embed", "--model", "minilm-l6", "--texts", str(texts), "--out",
                                   str(tmp_path / "v.npy")])
    assert bad.exit_code == 2 and "v.npz" in bad.output
