"""The core compiled with mypyc (`scripts/build_mypyc.py`, optional) reaches the same outcomes as the pure core.

The same scripted message-level simulation (equivocators, withholders and fake scores on uneven links: 9 of its
12 rounds certify, and equivocators are slashed) runs in two fresh interpreters, one on the sources and one with
the compiled overlay ahead of them, and must give the same events, per-submission outcomes, balances, stakes and
rejections.

`test_an_existing_build_matches_the_pure_core` uses build/mypyc when it is there and current (skipped otherwise:
the build is optional). `test_a_fresh_build_matches_the_pure_core` compiles one into a temporary directory (about a
minute on two cores, so it is marked slow; it is skipped where mypyc or a C toolchain is missing).
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "mypyc"

# Runs in the child: the outcomes of one scripted simulation, as JSON.
SCRIPT = """
import json, sys
import moenode.core.round
from moenode.sim.config import override
from moenode.sim.message import MessageSim
from moenode.testing.simkit import small

sc = override(small(nodes=24, submissions=12), {"net.latency_spread": 0.4, "net.jitter": 0.2,
              "adversary.equivocate": 0.05, "adversary.withhold": 0.05, "adversary.fake": 0.05})
m = MessageSim(sc)
r = m.run()
print(json.dumps({"round_module": moenode.core.round.__file__, "events": r["events"], "deliveries": r["deliveries"],
                  "trace": m.trace, "settled": m.book.settled, "slashed": m.book.slashed_total,
                  "rejections": m.rejections,
                  "balances": {k.hex(): v for k, v in sorted(m.book.balances.items())},
                  "stakes": {k.hex(): v for k, v in sorted(m.book.stakes.items())}}, default=repr))
"""


def outcomes(overlay: Path | None) -> dict:
    path = ([str(overlay)] if overlay else []) + [str(ROOT)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-P", "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def assert_same_outcomes(overlay: Path) -> None:
    pure, compiled = outcomes(None), outcomes(overlay)
    assert pure["round_module"].endswith(".py")
    assert compiled["round_module"].startswith(str(overlay)) and not compiled["round_module"].endswith(".py")
    assert pure["settled"] > 0 and pure["trace"] and pure["slashed"] > 0
    for key in ("events", "deliveries", "trace", "settled", "slashed", "rejections", "balances", "stakes"):
        assert compiled[key] == pure[key], key


def build_problem(overlay: Path) -> str:
    """Why the build in `overlay` cannot be used here ("" when it can)."""
    manifest = overlay / "manifest.json"
    if not manifest.exists():
        return f"no compiled core in {overlay} (optional: python scripts/build_mypyc.py builds it)"
    sources = json.loads(manifest.read_text())["sources"]
    from hashlib import sha256

    core = ROOT / "moenode" / "core"
    changed = [m for m, digest in sources.items()
               if not (core / f"{m}.py").exists() or sha256((core / f"{m}.py").read_bytes()).hexdigest() != digest]
    return f"the compiled core in {overlay} is older than {', '.join(changed)}: rebuild it" if changed else ""


def test_an_existing_build_matches_the_pure_core():
    problem = build_problem(BUILD)
    if problem:
        pytest.skip(problem)
    assert_same_outcomes(BUILD)


@pytest.mark.slow
def test_a_fresh_build_matches_the_pure_core(tmp_path):
    if importlib.util.find_spec("mypyc") is None:
        pytest.skip("mypyc is not installed (it comes with mypy, a test extra)")
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("no Python headers")
    out = tmp_path / "mypyc"
    built = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_mypyc.py"), "--out", str(out)],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    assert build_problem(out) == ""
    assert_same_outcomes(out)
