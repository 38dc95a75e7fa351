"""A probe of live nodes' control API: how long /status takes to answer, while an attack runs and after it.

It runs as a process of its own (`python -m moenode.testing.statusprobe`), so that what the attacker does in the bench's process
(CPU, the GIL, a trio loop busy with 2,000 streams) never shows up as the nodes' latency. It reads JSON lines on
stdin:

    {"homes": [...], "interval": 0.1, "timeout": 10}   first: the node homes to poll
    {"phase": "after"}                                   later samples count under this phase
    {"report": true}                                     print every sample so far as one JSON line; forget them
    {"report": true, "phase": "during"}                  the same, and later samples count under the new phase
    {"quit": true}

One thread per node sends GET /status every `interval` seconds, one request at a time, with the node's token, and
records the time to the complete answer or why there was none (a frozen node shows as a timeout). It finds the URL
and the token in the home (run.json, control.token) again after every failure, since a restarted node listens on
a new port. A request still out when a report is taken is dropped when it ends: its phase is the old one (a node
frozen by the last attack would otherwise charge its whole freeze to the phase before it). Standard library only.
"""

import json
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path


class Probe:
    def __init__(self, homes: list[str], interval: float, timeout: float):
        self.interval, self.timeout = interval, timeout
        self.phase = "during"
        self.generation = 0  # bumped by every report: a sample started before it is dropped
        self.samples: dict[str, list[tuple[str, float | None, str]]] = {Path(h).name: [] for h in homes}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.poll, args=(Path(h),), daemon=True) for h in homes]
        for t in self.threads:
            t.start()

    def poll(self, home: Path) -> None:
        where: tuple[str, str] | None = None
        while not self.stop.is_set():
            t0, phase, generation = time.monotonic(), self.phase, self.generation
            latency, error = None, ""
            try:
                where = where or locate(home)
                req = urllib.request.Request(where[0] + "/status", headers={"Authorization": f"Bearer {where[1]}"})
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    r.read()
                latency = time.monotonic() - t0
            except Exception as e:  # noqa: BLE001 - every failure is a sample: down, refused, timed out
                error, where = type(e).__name__, None
            with self.lock:
                if generation == self.generation:
                    self.samples[home.name].append((phase, latency, error))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def report(self) -> dict:
        with self.lock:
            taken = {name: list(s) for name, s in self.samples.items()}
            self.generation += 1
            for s in self.samples.values():
                s.clear()
        return {name: summarize(s) for name, s in taken.items()}


def locate(home: Path) -> tuple[str, str]:
    """(control URL, token) of the node running in `home`; raises while it is not up."""
    run = json.loads((home / "run.json").read_text())
    return run["control_url"], (home / "control.token").read_text().strip()


def summarize(samples: list[tuple[str, float | None, str]]) -> dict:
    """Per phase: answers, failures by kind, p50 and max latency in milliseconds."""
    out: dict[str, dict] = {}
    for phase in dict.fromkeys(p for p, _, _ in samples):
        ok = sorted(lat for p, lat, _ in samples if p == phase and lat is not None)
        errors: dict[str, int] = {}
        for p, lat, err in samples:
            if p == phase and lat is None:
                errors[err] = errors.get(err, 0) + 1
        out[phase] = {"answered": len(ok), "failed": sum(errors.values()), "errors": errors,
                      "p50_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
                      "max_ms": round(ok[-1] * 1000, 1) if ok else None}
    return out


def main() -> None:
    first = json.loads(sys.stdin.readline())
    probe = Probe(first["homes"], first.get("interval", 0.1), first.get("timeout", 10.0))
    for raw in sys.stdin:
        cmd = json.loads(raw)
        if "phase" in cmd:
            probe.phase = cmd["phase"]
        if cmd.get("report"):
            print(json.dumps(probe.report()), flush=True)
        if cmd.get("quit"):
            break
    probe.stop.set()


if __name__ == "__main__":
    main()
