"""`moenode expert`: score a model on text, train a domain specialist, embed texts locally, list the zoo.

Heavy imports (onnxruntime via the zoo, numpy) stay inside the commands so `moenode --help` stays instant.
Input texts are JSON Lines with a "text" field per line (and optionally "source", used as a label by `train`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import typer

from moenode.cli.output import console

if TYPE_CHECKING:
    import numpy as np

    from moenode.encoders.runtime import Encoder
    from moenode.encoders.scoring import Scored
    from moenode.encoders.train import TrainResult

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)


def _fail(msg: str) -> NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def read_jsonl(path: Path) -> tuple[list[str], list[str | None]]:
    """(texts, sources) from a JSON Lines file; a bad line is a clear error naming the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"cannot read {path}: {e}")
    texts, sources = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            _fail(f"{path}:{n}: not JSON ({e.msg})")
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            _fail(f'{path}:{n}: expected an object with a string "text" field')
        texts.append(obj["text"])
        src = obj.get("source")
        sources.append(src if isinstance(src, str) else None)
    if not texts:
        _fail(f"{path}: no texts")
    return texts, sources


def _load(name: str):
    from moenode.encoders import zoo
    from moenode.encoders.runtime import ModelError

    try:
        return zoo.load(name)
    except ModelError as e:
        _fail(str(e))


@app.command()
def score(
    model: str = typer.Option(..., "--model", help="A zoo name or a path to an .onnx file."),
    texts: Path = typer.Option(..., "--texts", help='JSON Lines, one {"text": ...} per line.'),
    seed: Optional[str] = typer.Option(None, "--seed", help="Shard seed, 64 hex digits (default: from the texts)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Split-half differential loss of a model on texts: per-item losses, batch loss and timing.

    Lower is better: how well the model's embeddings of two halves of each text find each other among the batch
    and reference negatives (docs/scoring.md).

    Examples:

      moenode expert score --model minilm-l6 --texts batch.jsonl

      moenode expert score --model ./spec-legal.onnx --texts legal.jsonl --json | jq .batch_loss
    """
    items, _ = read_jsonl(texts)
    from moenode.core.genesis import Params
    from moenode.encoders import scoring

    shard_seed = _shard_seed(seed, items)
    t0 = time.perf_counter()
    enc = _load(model)
    t1 = time.perf_counter()
    reference = scoring.reference_texts()
    s = scoring.score(enc, items, shard_seed, Params(), reference)
    t2 = time.perf_counter()
    enc.embed(items)
    t3 = time.perf_counter()
    scored = sum(1 for x in s.losses if x != scoring.UNSCORED) if s.plan.rows else 0
    out: dict[str, Any] = {
        "model": enc.name, "model_id": enc.model_id.hex(), "dim": enc.dim, "adversary": enc.adversary,
        "seed": shard_seed.hex(), "items": len(items), "scored_items": scored,
        "batch_loss": s.batch_loss / scoring.MICRO, "batch_loss_micro": s.batch_loss,
        "losses": [x / scoring.MICRO for x in s.losses], "losses_micro": s.losses,
        "buckets": [{"t": b.t, "items": len(b.members), "reference_negatives": len(b.refs)} for b in s.plan.buckets],
        "view_rows": s.plan.rows,
        "timing": {"load_s": round(t1 - t0, 3), "score_s": round(t2 - t1, 3), "embed_s": round(t3 - t2, 3),
                   "score_ms_per_item": round(1000 * (t2 - t1) / len(items), 2),
                   "embed_ms_per_item": round(1000 * (t3 - t2) / len(items), 2)},
    }
    if as_json:
        typer.echo(json.dumps(out))
        return
    _print_scores(enc, texts, items, s, out, (t1 - t0, t2 - t1, t3 - t2))


def _shard_seed(seed: str | None, items: list[str]) -> bytes:
    """--seed as 32 bytes, or (without it) the seed the texts themselves give."""
    from moenode.core.crypto import H
    from moenode.core.selection import data_hash

    if seed is None:
        return H("shard", data_hash([t.encode("utf-8") for t in items]))
    try:
        shard_seed = bytes.fromhex(seed)
    except ValueError:
        shard_seed = b""
    if len(shard_seed) != 32:
        _fail("--seed must be 64 hex digits")
    return shard_seed


def _print_scores(enc: Encoder, texts: Path, items: list[str], s: Scored, out: dict[str, Any],
                  seconds: tuple[float, float, float]) -> None:
    """A table of the per-item losses, then the batch loss and the timing (`out`: the JSON report; `seconds`: load,
    score, embed)."""
    from rich.table import Table

    from moenode.encoders import scoring

    load_s, score_s, embed_s = seconds
    table = Table(title=f"{enc.name} ({enc.model_id.hex()[:16]}) on {texts}")
    table.add_column("#", justify="right")
    table.add_column("loss", justify="right")
    table.add_column("text", overflow="fold")
    for i, (x, t) in enumerate(zip(s.losses, items)):
        table.add_row(str(i), "unscored" if x == scoring.UNSCORED else f"{x / scoring.MICRO:.4f}", t[:70].replace("\n", " "))
    con = console()
    con.print(table)
    con.print(f"batch loss {s.batch_loss / scoring.MICRO:.6f} ({out['scored_items']}/{len(items)} items scored); "
              f"score {score_s:.2f} s ({out['timing']['score_ms_per_item']} ms/item), embed {embed_s:.2f} s, "
              f"load {load_s:.2f} s")


@app.command()
def train(
    base: str = typer.Option("minilm-l6", "--base", help="Zoo name of the base model."),
    domain: str = typer.Option(..., "--domain", help="Domain name (a corpus domain, or any label)."),
    texts: Optional[Path] = typer.Option(None, "--texts", help="JSON Lines of in-domain texts "
                                         "(default: the corpus's adapter split of --domain)."),
    out: Path = typer.Option(..., "--out", help="Where to write the composed ONNX model."),
    adapter_out: Optional[Path] = typer.Option(None, "--adapter-out", help="Also save W as .npy (zoo format)."),
    steps: int = typer.Option(300, "--steps", min=1, max=10_000, help="Training steps of the adapter (the best "
                              "step on held-out text is kept)."),
    as_json: bool = typer.Option(False, "--json", help="Print the training report as one JSON object."),
) -> None:
    """Fit a domain adapter on the base model and write the composed specialist.

    The fit keeps the adapter in the base model's vector space (alignment terms over the in-domain texts and over
    general text of every domain, the corpus's adapter split, so that it also stays close to the other specialists
    of the space), and the result is checked: on the reference texts its same-text cosine to the base model must
    pass the space's admission rule (p5 >= 0.95, median >= 0.98), or nothing is written.

    Examples:

      moenode expert train --domain legal --out spec-legal.onnx

      moenode expert train --base minilm-l3 --domain mydocs --texts mydocs.jsonl --out spec-mydocs.onnx --steps 500

      moenode expert train --domain mytexts --texts mine.jsonl --out spec-mine.onnx --adapter-out W.npy --json
    """
    from moenode.encoders import zoo
    from moenode.encoders.runtime import model_id_of

    items, labelled = _training_texts(domain, texts)
    enc = _load(base)
    t0 = time.perf_counter()
    res = _fit_adapter(enc, items, domain, labelled, steps, quiet=as_json)
    assert res.admission is not None
    if not res.admission.admitted:  # a specialist that left its base model's space cannot share its batches' index
        typer.echo(f"error: the adapter is {res.admission.describe(base)}; nothing written (more --steps of "
                   f"the alignment term, or fewer, may keep it in)", err=True)
        raise typer.Exit(1)
    data = _write_specialist(base, res.w, out, adapter_out)
    report: dict[str, Any] = {
        "base": base, "domain": domain, "items": len(items), "out": str(out), "model_id": model_id_of(data).hex(),
        "steps": res.steps, "best_step": res.best_step, "heldout_loss_before": round(res.loss_before, 6),
        "heldout_loss_after": round(res.loss_after, 6), "audit_mrr_before": res.mrr_before,
        "audit_mrr_after": res.mrr_after, "space": zoo.space_of(base), "admission": res.admission.as_dict(),
        "alignment": {"in_domain": res.align, "general": res.general},
        "seconds": round(time.perf_counter() - t0, 1)}
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"specialist {out} ({report['model_id'][:16]}), {res.steps} steps (best {res.best_step}), "
               f"{report['seconds']} s")
    typer.echo(f"held-out split-half loss: {res.loss_before:.4f} -> {res.loss_after:.4f}")
    if res.mrr_before is not None:
        typer.echo(f"labelled audit (same-source MRR): {res.mrr_before:.4f} -> {res.mrr_after:.4f}")
    typer.echo(f"space {report['space']}: {res.admission.describe(base)}")


def _training_texts(domain: str, texts: Path | None) -> tuple[list[str], tuple[list[str], list[str]] | None]:
    """(the in-domain texts to fit on, (texts, labels) for the retrieval audit or None): from --texts, else from the
    corpus's adapter split; the audit uses the corpus's eval split, else the texts' own sources if all have one."""
    from moenode.encoders import corpus

    in_corpus = domain in corpus.domains()
    if texts is not None:
        items, sources = read_jsonl(texts)
    elif in_corpus:
        split = corpus.split(domain, "adapter")
        items, sources = [i.text for i in split], [i.source for i in split]
    else:
        _fail(f"--domain {domain!r} is not a corpus domain ({', '.join(corpus.domains())}); give --texts")
    if in_corpus:
        ev = corpus.split(domain, "eval")[:150]
        return items, ([i.text for i in ev], [i.source for i in ev])
    if all(s is not None for s in sources):
        return items, (items, [s or "" for s in sources])
    return items, None


def _fit_adapter(enc: Encoder, items: list[str], domain: str, labelled: tuple[list[str], list[str]] | None,
                 steps: int, quiet: bool) -> TrainResult:
    """Train the adapter, with progress bars for embedding and training on a terminal (none when `quiet`)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from moenode.encoders import scoring
    from moenode.encoders import train as trainer

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), transient=quiet, disable=quiet or not sys.stderr.isatty()) as bar:
        tasks = {"embed": bar.add_task("embed views", total=None), "train": bar.add_task("train adapter", total=steps)}

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(tasks[stage], completed=done, total=total)

        try:
            return trainer.train_adapter(enc, items, domain, labelled, steps=steps, progress=progress,
                                         reference=scoring.reference_texts(), public=trainer.general_texts())
        except ValueError as e:
            _fail(str(e))


def _write_specialist(base: str, w: np.ndarray, out: Path, adapter_out: Path | None) -> bytes:
    """Compose the adapter `w` into the base model, write it to `out` (and `w` to `adapter_out`); the ONNX bytes."""
    from moenode.encoders import graphs, zoo

    _, base_bytes = zoo.model_bytes(base)
    data = graphs.compose_adapter(base_bytes, w)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    if adapter_out is not None:
        import numpy as np

        adapter_out.parent.mkdir(parents=True, exist_ok=True)
        np.save(adapter_out, w)
    return data


@app.command()
def embed(
    model: str = typer.Option(..., "--model", help="A zoo name or a path to an .onnx file."),
    texts: Path = typer.Option(..., "--texts", help='JSON Lines, one {"text": ...} per line.'),
    out: Path = typer.Option(..., "--out", help="The .npz vector file to write (vectors, space, model id per row)."),
    space: str = typer.Option("", "--space", help="The space id to record (the space the model serves)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Embed texts locally with one model and write a vector file, in the format `moenode submit --out` writes.

    For builders (check a model's vectors against the network's) and for checking what the network returned.

    Examples:

      moenode expert embed --model minilm-l6 --texts queries.jsonl --out queries.npz --space main

      moenode expert embed --model ./spec-legal.onnx --texts batch.jsonl --out local.npz --json
    """
    from moenode.client import write_vectors

    if out.suffix != ".npz":
        _fail(f"--out writes .npz (vectors, space id, model id per row): name it {out.stem}.npz")
    items, _ = read_jsonl(texts)
    enc = _load(model)
    t0 = time.perf_counter()
    vectors = enc.embed(items)
    seconds = time.perf_counter() - t0
    try:
        write_vectors(out, vectors, space, [enc.model_id.hex()] * len(items))
    except (OSError, ValueError) as e:
        _fail(f"cannot write {out}: {e}")
    report = {"model": enc.name, "model_id": enc.model_id.hex(), "space": space, "items": len(items),
              "dim": enc.dim, "out": str(out), "seconds": round(seconds, 3)}
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"{len(items)} vectors of {enc.dim} dims from {enc.name} ({report['model_id'][:16]}) in "
               f"{seconds:.2f} s -> {out}" + (f" (space {space})" if space else ""))


@app.command()
def zoo(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON.")) -> None:
    """List the zoo: model ids, dims, sizes, and which models are adversaries (the names `--model` accepts).

    Examples:

      moenode expert zoo

      moenode expert zoo --json | jq '.[].name'
    """
    from moenode.encoders import zoo as z

    rows: list[dict[str, Any]] = []
    for name in z.names():
        enc = z.load(name)
        rows.append({"name": name, "model_id": enc.model_id.hex(), "dim": enc.dim, "bytes": enc.size,
                     "adversary": enc.adversary})
    if as_json:
        typer.echo(json.dumps(rows))
        return
    from rich.table import Table

    table = Table(title="moenode model zoo")
    for col in ("name", "model id", "dim", "size", "kind"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["model_id"][:32], str(r["dim"]), f"{r['bytes'] / 1e6:.1f} MB",
                      "[red]ADVERSARY[/red]" if r["adversary"] else "model")
    console().print(table)
