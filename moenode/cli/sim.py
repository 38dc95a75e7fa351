"""`moenode sim`: run a scenario and write results.json, PNG plots and a self-contained report.html."""

import sys
from pathlib import Path

import typer

from moenode.sim import SCENARIOS

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _resolve(name: str) -> Path:
    p = Path(name)
    if p.exists():
        return p
    q = SCENARIOS / (name if name.endswith(".toml") else name + ".toml")
    if q.exists():
        return q
    raise typer.BadParameter(f"no scenario file {name!r} (and none named so in {SCENARIOS})")


@app.command("list")
def list_() -> None:
    """List the bundled scenarios: name, fidelity, nodes, submissions, variants, description.

    Example:

      moenode sim list
    """
    from moenode.sim.config import parse

    for f in sorted(SCENARIOS.glob("*.toml")):
        sc = parse(f.read_text())
        typer.echo(f"{f.stem:16} {sc.sim.fidelity:8} {sc.sim.nodes:>6} nodes {sc.sim.submissions:>9} submissions"
                   f"  {len(sc.variants)} variants  {sc.description[:60]}")


@app.command()
def run(
    scenario: str = typer.Argument(..., help="a scenario file, or the name of a bundled one (see `list`)"),
    out: Path = typer.Option(..., "--out", help="output directory for results.json, plots and report.html"),
    seed: int | None = typer.Option(None, "--seed", help="override the scenario's seed"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Run SCENARIO; write DIR/results.json, PNG plots and DIR/report.html (docs/simulator.md reads them).

    Examples:

      moenode sim run routing --out ./sim-routing

      moenode sim run ./my-scenario.toml --out ./sim-mine --seed 7 --quiet
    """
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from moenode.sim.config import parse
    from moenode.sim.report import write_report
    from moenode.sim.scenario import run_scenario

    try:
        sc = parse(_resolve(scenario).read_text())
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), TimeRemainingColumn())
    live = sys.stderr.isatty()
    with Progress(*cols, disable=quiet or not live) as bar:
        tasks: dict[str, TaskID] = {}
        tenths: dict[str, int] = {}

        def progress(label: str, done: int, total: int) -> None:
            if not live:  # a log or a pipe: a plain line at every tenth, not one bar at the end
                tenth = 10 * done // max(total, 1)
                if not quiet and tenth > tenths.get(label, -1):
                    tenths[label] = tenth
                    typer.echo(f"{label}: {done}/{total} submissions", err=True)
                return
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done)

        res = run_scenario(sc, seed, progress)
    path = write_report(res, out)
    typer.echo(f"{res['scenario']}: routing_ratio {res['routing_ratio']:.3f}, apgr {res['apgr']:.3f}, "
               f"{res['events_per_s']:,.0f} events/s, supply conserved: {res['supply_conserved_everywhere']}")
    typer.echo(f"wrote {out / 'results.json'} and {path}")
