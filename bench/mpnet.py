"""The large expert against L6: CPU cost per item, load cost, and label quality per domain.

Baseline: minilm-l6 in the same run (and minilm-l3 for quality). Figures:
- **CPU ms per item** of one forward pass (`Encoder._hidden`, one ORT thread), at 16, 32, 64 and 128 tokens, batch 1
  and 16, rows of real corpus token ids (no padding). Process CPU time, not wall time; the two models alternate so
  a busy machine slows both alike, and the ratio to L6 is the stable figure.
- **Load**: model file size, and in a fresh process the wall and CPU seconds of `zoo.load` (read the bytes, hash
  the model id, create the ORT session) and the RSS it adds.
- **Label audit**: same-source nearest-neighbour MRR on each domain's eval split (as `bench/encoders.py`).
- **Tokenization**: corpus items whose network tokenization, remapped by the graph's table, differs from MPNet's own
  tokenizer; and how many would differ if [UNK] were mapped to <unk>.
- `--int8`: dynamic int8 quantisation of the graph (onnxruntime.quantization): cosine to the fp32 golden vectors,
  and its CPU cost beside the fp32 graph's. Research only; the zoo ships fp32.

    .venv/bin/python bench/mpnet.py [--items 300] [--reps 3] [--int8] [--json]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from _report import write_result

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from moenode.encoders import corpus  # noqa: E402
from moenode.encoders import mpnet, train, zoo  # noqa: E402
from moenode.encoders.runtime import CLS, SEP, UNK, Encoder, content_ids, full_ids  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (16, 32, 64, 128)
BATCHES = (1, 16)
GOLDEN = ROOT / "tests" / "encoders" / "data" / "mpnet-base"


@lru_cache(maxsize=1)
def token_stream() -> list[int]:
    return [t for ids in content_ids([it.text for it in corpus.load()]) for t in ids]


def rows_of(length: int, n: int) -> np.ndarray:
    """n rows of `length` real token ids: [CLS] + a run of the corpus token stream + [SEP]."""
    stream = token_stream()
    body = length - 2
    rows = [[CLS] + stream[i * body: (i + 1) * body] + [SEP] for i in range(n)]
    return np.array(rows, np.int64)


def cpu_ms_per_item(enc: Encoder, ids: np.ndarray, reps: int) -> float:
    mask = np.ones_like(ids)
    enc._hidden(ids, mask)  # warm
    t = time.process_time()
    for _ in range(reps):
        enc._hidden(ids, mask)
    return 1000 * (time.process_time() - t) / reps / len(ids)


def throughput(models: dict[str, Encoder], reps: int) -> dict:
    out: dict = {}
    for length in LENGTHS:
        for batch in BATCHES:
            ids = rows_of(length, batch)
            key = f"{length}x{batch}"
            cell = {name: [] for name in models}
            for _ in range(reps):  # alternate the models, so load on the machine hits both alike
                for name, enc in models.items():
                    cell[name].append(cpu_ms_per_item(enc, ids, max(1, 64 // (length * batch // 16 + 1))))
            out[key] = {name: float(np.median(v)) for name, v in cell.items()}
            base = out[key]["minilm-l6"]
            out[key]["ratio_to_l6"] = {name: out[key][name] / base for name in models}
            print(f"  {length:4d} tokens, batch {batch:2d}: " + "  ".join(
                f"{n} {out[key][n]:7.2f} ms ({out[key]['ratio_to_l6'][n]:.2f}x)" for n in models), file=sys.stderr)
    return out


LOAD_PROBE = """
import json, re, resource, sys, time
def rss():
    s = open('/proc/self/status').read()
    return int(re.search(r'VmRSS:\\s+(\\d+)', s).group(1)) * 1024
from moenode.encoders import zoo
before, w, c = rss(), time.perf_counter(), time.process_time()
enc = zoo.load(sys.argv[1])
print(json.dumps({"load_wall_s": time.perf_counter() - w, "load_cpu_s": time.process_time() - c,
                  "rss_added_mb": (rss() - before) / 1e6,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, "bytes": enc.size}))
"""


def load_cost(name: str) -> dict:
    """zoo.load in a fresh process (the graph file is in the page cache after the first run)."""
    subprocess.run([sys.executable, "-c", LOAD_PROBE, name], capture_output=True, check=True)  # warm the page cache
    r = subprocess.run([sys.executable, "-c", LOAD_PROBE, name], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def audit(names: list[str], items: int) -> dict:
    out: dict = {}
    for d in corpus.domains():
        ev = corpus.split(d, "eval")[:items]
        ids, labels = full_ids([i.text for i in ev]), [i.source for i in ev]
        out[d] = {"items": len(ev)}
        for name in names:
            out[d][name] = train.mrr(zoo.load(name).pooled_ids(ids), labels)
        print(f"  {d:11s} " + "  ".join(f"{n} {out[d][n]:.3f}" for n in names), file=sys.stderr)
    return out


def tokenization() -> dict:
    from tokenizers import Tokenizer

    with mpnet.open_archive() as zf:
        text = bytes(mpnet.read_member(zf, "tokenizer.json")).decode()
    own = Tokenizer.from_str(text)
    own.no_padding()
    own.enable_truncation(256)
    vocab = json.loads(text)["model"]["vocab"]
    table = mpnet.remap_table(mpnet.network_vocab(), vocab)
    alt = table.copy()
    alt[UNK] = vocab["<unk>"]
    out: dict = {}
    for d in corpus.domains():
        texts = [it.text for it in corpus.load(d)]
        net = [np.array(x) for x in full_ids(texts)]
        theirs = [e.ids for e in own.encode_batch(texts)]
        out[d] = {"items": len(texts), "differ": sum(table[a].tolist() != b for a, b in zip(net, theirs)),
                  "differ_if_unk_to_<unk>": sum(alt[a].tolist() != b for a, b in zip(net, theirs))}
    return out


INT8_VARIANTS = {
    "int8-all": {},  # quantize_dynamic's defaults: every weight MatMul (and Gather), per tensor
    "int8-ffn-out-fp32": {"op_types_to_quantize": ["MatMul"], "per_channel": True,
                          "nodes_to_exclude": [f"encoder.layer.{i}.output.matmul" for i in range(12)]},
}


def int8(reps: int, fp32: Encoder, l6: Encoder) -> dict:
    """Dynamic int8 variants of the graph: agreement with the reference, and CPU cost beside fp32 and L6."""
    from onnxruntime.quantization import quantize_dynamic

    meta = json.loads(GOLDEN.with_suffix(".json").read_text())
    ref = np.load(GOLDEN.with_suffix(".npy"))
    out: dict = {}
    encs = {"minilm-l6": l6, "mpnet-base": fp32}
    for name, kw in INT8_VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            q = Path(tmp) / f"{name}.onnx"
            quantize_dynamic(str(mpnet.cache_path()), str(q), **kw)
            encs[name] = Encoder(name, q)
        got = encs[name].embed([x["text"] for x in meta["texts"]])
        cos = (got * ref).sum(1) / np.linalg.norm(ref, axis=1)
        out[name] = {"options": kw, "bytes": encs[name].size, "min_cosine": float(cos.min()),
                     "mean_cosine": float(cos.mean())}
        print(f"  {name}: cosine to the reference min {cos.min():.5f} mean {cos.mean():.5f}", file=sys.stderr)
    out["cpu_ms_per_item"] = throughput(encs, reps)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=300, help="eval items per domain for the label audit")
    ap.add_argument("--reps", type=int, default=3, help="alternating repetitions per throughput cell")
    ap.add_argument("--int8", action="store_true", help="also measure a dynamic int8 quantisation")
    ap.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mpnet.json"))
    a = ap.parse_args()
    t0 = time.perf_counter()
    result: dict = {"threads": 1, "lengths": LENGTHS, "batches": BATCHES}
    print("load (fresh process)", file=sys.stderr)
    result["load"] = {n: load_cost(n) for n in ("minilm-l6", "mpnet-base")}
    for n, r in result["load"].items():
        print(f"  {n:10s} {r['bytes'] / 1e6:6.1f} MB  load {r['load_wall_s']:.2f} s wall / {r['load_cpu_s']:.2f} s "
              f"CPU  +{r['rss_added_mb']:.0f} MB RSS", file=sys.stderr)
    models = {"minilm-l6": zoo.load("minilm-l6"), "mpnet-base": zoo.load("mpnet-base")}
    print("CPU ms per item, one ORT thread (median of alternating runs)", file=sys.stderr)
    result["cpu_ms_per_item"] = throughput(models, a.reps)
    print(f"label audit: same-source MRR, first {a.items} eval items per domain", file=sys.stderr)
    result["audit_mrr"] = audit(["minilm-l6", "minilm-l3", "mpnet-base"], a.items)
    result["tokenization"] = tokenization()
    print("tokenization: items differing from MPNet's own " + json.dumps(
        {d: (r["differ"], r["differ_if_unk_to_<unk>"]) for d, r in result["tokenization"].items()}), file=sys.stderr)
    if a.int8:
        result["int8"] = int8(a.reps, models["mpnet-base"], models["minilm-l6"])
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_result(result, a.out, a.json)


if __name__ == "__main__":
    main()
