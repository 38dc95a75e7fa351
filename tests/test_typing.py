"""The package is type-checked: the core strictly (`mypy --strict moenode/core`: it imports nothing else of ours),
the rest at mypy's default level (`mypy`, configured in pyproject.toml), both without errors."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MYPY = Path(sys.executable).with_name("mypy")


def start_mypy(*args: str, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen([str(MYPY), "--no-incremental", "--cache-dir", "/dev/null", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen) -> subprocess.CompletedProcess:
    """The outcome of a started check (killed after 900 s)."""
    try:
        out, err = p.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return finish(start_mypy(*args, cwd=cwd))


@pytest.fixture(scope="module")
def checks():
    """Both checks of the package, started together: each is one process on one core (a minute of CPU each),
    so on two cores the shorter one adds next to no wall time."""
    started = {"core": start_mypy("--strict", "moenode/core"), "package": start_mypy()}
    yield started
    for p in started.values():
        if p.poll() is None:
            p.kill()
            p.communicate()


@pytest.mark.slow
def test_the_core_passes_mypy_strict(checks):
    r = finish(checks["core"])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_the_package_passes_mypy(checks):
    r = finish(checks["package"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_checker_can_fail(tmp_path):
    """A wrongly typed module is reported."""
    (tmp_path / "wrong.py").write_text("def f(x: int) -> str:\n    return x\n")
    r = mypy("--strict", "wrong.py", cwd=tmp_path)
    assert r.returncode == 1 and 'Incompatible return value type (got "int", expected "str")' in r.stdout, r.stdout
