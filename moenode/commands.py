"""Node-side commands of the `moenode` CLI (init, run, submit, status, testnet ...)."""

import typer


def register_node_commands(app: typer.Typer) -> None:
    testnet = typer.Typer(help="Run a local multi-node testnet.", no_args_is_help=True)
    app.add_typer(testnet, name="testnet")

    @testnet.command("demo")
    def demo(
        nodes: int = typer.Option(5, help="Shard members."),
        submissions: int = typer.Option(20, help="Batches to certify."),
        json_out: str = typer.Option("", "--json", help="Write the summary as JSON to this path."),
    ) -> None:
        """Run rounds end to end and print their certificates."""
        from moenode.demo import run_core_demo

        run_core_demo(nodes, submissions, json_out or None)
