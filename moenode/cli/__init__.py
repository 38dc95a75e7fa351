"""The `moenode` command.

Each area owns its command group and keeps heavy imports (onnxruntime, libp2p, faiss) inside its commands, so
`moenode --help` stays instant. Groups: node commands (init, run, submit, status, transfer, stake), `testnet`,
`expert` (encoders and scoring) and `sim` (the simulator).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import typer  # noqa: E402

app = typer.Typer(
    name="moenode",
    help="A peer-to-peer market of encoder experts: run a node, submit text for embedding, run a testnet or the "
    "simulator.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _mount() -> None:
    from moenode.commands import register_node_commands

    register_node_commands(app)
    for module, name, help_ in (
        ("moenode.cli.expert", "expert", "Encoders: score a model on text, train a domain specialist, list the zoo."),
        ("moenode.cli.sim", "sim", "The simulator: thousands of nodes on the real protocol core."),
    ):
        try:
            mod = __import__(module, fromlist=["app"])
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue  # that area is not installed in this build
            raise
        app.add_typer(mod.app, name=name, help=help_)


_mount()


def main() -> None:
    app()
