"""Small scenarios and fast round timers shared by the simulator tests and benchmarks."""

from moenode.sim.config import parse

FAST_PARAMS = """
[params]
commit_timeout_ms = 5000
grace_min_ms = 300
grace_cap_ms = 2000
vote_timeout_ms = 2000
reveal_timeout_ms = 2000
report_timeout_ms = 2000
round_abort_ms = 60000
"""


def small(nodes: int = 24, submissions: int = 40, extra: str = "", net: str = "", fidelity: str = "message",
          sim: str = ""):
    """Sequential rounds on uniform links: the setting in which both fidelity levels must agree exactly."""
    return parse(f"""
[sim]
name = "small"
nodes = {nodes}
submissions = {submissions}
fidelity = "{fidelity}"
epoch_submissions = 20
chunk = 1
per_batch = 2
link_ms = 40
verify_ms = 20
trace = true
{sim}
[world]
domains = 4
{extra}
[net]
latency_ms = 40
latency_spread = 0.0
jitter = 0.0
bandwidth_mbps = 1e9
interval_ms = 20000
{net}
{FAST_PARAMS}
""")
