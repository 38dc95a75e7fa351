"""The mounted `moenode` command: every command and group, at every level, answers --help; the node's and the
testnet's commands show an example."""

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from moenode.cli import app

runner = CliRunner()

COMMANDS = [["init"], ["run"], ["resync"], ["submit"], ["status"], ["transfer"], ["stake"], ["testnet", "up"],
            ["testnet", "down"], ["testnet", "status"], ["testnet", "demo"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(cmd):
    r = runner.invoke(app, cmd + ["--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output and "moenode " in r.output


def _command_paths(cmd, path: list[str], ctx) -> list[list[str]]:
    paths = [path]
    if hasattr(cmd, "list_commands"):  # a group
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            paths += _command_paths(sub, path + [name], type(ctx)(sub, parent=ctx, info_name=name))
    return paths


def test_every_command_of_the_mounted_app_answers_help():
    root = typer.main.get_command(app)
    context = sys.modules[type(root).__mro__[1].__module__].Context  # typer's own click
    paths = _command_paths(root, [], context(root, info_name="moenode"))
    assert {"init", "testnet up", "expert score", "sim run"} <= {" ".join(p) for p in paths}
    for path in paths:
        r = runner.invoke(app, path + ["--help"])
        assert r.exit_code == 0 and "Usage:" in r.output, (path, r.output)


def test_python_m_moenode_runs_the_command():
    r = subprocess.run([sys.executable, "-m", "moenode", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "testnet" in r.stdout and "sim" in r.stdout, r.stderr
