"""CPU time by stage: what this process's threads spent on each part of serving a round.

Theory of operation: `StageCPU.measure(stage)` reads the calling thread's CPU clock (`time.thread_time`) before and
after a block and adds the difference to the stage. A thread's clock counts only that thread, so work on the trio
thread and on worker threads is attributed to whichever stage wrapped it, and time spent waiting is never counted.
Stages must not nest (a nested block would be counted twice); each call site wraps one disjoint piece of work.

The stages (what `bench/cost.py` reports, against the process's total CPU from /proc):

| stage | what it wraps |
|---|---|
| member_embed | the encoder on the batch's items: the embeddings a submitter buys |
| routing_vectors | the router model on the batch's items (route choice and the payload's routing vectors) |
| scoring_views | tokenising and embedding the split-half views of the batch's items, and the exact losses |
| reference_negatives | embedding the reference corpus views that top up a small bucket's negatives |
| verification | re-executing a candidate's sample (`scoring.verify_payload`) |
| codec_signatures | decoding and checking peer messages, and the round state machines' steps (they seal and sign) |

Whatever the process spends outside these stages (libp2p, trio, gossip, the ledger, the control API, timers) is
the rest: a benchmark gets it as the process's CPU minus the stages.

Counters are per process (one daemon per process in a deployment); `STAGES` is the process's instance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STAGE_NAMES = ("member_embed", "routing_vectors", "scoring_views", "reference_negatives", "verification",
               "codec_signatures")


class StageCPU:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds = dict.fromkeys(STAGE_NAMES, 0.0)
        self._calls = dict.fromkeys(STAGE_NAMES, 0)

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        if stage not in self._seconds:
            raise ValueError(f"unknown stage {stage!r} (known: {', '.join(STAGE_NAMES)})")
        t0 = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - t0
            with self._lock:
                self._seconds[stage] += spent
                self._calls[stage] += 1

    def snapshot(self) -> dict[str, dict[str, float]]:
        """{stage: {"cpu_s": seconds, "calls": n}} so far."""
        with self._lock:
            return {s: {"cpu_s": round(self._seconds[s], 6), "calls": self._calls[s]} for s in STAGE_NAMES}


STAGES = StageCPU()
