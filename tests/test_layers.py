"""The package's layers, checked: the import-linter contracts in pyproject.toml, and no import cycles between modules.

The contracts (run as `lint-imports` from the repository root) say which layer may import which: cli, then the
daemon, the testing tools and the simulator, then net, encoders and store, then the core, which imports nothing
of ours; the control client imports nothing of ours; only net imports libp2p, only encoders imports onnxruntime,
and nothing imports the command line. docs/architecture.md explains them.
"""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_the_import_contracts_hold():
    r = lint_imports()
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_broken_contract_is_reported(tmp_path):
    """The checker can fail: a rule the code breaks on purpose (the daemon without the core) is reported."""
    config = tmp_path / "broken.ini"
    config.write_text("[importlinter]\nroot_package = moenode\n\n[importlinter:contract:broken]\n"
                      "name = The daemon without the core\ntype = forbidden\nsource_modules = moenode.node\n"
                      "forbidden_modules = moenode.core\n")
    r = lint_imports("--config", str(config))
    assert r.returncode == 1 and "moenode.node is not allowed to import moenode.core" in r.stdout, r.stdout


def test_the_contracts_cover_every_top_level_module():
    """The core's contract names every other top-level module, so a new one cannot escape it (or the client's)."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    rules = {c["name"]: c for c in contracts if c["type"] == "forbidden"}
    core = rules["The core imports nothing of ours outside the core"]["forbidden_modules"]
    client = rules["The control client imports nothing of ours (it is importable from anywhere)"]["forbidden_modules"]
    top = grimp.build_graph("moenode", cache_dir=None).find_children("moenode")
    assert set(core) | {"moenode.core"} == top and set(client) | {"moenode.client"} == top


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every group of modules that import one another, directly or through others (strongly connected
    components of the import graph with more than one module; Tarjan's algorithm, iterative)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(edges[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_no_import_cycles_even_through_type_hints():
    """Imports made only for type hints count too: a cycle through a TYPE_CHECKING import is still a back-reference
    (the daemon's parts once named the `Node` that wires them). From the repository root, the same check is
    `python -m pytest -q tests/test_layers.py -k "cycle or daemon"`."""
    graph = grimp.build_graph("moenode", exclude_type_checking_imports=False, cache_dir=None)
    found = []
    for group in import_cycles(graph):
        first = group[0]
        cycle = graph.find_shortest_chain(first, group[1]) + graph.find_shortest_chain(group[1], first)[1:]
        found.append(f"{', '.join(group)}: e.g. {' -> '.join(cycle)}")
    assert not found, "import cycles:\n" + "\n".join(found)


DAEMON = "moenode.node.daemon"


def back_references(graph: grimp.ImportGraph) -> list[str]:
    """The daemon's modules that import the daemon (`moenode.node.daemon`, the composition root), type hints
    included. Only the package itself may name it (`moenode.node` loads `Node` and `run_node` on first use)."""
    importers = graph.find_modules_that_directly_import(DAEMON) if DAEMON in graph.modules else set()
    return sorted(m for m in importers if m.startswith("moenode.node.") and m != DAEMON)


def test_no_part_of_the_daemon_imports_the_daemon():
    graph = grimp.build_graph("moenode", exclude_type_checking_imports=False, cache_dir=None)
    found = back_references(graph)
    assert not found, f"these import {DAEMON} (pass them the context and their collaborators instead): {found}"


def test_the_back_reference_check_finds_a_type_hint_import(tmp_path):
    """The check can fail: a part that names `Node` only under TYPE_CHECKING is found."""
    pkg = tmp_path / "moenode" / "node"
    pkg.mkdir(parents=True)
    (tmp_path / "moenode" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "daemon.py").write_text("from moenode.node import rounds\n\nclass Node: ...\n")
    (pkg / "rounds.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                                   "    from moenode.node.daemon import Node\n")
    (pkg / "payments.py").write_text("import json\n")
    code = ("import grimp, json, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import test_layers as t; "
            "g = grimp.build_graph('moenode', exclude_type_checking_imports=False, cache_dir=None); "
            "print(json.dumps([t.back_references(g), t.import_cycles(g)]))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(ROOT / "tests")], capture_output=True,
                       text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    refs, cycles = json.loads(r.stdout)
    assert refs == ["moenode.node.rounds"] and cycles == [["moenode.node.daemon", "moenode.node.rounds"]]


def test_the_cycle_check_finds_every_cycle():
    """The check can fail: in a graph with two cycles (one through three modules) and a chain, it finds both."""
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d"), ("f", "a")]:
        graph.add_import(importer=importer, imported=imported)
    assert sorted(import_cycles(graph)) == [["a", "b", "c"], ["d", "e"]]
