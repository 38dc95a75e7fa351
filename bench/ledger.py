"""Settlement throughput: certified orders per second with 5 authorities in one process, and the cost of one
signature check.

Two phases per order, both through the real code (orders, `OrderSubmitter`, `Authority`, `Ledger`):
- certify: a user seals a Transfer; the submitter sends it to the 5 authorities; each opens it (checks the
  user's signature), checks it against its ledger, writes its lock and signs a vote; the submitter checks each vote
  and stops at 6,667 voting power. `orders_per_s` is this rate.
- confirm: the certificate is applied at all 5 authorities (each checks the other authorities' votes; its own vote
  and the order signature it already checked are remembered).
Authorities run on separate machines in a network, so each one's own rate (`one_authority_votes_per_s`: its time
inside `handle_order`) is what bounds a deployment; in one process every party's signatures share one core.
Baselines in the same run: the signature floor (what the Ed25519 operations alone cost per order), and the same
pipeline with the simulator's stand-in signer (what the protocol costs without cryptography). Prints the ratios and
writes JSON (`--json` prints it as the last line).
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "core"))

from ledgerkit import T0, Net  # noqa: E402

from moenode.core.crypto import Ed25519Signer, H, ed25519_verify  # noqa: E402
from moenode.core.errors import ProtocolError  # noqa: E402
from moenode.core.ledger_client import Certified, OrderSubmitter, SendOrder, refusal_of  # noqa: E402
from moenode.core.orders import Transfer  # noqa: E402

AUTHORITIES = 5


def sig_costs(reps: int) -> tuple[float, float]:
    s = Ed25519Signer.from_entropy(b"bench-sig")
    d = H("bench", b"x")
    sig = s.sign(d)
    t = time.perf_counter()
    for _ in range(reps):
        ed25519_verify(s.public_key, d, sig)
    verify_us = (time.perf_counter() - t) / reps * 1e6
    t = time.perf_counter()
    for _ in range(reps):
        s.sign(d)
    return verify_us, (time.perf_counter() - t) / reps * 1e6


def run(orders: int, cheap: bool, check_votes: bool = True) -> dict:
    # one payer per order, so every order is at sequence 0 and the certify phase needs no confirmations first
    net = Net(n=AUTHORITIES, users=orders + 1, cheap=cheap, name="bench-ledger")
    by_pk = {a.me: a for a in net.authorities}
    power = net.ledger.power_at(0)
    users = net.user_keys
    verify = net.verify if check_votes else (lambda pk, d, s: True)
    certs = []
    in_auth: dict[bytes, float] = {}  # seconds each authority spent voting: its own capacity
    t0 = time.perf_counter()
    for i in range(orders):
        u, v = users[i], users[i + 1]
        signed = net.seal(Transfer(u.public_key, 0, 0, v.public_key, 1), u)
        sub = OrderSubmitter(signed, power, verify)
        queue = sub.start()
        while queue:
            eff = queue.pop()
            if isinstance(eff, Certified):
                certs.append(eff.cert)
                break
            assert isinstance(eff, SendOrder), eff
            try:
                ta = time.perf_counter()
                vote = by_pk[eff.authority].handle_order(eff.order, T0)
                in_auth[eff.authority] = in_auth.get(eff.authority, 0.0) + time.perf_counter() - ta
                queue += sub.on_vote(eff.authority, vote)
            except ProtocolError as e:
                queue += sub.on_refusal(eff.authority, *refusal_of(e))
    t1 = time.perf_counter()
    for c in certs:
        data = c.encode()
        for a in net.authorities:
            a.accept_certificate(data)
    t2 = time.perf_counter()
    assert len(certs) == orders and len(net.digests()) == 1
    for a in net.authorities:
        a.ledger.assert_supply()
    busiest = max(in_auth.values())
    return {"orders": orders, "certify_s": t1 - t0, "confirm_s": t2 - t1,
            "orders_per_s": orders / (t1 - t0), "confirmed_per_s": orders / (t2 - t0),
            "one_authority_votes_per_s": orders / busiest,
            "one_authority_applies_per_s": orders * AUTHORITIES / (t2 - t1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    ap.add_argument("--orders", type=int, default=1_000)
    ap.add_argument("--reps", type=int, default=3, help="repetitions; the best of each variant is reported")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ledger.json"))
    args = ap.parse_args()
    # the machine is shared: interleave the variants and keep each one's best repetition
    best: dict[str, dict] = {}
    costs = []
    for _ in range(args.reps):
        costs.append(sig_costs(2_000))
        for name, kw in (("real", {"cheap": False}), ("trusting", {"cheap": False, "check_votes": False}),
                         ("base", {"cheap": True})):
            r = run(args.orders, **kw)
            if name not in best or r["orders_per_s"] > best[name]["orders_per_s"]:
                best[name] = r
    real, trusting, base = best["real"], best["trusting"], best["base"]
    verify_us, sign_us = min(c[0] for c in costs), min(c[1] for c in costs)
    # Ed25519 work per certified order in one process: the user's signature, then for each of the 4 authorities
    # the submitter reaches quorum with (the 5th is still in flight when the certificate forms): its check of the
    # order and its vote, and the submitter's check of that vote
    quorum_votes = 4
    floor_us = sign_us + quorum_votes * (2 * verify_us + sign_us)
    result = {
        "bench": "ledger", "authorities": AUTHORITIES, "orders": args.orders, "reps": args.reps,
        "orders_per_s": round(real["orders_per_s"], 1),
        "confirmed_orders_per_s": round(real["confirmed_per_s"], 1),
        "orders_per_s_submitter_trusts_votes": round(trusting["orders_per_s"], 1),
        "one_authority_votes_per_s": round(real["one_authority_votes_per_s"], 1),
        "one_authority_applies_per_s": round(real["one_authority_applies_per_s"], 1),
        "sig_check_us": round(verify_us, 1), "sign_us": round(sign_us, 1),
        "signature_floor_orders_per_s": round(1e6 / floor_us, 1),
        "baseline_stand_in_signer_orders_per_s": round(base["orders_per_s"], 1),
        "ratio_to_signature_floor": round(real["orders_per_s"] / (1e6 / floor_us), 3),
        "ratio_to_stand_in": round(real["orders_per_s"] / base["orders_per_s"], 3),
        "target_orders_per_s": 2_000,
    }
    print(f"signature check {verify_us:.1f} us, sign {sign_us:.1f} us")
    print(f"certified orders/s (Ed25519, 5 authorities): {result['orders_per_s']:.0f}"
          f"  (submitter trusting votes: {result['orders_per_s_submitter_trusts_votes']:.0f})")
    print(f"certified and applied at all 5:               {result['confirmed_orders_per_s']:.0f}")
    print(f"one authority alone: votes/s {result['one_authority_votes_per_s']:.0f},"
          f" certificates applied/s {result['one_authority_applies_per_s']:.0f}")
    print(f"signature floor:                              {result['signature_floor_orders_per_s']:.0f}"
          f"  ratio {result['ratio_to_signature_floor']:.2f}")
    print(f"stand-in signer (no crypto):                  {result['baseline_stand_in_signer_orders_per_s']:.0f}"
          f"  ratio {result['ratio_to_stand_in']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
