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


def _help(path: list[str]) -> str:
    return runner.invoke(app, path + ["--help"], terminal_width=200).output


def test_every_command_has_examples_no_type_tags_and_cites_only_commands_that_exist():
    """`expert zoo/score/train` and `sim run` had no examples, every option showed a `<bool>`/`<str>` tag, and
    `init --help` cited `moenode expert list`, which does not exist."""
    import re

    root = typer.main.get_command(app)
    context = sys.modules[type(root).__mro__[1].__module__].Context
    paths = [p for p in _command_paths(root, [], context(root, info_name="moenode")) if p and p[-1] not in
             ("testnet", "expert", "sim")]
    names = {" ".join(p) for p in paths} | {"testnet", "expert", "sim"}
    for path in paths:
        text = _help(path)
        assert "Example" in text and "moenode " + " ".join(path) in text, path
        assert not re.search(r"<(bool|str|int|float|path|list\[str\])>", text), (path, text)
        for cited in re.findall(r"moenode ((?:[a-z]+)(?: [a-z]+)?)", text):
            words = cited.split()
            assert words[0] in names or " ".join(words) in names, (path, cited)
            if words[0] in ("testnet", "expert", "sim") and len(words) > 1:
                assert " ".join(words) in names, (path, cited)


def test_python_m_moenode_runs_the_command():
    r = subprocess.run([sys.executable, "-m", "moenode", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "testnet" in r.stdout and "sim" in r.stdout, r.stderr
