"""The package is type-checked: the core strictly (`mypy --strict moenode/core`: it imports nothing else of ours),
the rest at mypy's default level (`mypy`, configured in pyproject.toml), both without errors."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MYPY = Path(sys.executable).with_name("mypy")


def mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(MYPY), "--no-incremental", "--cache-dir", "/dev/null", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # a minute of CPU each
def test_the_core_passes_mypy_strict():
    r = mypy("--strict", "moenode/core")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_the_package_passes_mypy():
    r = mypy()
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_checker_can_fail(tmp_path):
    """A wrongly typed module is reported."""
    (tmp_path / "wrong.py").write_text("def f(x: int) -> str:\n    return x\n")
    r = mypy("--strict", "wrong.py", cwd=tmp_path)
    assert r.returncode == 1 and 'Incompatible return value type (got "int", expected "str")' in r.stdout, r.stdout
