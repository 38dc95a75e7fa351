"""`moenode testnet`: local networks of daemon processes for researchers and tests: up, status, demo, down.

Each command drives `moenode.testing.testnet` (the processes and their homes) and `moenode.testing.demo` (the demo
workload); the tables and the demo summary are printed here. The testnet's directory is `--dir` (default
./moenode-testnet).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from moenode.cli.output import console, fail, fmt, out_json, setup_logging

if TYPE_CHECKING:
    from moenode.testing.testnet import Testnet

DEMO_DIR = "moenode-testnet"

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _load_testnet(dir: Path) -> Testnet:
    from moenode.testing.testnet import Testnet, TestnetError

    try:
        return Testnet.load(dir)
    except TestnetError as e:
        fail(str(e))


@app.command("up")
def up(
    nodes: int = typer.Option(5, "--nodes", "-n", min=1, max=32, help="Number of daemons."),
    dir: Path = typer.Option(Path(DEMO_DIR), "--dir", "-d", help="Directory for the homes, genesis and "
                             "testnet.json."),
    models: str = typer.Option("", help="Comma-separated models, one per node (default: general models, then "
                               "the zoo's specialists)."),
    epoch_ms: int = typer.Option(30_000, help="Epoch length in ms (stake changes count from epoch E+2)."),
    timeout: float = typer.Option(240.0, help="Seconds to wait for every node to be up and connected."),
    as_json: bool = typer.Option(False, "--json", help="Print testnet.json."),
) -> None:
    """Start N daemons with their own homes and logs, bootstrapped to each other, then return.

    Writes DIR/genesis.toml (distinct experts, a faucet on node0, short timers) and DIR/testnet.json (peer ids, addrs, homes, status URLs). The daemons keep running until `moenode testnet down`.

    Examples:

      moenode testnet up --nodes 5 --dir ./tn

      moenode submit --home ./tn/node1 "some text"

      moenode testnet down --dir ./tn
    """
    from moenode.testing.testnet import Testnet, TestnetError

    setup_logging("warning")
    model_list = [m.strip() for m in models.split(",") if m.strip()] or None
    tn = None
    try:
        tn = Testnet.create(dir, nodes, models=model_list, epoch_ms=epoch_ms)
        _start_with_progress(tn, timeout)
    except (TestnetError, KeyboardInterrupt) as e:
        if tn is not None:
            tn.stop()
        fail(str(e) or "interrupted; every node started was stopped")
    except BaseException:
        if tn is not None:
            tn.stop()
        raise
    tn.detach()  # the daemons outlive this command
    if as_json:
        return out_json(json.loads((tn.root / "testnet.json").read_text()))
    _print_nodes(tn, None)
    console().print(f"testnet up: {tn.root / 'testnet.json'}\n"
                    f"  submit:  moenode submit --home {tn.nodes[-1].home} \"some text\"\n"
                    f"  status:  moenode testnet status --dir {dir}\n"
                    f"  stop:    moenode testnet down --dir {dir}")


@app.command("down")
def down(
    dir: Path = typer.Option(Path(DEMO_DIR), "--dir", "-d", help="The testnet's directory."),
    timeout: float = typer.Option(20.0, help="Seconds to wait after SIGTERM before SIGKILL."),
) -> None:
    """Stop every daemon of a testnet: SIGTERM, wait, then SIGKILL what is left. Homes and logs stay.

    Example:

      moenode testnet down --dir ./tn
    """
    tn = _load_testnet(dir)
    result = tn.stop(timeout)
    for name, how in result.items():
        typer.echo(f"{name}: {how}")
    typer.echo(f"testnet down ({len(result)} running node(s) stopped)")


@app.command("status")
def tn_status(
    dir: Path = typer.Option(Path(DEMO_DIR), "--dir", "-d", help="The testnet's directory."),
    as_json: bool = typer.Option(False, "--json", help="Print every node's /status as JSON."),
) -> None:
    """One row per node: alive, peers, epoch, stake, balance, rounds, wins, proxies, strikes.

    Example:

      moenode testnet status --dir ./tn
    """
    tn = _load_testnet(dir)
    sts = tn.statuses(5)
    if as_json:
        return out_json([{"node": nd.as_json(), "status": st} for nd, st in zip(tn.nodes, sts)])
    _print_nodes(tn, sts)


@app.command("demo")
def demo(
    nodes: int = typer.Option(5, "--nodes", "-n", min=1, max=32, help="Number of daemons."),
    submissions: int = typer.Option(20, min=1, help="Batches to submit."),
    batch: int = typer.Option(16, min=1, max=256, help="Items per batch (real text from one corpus domain)."),
    concurrency: int = typer.Option(1, min=1, help="Submissions in flight at once."),
    json_out: Path = typer.Option(None, "--json", help="Write the summary as JSON to this path."),
    dir: Path = typer.Option(None, "--dir", "-d", help="Testnet directory (default: a new temporary one)."),
    keep: bool = typer.Option(False, "--keep", help="Leave the testnet running afterwards."),
    epoch_ms: int = typer.Option(30_000, help="Epoch length in ms."),
    deadline: float = typer.Option(60.0, "--deadline", min=0, max=90, help="Seconds each submission lets the "
                                   "shard's members take to commit (0: the network's timers); the large expert "
                                   "needs it."),
    quality: bool = typer.Option(True, "--quality/--no-quality", help="Also measure the label quality delivered "
                                 "against each model alone (embeds every batch locally with each model)."),
) -> None:
    """The whole flow: start a testnet, submit real text batches, check every certificate, print a summary.

    Each submission is a batch from one domain of the shipped corpus, sent through the nodes in turn; from 5 nodes on, the market holds the large expert (mpnet-base), the domain specialists and the general models, so members that expect to lose proxy to experts. The table shows proxied rounds and wins, wins per producer and per domain, and the label quality delivered against each model alone. Also measures one node embedding and scoring the same batches alone (embed_ms_single), for the latency ratio and the compute ceiling.

    Example:

      moenode testnet demo --nodes 5 --submissions 20 --json demo.json

      moenode testnet demo --nodes 6 --deadline 0 --no-quality
    """
    import tempfile

    from moenode.testing.demo import DemoConfig, run_demo
    from moenode.testing.testnet import TestnetError

    setup_logging("warning")
    root = dir or Path(tempfile.mkdtemp(prefix="moenode-demo-"))
    cfg = DemoConfig(nodes=nodes, submissions=submissions, batch=batch, concurrency=concurrency,
                     epoch_ms=epoch_ms, keep=keep, deadline_ms=int(deadline * 1000), measure_quality=quality)
    try:
        summary = run_demo(root, cfg, ui=_demo_ui())
    except TestnetError as e:
        fail(f"{e}\nlogs: {root}")
    print_demo_summary(summary)
    if json_out is not None:
        json_out.write_text(json.dumps(summary, indent=2))
        typer.echo(f"summary written to {json_out}")
    typer.echo(f"homes and logs: {root}" + ("  (still running: moenode testnet down --dir " + str(root) + ")"
                                             if keep else ""))
    if summary["failed"]:
        raise typer.Exit(1)


def _start_with_progress(tn, timeout: float) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), transient=True) as p:
        task = p.add_task("starting nodes", total=len(tn.nodes))
        tn.start(timeout=timeout, progress=lambda nd: p.advance(task))


def _count(v: Any, key: str) -> str:
    """A counter field that is either a number or a dict of counters (e.g. rounds={certified: 3, ...})."""
    if isinstance(v, dict):
        return str(v.get(key, 0))
    return fmt(v)


def _print_nodes(tn, sts) -> None:
    from rich.table import Table

    from moenode.client import peer_count

    t = Table(title=f"testnet {tn.root}", title_justify="left")
    cols = ["node", "model", "pid", "up"]
    if sts is None:
        cols += ["peer id", "control"]
    else:
        cols += ["peers", "epoch", "stake", "balance", "rounds", "wins", "proxied", "served", "strikes", "sync"]
    for col in cols:
        t.add_column(col, overflow="fold", justify="right" if col in (  # folded to fit a terminal, never cut
            "peers", "epoch", "stake", "balance", "rounds", "wins", "proxied", "served", "strikes") else "left")
    for i, nd in enumerate(tn.nodes):
        row = [nd.name, nd.model, str(nd.pid or "-"), "yes" if nd.alive() else "[red]no[/]"]
        if sts is None:
            row += [nd.peer_id, nd.control_url or "-"]
        else:
            st = sts[i] or {}
            sync = st.get("sync")
            row += [str(peer_count(st)) if st else "-", fmt(st.get("epoch")), fmt(st.get("stake")),
                    fmt(st.get("balance")), _count(st.get("rounds"), "certified"), fmt(st.get("wins")),
                    _count(st.get("proxies"), "sent"), _count(st.get("proxies"), "served"), fmt(st.get("strikes")),
                    sync.get("state", "-") if isinstance(sync, dict) else fmt(sync)]
        t.add_row(*row)
    console().print(t)


def _demo_ui():
    """Progress callbacks for run_demo: a rich bar per phase."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    class UI:
        def __init__(self) -> None:
            self.p: Progress | None = None
            self.task: TaskID | None = None

        def phase(self, name: str, total: int) -> None:
            self.close()
            self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            self.p.start()
            self.task = self.p.add_task(name, total=total, info="")

        def advance(self, info: str = "") -> None:
            if self.p is not None and self.task is not None:
                self.p.update(self.task, advance=1, info=info)

        def close(self) -> None:
            if self.p is not None:
                self.p.stop()
                self.p = None

    return UI()


def print_demo_summary(s: dict[str, Any]) -> None:
    from rich.table import Table

    c = console()
    t = Table(title="testnet demo", show_header=False, title_justify="left")
    t.add_column(style="bold cyan")
    t.add_column(justify="right")
    t.add_column(style="dim")
    lat, single = s.get("latency_ms") or {}, s.get("embed_ms_single") or {}
    rows = [
        ("nodes", s["nodes"], ", ".join(f"{n['name']}={n['model']}" for n in s.get("node_models", []))),
        ("submissions", s["submissions"], f"batch of {s.get('batch')} items, concurrency {s.get('concurrency')}"),
        ("certified", s["certified"], ""),
        ("failed", s["failed"], ""),
        ("refunded attempts", s.get("retried", 0), "rounds that could not certify and were retried"),
        ("proxied", s["proxied"], f"proxy requests experts served ({s.get('proxied_wins', 0)} proxied wins)"),
        ("proxied rounds", "?" if s.get("proxied_rounds") is None else
         f"{s['proxied_rounds']} ({100 * (s.get('proxied_share') or 0):.0f} %)",
         "rounds in which an expert outside the shard served a member; goal >= 20 %"),
        ("commit deadline", f"{s.get('deadline_ms', 0) / 1000:.0f} s", "the submitter waits this long for every "
         "commit (0: the network's timers)"),
        ("latency p50 / p99", f"{lat.get('p50', 0):.0f} / {lat.get('p99', 0):.0f} ms", "submit to certificate"),
        ("embed_ms_single p50", f"{single.get('p50', 0):.0f} ms", "one node embeds + scores the batch alone"),
        ("latency_ratio p50 / p99", f"{s['latency_ratio_p50']:.2f} / {s.get('latency_ratio_p99', 0):.2f}",
         "goal <= 2.0 / 4.0"),
        ("throughput", f"{s['throughput_per_s']:.3f}/s", ""),
        ("compute ceiling", f"{s['compute_ceiling_per_s']:.3f}/s",
         f"{s.get('cores')} cores / (shard of {s.get('shard_size')} x embed_ms_single)"),
        ("throughput ratio", f"{s.get('throughput_ratio', 0):.2f}", "goal >= 0.7"),
        ("supply before / after", f"{s['supply_before']} / {s['supply_after']}",
         "unchanged" if s["supply_before"] == s["supply_after"] else "[red]CHANGED[/]"),
    ]
    for r in rows:
        t.add_row(r[0], str(r[1]), str(r[2]))
    c.print(t)
    w = Table(title="winners by domain (model of the producer)", title_justify="left")
    w.add_column("domain")
    w.add_column("wins", overflow="fold")
    for dom, counts in sorted(s.get("winners_by_domain", {}).items()):
        w.add_row(dom, ", ".join(f"{m} {k}" for m, k in sorted(counts.items(), key=lambda x: -x[1])))
    w.add_row("[bold]all[/]", ", ".join(f"{m} {k}" for m, k in sorted((s.get("wins_by_producer") or {}).items(),
                                                                       key=lambda x: -x[1])))
    c.print(w)
    _print_quality(c, s.get("quality"))


def _print_quality(c, q: dict[str, Any] | None) -> None:
    """Delivered label quality (same-source MRR, one index) against each model alone."""
    if not q or not q.get("mixed"):
        return
    from rich.table import Table

    models = sorted(q["mixed"]["alone_mrr"])
    t = Table(title="quality delivered (same-source MRR, one index) against each model alone", title_justify="left")
    for col in ["corpus", "rounds", "delivered", *models, "vs best single"]:
        t.add_column(col, justify="left" if col == "corpus" else "right")

    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for name, row in [("all domains (mixed)", q["mixed"]), *sorted(q.get("domains", {}).items())]:
        ratio = row.get("ratio_to_best")
        t.add_row(name, str(row["rounds"]), cell(row["delivered_mrr"]), *[cell(row["alone_mrr"][m]) for m in models],
                  "-" if ratio is None else f"{ratio:.3f}x ({row['best_single']})")
    c.print(t)
