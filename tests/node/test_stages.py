"""CPU by stage: a block's thread CPU time is added to its stage, waiting is not, and an unknown stage is a bug."""

import threading
import time

import pytest

from moenode.node.stages import STAGE_NAMES, StageCPU


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_stage_counts_the_cpu_of_its_blocks_in_every_thread_and_not_their_waiting():
    st = StageCPU()
    with st.measure("verification"):
        spin(0.05)
        time.sleep(0.3)  # waiting costs no CPU

    def work() -> None:
        with st.measure("member_embed"):
            spin(0.03)

    workers = [threading.Thread(target=work) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    snap = st.snapshot()
    assert 0.05 <= snap["verification"]["cpu_s"] < 0.3 and snap["verification"]["calls"] == 1
    assert snap["member_embed"]["calls"] == 3 and snap["member_embed"]["cpu_s"] >= 0.09
    assert set(snap) == set(STAGE_NAMES) and snap["routing_vectors"] == {"cpu_s": 0.0, "calls": 0}


def test_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown stage"):
        with StageCPU().measure("networking"):
            pass
