"""Cost of one full shard round of the sans-IO core, for shard sizes n = 3, 8 and 33.

Two variants in the same run: real Ed25519 signatures with every delivery decoded and checked (as the daemon does),
and the baseline with the stand-in signer and no re-decoding (what the simulator's market runs on). Prints the
ratio and writes JSON (`--json` prints it as the last line too).
"""

import argparse
import statistics
import time
from pathlib import Path

from _report import write_result

ROOT = Path(__file__).resolve().parents[1]

from moenode.core.crypto import CheapSigner, Ed25519Signer, cheap_verify  # noqa: E402
from moenode.core.selection import shard_size  # noqa: E402
from moenode.testing.roundkit import Scenario, make_signers  # noqa: E402

NETWORK_FOR_SHARD = {3: 3, 8: 20, 33: 1000}
ITEMS = ["a sentence to embed", "another one", "and a third"]


def measure(n: int, crypto: bool, rounds: int) -> dict:
    N = NETWORK_FOR_SHARD[n]
    assert shard_size(N)[0] == n
    signers = make_signers(N, b"bench")
    if not crypto:
        signers = [CheapSigner(s.public_key) for s in signers]  # type: ignore[misc]
    sc = Scenario(signers)  # type: ignore[arg-type]
    kw = {} if crypto else {"verify": cheap_verify, "decode": False}
    submitter = Ed25519Signer.from_entropy(b"bench-submitter")
    if not crypto:
        submitter = CheapSigner(submitter.public_key)  # type: ignore[assignment]
    shard = sc.shard(**kw)
    times, msgs = [], 0
    for i in range(rounds):
        t0 = time.perf_counter()
        res = shard.run(submitter, ITEMS, i.to_bytes(32, "big"))  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
        assert res.submitter.status == "certified"
        msgs = res.messages
    return {"ms_per_round": 1e3 * statistics.median(times), "messages": msgs,
            "us_per_message": 1e6 * statistics.median(times) / msgs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "core_round.json"))
    args = ap.parse_args()
    result = {"bench": "core_round", "rows": []}
    print(f"{'n':>3} {'messages':>8} {'stand-in ms':>12} {'ed25519 ms':>11} {'ratio':>6}")
    for n in (3, 8, 33):
        base = measure(n, crypto=False, rounds=args.rounds)
        real = measure(n, crypto=True, rounds=max(2, args.rounds // 2) if n == 33 else args.rounds)
        ratio = real["ms_per_round"] / base["ms_per_round"]
        result["rows"].append({"n": n, "messages": real["messages"], "baseline": base, "ed25519": real,
                               "ratio": round(ratio, 2)})
        print(f"{n:>3} {real['messages']:>8} {base['ms_per_round']:>12.2f} {real['ms_per_round']:>11.2f} {ratio:>6.2f}")
    write_result(result, args.out, args.json)


if __name__ == "__main__":
    main()
