"""Settlement throughput: certified orders per second with 5 authorities in one process, and the cost of one
signature check.

Two phases per order, both through the real code (orders, `OrderSubmitter`, `Authority`, `Ledger`):
- certify: a user seals a Transfer; the submitter sends it to the authorities, `--batch` orders per dispatch; each
  authority opens every order of the batch (checks the user's signature), checks it against its ledger, writes the
  batch's locks to its own sqlite store in one transaction (WAL, synchronous=FULL: on disk before any signature, as
  in the daemon), and signs one batch vote for the orders it accepted (`Authority.handle_orders`: one signature over the
  Merkle root of their vote digests, a membership proof per order); the submitter checks each order's vote (the
  batch signature once, through a `VerifyCache`, and the order's proof) and stops at 6,667 voting power.
  `orders_per_s` is this rate.
- confirm: the certificates are applied at all 5 authorities (each checks the other authorities' batch signatures
  once per batch and every order's proofs; its own votes and the order signatures it already checked are
  remembered).

Authorities are separate parties on separate machines, and a submitter gathers their votes in parallel. The default
run models that inside one process: each authority runs on its own thread, while the submitter's thread seals the
next batch and checks the votes of the previous one. Ed25519 in pynacl releases the GIL, so the parties' signature
work can share the machine's cores; everything else holds the GIL, and on this kind of workload the handovers of
the GIL cost much of what a second core gives. The submitter asks authorities in turn until the power asked covers
the quorum (one more after a refusal): a further authority's vote would arrive after the certificate formed and
only take this process's shared cores. Reported beside it, in the same run:
- `orders_per_s_one_thread`: the same batches with every party on the calling thread;
- `orders_per_s_single_votes_*`: the same with one vote signature per order (the protocol before batch votes),
  one order at a time on one thread, and in batches with threads;
- `orders_per_s_memory_store`: the same with each authority's locks and log in memory (what durability costs);
- `one_authority_votes_per_s`: one authority's own rate (votes per CPU second of its thread), which is what bounds
  a deployment where each authority has its own machine;
- the signature floor on one core (what the Ed25519 operations alone cost per order, with batch votes and with one
  vote per order), and the pipeline with the simulator's stand-in signer (what the protocol costs without
  cryptography).
Prints the ratios and writes JSON (`--json` prints it as the last line).
"""

import argparse
import os
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from _report import write_result

ROOT = Path(__file__).resolve().parents[1]

from moenode.core.authority import Authority  # noqa: E402
from moenode.core.crypto import Ed25519Signer, H, ed25519_verify  # noqa: E402
from moenode.core.errors import ProtocolError  # noqa: E402
from moenode.core.ledger import VerifyCache  # noqa: E402
from moenode.core.ledger_client import Certified, Failed, OrderSubmitter, SendOrder, refusal_of  # noqa: E402
from moenode.core.orders import BatchVote, CertifiedOrder, Transfer  # noqa: E402
from moenode.core.selection import CERT_THRESHOLD  # noqa: E402
from moenode.store.ledger_db import LedgerDB  # noqa: E402
from moenode.testing.demo import usable_cores  # noqa: E402
from moenode.testing.ledgerkit import T0, Net  # noqa: E402

AUTHORITIES = 5
Answer = bytes | BatchVote | ProtocolError


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


# one party per thread ---------------------------------------------------------------------------------------------
class AuthorityHost:
    """One authority on a thread of its own, as if on its own machine (or, `threaded=False`, on the caller's)."""

    def __init__(self, authority: Authority, threaded: bool, batch_votes: bool):
        self.authority, self.batch_votes = authority, batch_votes
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="authority") if threaded else None
        self.votes, self.vote_cpu_s, self.apply_cpu_s = 0, 0.0, 0.0  # CPU time of its own work: its capacity

    def vote(self, requests: list[SendOrder]) -> "Future[list[Answer]]":
        return self._run(self._vote, requests)

    def apply(self, certs: list[bytes]) -> "Future[None]":
        return self._run(self._apply, certs)

    def _run(self, fn, arg) -> Future:
        if self.thread is not None:
            return self.thread.submit(fn, arg)
        done: Future = Future()
        done.set_result(fn(arg))
        return done

    def _vote(self, requests: list[SendOrder]) -> list[Answer]:
        t = time.thread_time()
        out: list[Answer] = [ProtocolError("unanswered")] * len(requests)
        # a batch vote for the plain requests; one with attachments (a retry) is answered on its own
        plain = [i for i, r in enumerate(requests) if self.batch_votes and not r.attachments]
        if plain:
            for i, answer in zip(plain, self.authority.handle_orders([requests[i].order for i in plain], T0)):
                out[i] = answer
        for i in sorted(set(range(len(requests))) - set(plain)):
            try:
                out[i] = self.authority.handle_order(requests[i].order, T0, requests[i].attachments)
            except ProtocolError as e:
                out[i] = e
        self.vote_cpu_s += time.thread_time() - t
        self.votes += len(requests)
        return out

    def _apply(self, certs: list[bytes]) -> None:
        t = time.thread_time()
        for c in certs:
            self.authority.accept_certificate(c)
        self.apply_cpu_s += time.thread_time() - t

    def close(self) -> None:
        if self.thread is not None:
            self.thread.shutdown()


@dataclass
class Pending:
    """One order on its way to a certificate: its submitter, the requests not sent yet, the voting power asked."""

    sub: OrderSubmitter
    unsent: list[SendOrder]
    asked: int = 0
    cert: CertifiedOrder | None = None

    def take(self, effects: list) -> None:
        for eff in effects:
            if isinstance(eff, Certified):
                self.cert = eff.cert
            elif isinstance(eff, Failed):
                raise RuntimeError(f"an order failed to certify: {eff.reason}")
            else:
                self.unsent.append(eff)


Wave = dict[bytes, tuple[list[Pending], Future]]


@dataclass
class Submitter:
    """The submitter's side: batches of orders sent to the authority hosts, votes checked as each batch returns."""

    hosts: dict[bytes, AuthorityHost]
    power: dict[bytes, int]
    certs: list[CertifiedOrder] = field(default_factory=list)

    def send(self, batch: list[Pending]) -> Wave:
        """Ask authorities in turn until the power asked (plus the votes held) covers the quorum; one dispatch each."""
        to: dict[bytes, list[tuple[Pending, SendOrder]]] = {}
        for p in batch:
            while p.cert is None and p.unsent and p.asked + p.sub.power_of(p.sub.votes) < CERT_THRESHOLD:
                req = p.unsent.pop()
                to.setdefault(req.authority, []).append((p, req))
                p.asked += self.power[req.authority]
        return {pk: ([p for p, _ in reqs], self.hosts[pk].vote([r for _, r in reqs])) for pk, reqs in to.items()}

    def collect(self, batch: list[Pending], wave: Wave) -> None:
        """Check the votes as each authority's batch returns; ask again for orders that still lack a quorum."""
        while wave:
            from_pk = {fut: pk for pk, (_, fut) in wave.items()}
            for fut in as_completed(from_pk):
                pk = from_pk[fut]
                for p, answer in zip(wave[pk][0], fut.result()):
                    p.asked -= self.power[pk]
                    if isinstance(answer, ProtocolError):
                        p.take(p.sub.on_refusal(pk, *refusal_of(answer)))
                    else:
                        p.take(p.sub.on_vote(pk, answer))  # the submitter checks the vote's signature here
            wave = self.send(batch)
        for p in batch:
            if p.cert is None:
                raise RuntimeError("an order ran out of authorities to ask")
            self.certs.append(p.cert)


def run(orders: int, cheap: bool, check_votes: bool = True, batch: int = 50, threads: bool = True,
        batch_votes: bool = True, durable: bool = True) -> dict:
    """Certify then apply `orders` Transfers, `batch` orders per dispatch to each authority (a batch vote each with
    `batch_votes`, else one vote per order). `threads`: each authority on its own thread, the submitter checking one
    batch's votes while the authorities vote on the next; else every party on the calling thread in turn.
    `durable`: each authority keeps its locks and log in its own sqlite file (the daemon's store), else in memory."""
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        stores = (lambda i, net_id: LedgerDB(Path(tmp) / f"a{i}.sqlite", net_id)) if durable else None
        return _run(orders, cheap, check_votes, batch, threads, batch_votes, stores)


def _run(orders: int, cheap: bool, check_votes: bool, batch: int, threads: bool, batch_votes: bool, stores) -> dict:
    # one payer per order, so every order is at sequence 0 and the certify phase needs no confirmations first
    net = Net(n=AUTHORITIES, users=orders + 1, cheap=cheap, name="bench-ledger", stores=stores)
    hosts = {a.me: AuthorityHost(a, threads, batch_votes) for a in net.authorities}
    power = net.ledger.power_at(0)
    users = net.user_keys
    # the submitter's verifier remembers what it checked, so a batch signature is checked once per batch
    verify = VerifyCache(net.verify) if check_votes else (lambda pk, d, s: True)
    submitter = Submitter(hosts, power)
    depth = 1 if threads else 0  # batches in flight while the submitter checks the votes of an earlier one
    in_flight: deque[tuple[list[Pending], Wave]] = deque()
    t0 = time.perf_counter()
    for lo in range(0, orders, batch):
        pending = []
        for i in range(lo, min(orders, lo + batch)):
            u, v = users[i], users[i + 1]
            sub = OrderSubmitter(net.seal(Transfer(u.public_key, 0, 0, v.public_key, 1), u), power, verify)
            pending.append(Pending(sub, sub.start()))
        in_flight.append((pending, submitter.send(pending)))
        while len(in_flight) > depth:
            submitter.collect(*in_flight.popleft())
    while in_flight:
        submitter.collect(*in_flight.popleft())
    t1 = time.perf_counter()
    data = [c.encode() for c in submitter.certs]
    for f in [h.apply(data) for h in hosts.values()]:
        f.result()
    t2 = time.perf_counter()
    for h in hosts.values():
        h.close()
    for a in net.authorities:
        if isinstance(a.store, LedgerDB):
            a.store.close()
    assert len(submitter.certs) == orders and len(net.digests()) == 1
    for a in net.authorities:
        a.ledger.assert_supply()
    return {"orders": orders, "certify_s": t1 - t0, "confirm_s": t2 - t1,
            "orders_per_s": orders / (t1 - t0), "confirmed_per_s": orders / (t2 - t0),
            "one_authority_votes_per_s": min(h.votes / h.vote_cpu_s for h in hosts.values() if h.votes),
            "one_authority_applies_per_s": orders / max(h.apply_cpu_s for h in hosts.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    ap.add_argument("--orders", type=int, default=1_000)
    ap.add_argument("--batch", type=int, default=50, help="orders per dispatch to an authority (one batch vote)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; the best of each variant is reported")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ledger.json"))
    args = ap.parse_args()
    # The authorities are threads of one process only to model separate machines. A thread back from its fsync
    # would otherwise wait up to CPython's default 5 ms for the GIL while another runs Python (measured: the
    # threaded run fell below the one-thread run); 1 ms bounds that handover without making switches dominate.
    sys.setswitchinterval(0.001)
    best, costs = measure(args.orders, args.batch, args.reps)
    result = summarize(args.orders, args.batch, args.reps, best, costs)
    print_summary(result, best["real"]["orders_per_s"])
    write_result(result, args.out, args.json)


def measure(orders: int, b: int, reps: int) -> tuple[dict[str, dict], list[tuple[float, float]]]:
    """The best run of each variant over `reps` repetitions, and the signature costs measured in each."""
    # the machine is shared: interleave the variants and keep each one's best repetition
    variants = {"real": {"cheap": False, "batch": b}, "one_thread": {"cheap": False, "batch": b, "threads": False},
                "single_votes": {"cheap": False, "batch": 1, "threads": False, "batch_votes": False},
                "single_votes_threads": {"cheap": False, "batch": b, "batch_votes": False},
                "trusting": {"cheap": False, "batch": b, "check_votes": False},
                "memory": {"cheap": False, "batch": b, "durable": False},
                "base": {"cheap": True, "batch": b}}
    best: dict[str, dict] = {}
    costs = []
    for _ in range(reps):
        costs.append(sig_costs(2_000))
        for name, kw in variants.items():
            r = run(orders, **kw)
            if name not in best or r["orders_per_s"] > best[name]["orders_per_s"]:
                best[name] = r
    return best, costs


def summarize(orders: int, b: int, reps: int, best: dict[str, dict], costs: list[tuple[float, float]]) -> dict:
    real, one, single, single_thr, trusting, memory, base = (best[n] for n in (
        "real", "one_thread", "single_votes", "single_votes_threads", "trusting", "memory", "base"))
    verify_us, sign_us = min(c[0] for c in costs), min(c[1] for c in costs)
    # Ed25519 work per certified order in one process: the user's signature, then for each of the 4 authorities
    # the submitter reaches quorum with (a 5th is not asked unless one refuses): its check of the order, and its
    # vote and the submitter's check of that vote, once per order or, with batch votes, once per batch
    quorum_votes = 4
    single_floor_us = sign_us + quorum_votes * (2 * verify_us + sign_us)
    floor_us = sign_us + quorum_votes * (verify_us + (sign_us + verify_us) / b)
    floor, single_floor = 1e6 / floor_us, 1e6 / single_floor_us
    return {
        "bench": "ledger", "authorities": AUTHORITIES, "orders": orders, "reps": reps,
        "batch": b, "cores": usable_cores(), "load_avg_1min": round(os.getloadavg()[0], 2),
        "switch_interval_s": sys.getswitchinterval(), "store": "sqlite (WAL; locks fsynced per batch)",
        "orders_per_s": round(real["orders_per_s"], 1),
        "orders_per_s_one_thread": round(one["orders_per_s"], 1),
        "orders_per_s_single_votes_one_thread": round(single["orders_per_s"], 1),
        "orders_per_s_single_votes_threads": round(single_thr["orders_per_s"], 1),
        "confirmed_orders_per_s": round(real["confirmed_per_s"], 1),
        "confirmed_orders_per_s_single_votes": round(single["confirmed_per_s"], 1),
        "orders_per_s_submitter_trusts_votes": round(trusting["orders_per_s"], 1),
        "orders_per_s_memory_store": round(memory["orders_per_s"], 1),
        "confirmed_orders_per_s_memory_store": round(memory["confirmed_per_s"], 1),
        "one_authority_votes_per_s": round(real["one_authority_votes_per_s"], 1),
        "one_authority_votes_per_s_single_votes": round(single["one_authority_votes_per_s"], 1),
        "one_authority_applies_per_s": round(real["one_authority_applies_per_s"], 1),
        "sig_check_us": round(verify_us, 1), "sign_us": round(sign_us, 1),
        "signature_floor_orders_per_s": round(floor, 1),
        "signature_floor_single_votes_orders_per_s": round(single_floor, 1),
        "baseline_stand_in_signer_orders_per_s": round(base["orders_per_s"], 1),
        "ratio_to_single_votes": round(real["orders_per_s"] / single["orders_per_s"], 3),
        "ratio_threads_to_one_thread": round(real["orders_per_s"] / one["orders_per_s"], 3),
        "ratio_to_signature_floor_one_core": round(real["orders_per_s"] / floor, 3),
        "ratio_to_stand_in": round(real["orders_per_s"] / base["orders_per_s"], 3),
        "ratio_sqlite_to_memory_store": round(real["orders_per_s"] / memory["orders_per_s"], 3),
        "target_orders_per_s": 2_000,
    }


def print_summary(r: dict, orders_per_s: float) -> None:
    print(f"signature check {r['sig_check_us']:.1f} us, sign {r['sign_us']:.1f} us; {r['cores']} usable cores,"
          f" load average {r['load_avg_1min']}")
    print(f"certified orders/s (Ed25519, 5 authorities, batch votes of {r['batch']}, a thread per authority):"
          f" {r['orders_per_s']:.0f}  (submitter trusting votes: {r['orders_per_s_submitter_trusts_votes']:.0f})")
    print(f"  the same on one thread:                     {r['orders_per_s_one_thread']:.0f}"
          f"  threads/one thread {r['ratio_threads_to_one_thread']:.2f}")
    print(f"  one vote per order, one thread:             {r['orders_per_s_single_votes_one_thread']:.0f}"
          f"  (threads: {r['orders_per_s_single_votes_threads']:.0f});"
          f" batch votes/single {r['ratio_to_single_votes']:.2f}")
    print(f"  locks and log in memory, not sqlite:        {r['orders_per_s_memory_store']:.0f}"
          f"  sqlite/memory {r['ratio_sqlite_to_memory_store']:.2f}")
    print(f"certified and applied at all 5:               {r['confirmed_orders_per_s']:.0f}"
          f"  (one vote per order: {r['confirmed_orders_per_s_single_votes']:.0f})")
    print(f"one authority alone (per CPU second): votes/s {r['one_authority_votes_per_s']:.0f}"
          f" (one vote per order: {r['one_authority_votes_per_s_single_votes']:.0f}),"
          f" certificates applied/s {r['one_authority_applies_per_s']:.0f}")
    print(f"signature floor, one core:                    {r['signature_floor_orders_per_s']:.0f}"
          f"  ratio {r['ratio_to_signature_floor_one_core']:.2f}"
          f"  (one vote per order: {r['signature_floor_single_votes_orders_per_s']:.0f})")
    print(f"stand-in signer (no crypto):                  {r['baseline_stand_in_signer_orders_per_s']:.0f}"
          f"  ratio {r['ratio_to_stand_in']:.2f}")
    print(f"target {r['target_orders_per_s']}: {'met' if orders_per_s >= 2_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
