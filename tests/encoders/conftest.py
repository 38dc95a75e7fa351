import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

GOLDEN = Path(__file__).parent / "data" / "mpnet-base"


@pytest.fixture(scope="session")
def mpnet():
    """The mpnet-base encoder, loaded once for the whole session (a 436 MB graph takes seconds to load)."""
    from moenode.encoders import zoo

    return zoo.load("mpnet-base")


@pytest.fixture(scope="session")
def mpnet_golden() -> tuple[dict, np.ndarray]:
    """(metadata, reference vectors) written by scripts/mpnet_reference.py."""
    return json.loads(GOLDEN.with_suffix(".json").read_text()), np.load(GOLDEN.with_suffix(".npy"))
