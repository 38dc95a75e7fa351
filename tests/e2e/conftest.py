"""One 5-node testnet of real daemon processes, shared by the e2e tests of a session (it takes a while to start).

Models: two general encoders and two domain specialists at genesis; the third specialist is kept for the late
joiner, so it has a specialty no genesis node covers. Every process is stopped at the end, whatever happens.
Tests that kill a node restart it before they finish, so the next test finds five live nodes.
"""

import os
import signal

import pytest

from e2ekit import E2E_EPOCH_MS, E2E_NODES, GENESIS_MODELS

from moenode.testing.testnet import Testnet


@pytest.fixture(scope="session")
def testnet(tmp_path_factory):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the finaliser below still stops every daemon
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    root = tmp_path_factory.mktemp("testnet")
    tn = Testnet.create(root, E2E_NODES, models=GENESIS_MODELS, epoch_ms=E2E_EPOCH_MS)
    with tn:  # stops every node on exit, also when start-up or a test fails
        tn.start(timeout=300)
        yield tn
