"""Test-wide setup: numeric libraries on one thread, and each test folder's helper kits importable by name.

Tests run with `--import-mode=importlib` (folders hold files with the same basename, like test_testnet.py), so the
folders are put on sys.path here rather than by pytest.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

for folder in sorted(p for p in Path(__file__).parent.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
