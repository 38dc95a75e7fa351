"""The `moenode` command.

Commands are grouped by who uses them: the operator's and the submitter's commands at the top level (init, run,
resync, submit, status, transfer, stake: `moenode.cli.node`), `testnet` for local networks of daemons
(`moenode.cli.testnet`), `expert` for encoders and scoring (`moenode.cli.expert`) and `sim` for the simulator
(`moenode.cli.sim`); `moenode.cli.output` holds what they share. Each keeps heavy imports (onnxruntime, libp2p,
faiss) inside its commands, so `moenode --help` stays instant. Nothing else in the package imports this one.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import typer  # noqa: E402
import typer.core  # noqa: E402

METAVARS = {"int": "N", "float": "NUMBER", "str": "TEXT", "Path": "PATH"}


def _value_hint(self, ctx) -> str | None:  # noqa: ANN001 - typer's TyperOption and click's Context
    """What `--help` shows after an option: nothing for a flag, a short click-style hint (PATH, N, TEXT) for a
    value, instead of typer's `<bool>`, `<str>`, `<list[str]>` type tags."""
    if self.metavar is not None:
        return self.metavar
    if self.is_flag:
        return None
    label = (typer.core.TyperOption.display_type(self, ctx) or "").strip("<>")
    many = label.startswith("list[")
    label = label.removeprefix("list[").removesuffix("]")
    hint = METAVARS.get(label, label.upper())
    return f"{hint}..." if many else hint


typer.core.TyperOption.display_type_rich = _value_hint  # type: ignore[method-assign]
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]  # its name says it

app = typer.Typer(
    name="moenode",
    help="A peer-to-peer market of encoder experts: run a node, submit text for embedding, run a testnet or the "
    "simulator.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _mount() -> None:
    from moenode.cli import expert, node, sim, testnet

    node.register(app)
    for mod, name, help_ in (
        (testnet, "testnet", "Run a local multi-node testnet: up, status, demo, down."),
        (expert, "expert", "Encoders: score a model on text, train a domain specialist, list the zoo."),
        (sim, "sim", "The simulator: thousands of nodes on the real protocol core."),
    ):
        app.add_typer(mod.app, name=name, help=help_)


_mount()


def main() -> None:
    app()
