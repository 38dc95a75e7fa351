"""Vector spaces, measured against the targets: one index over many batches of one space.

Reads the embedding cache of `bench/space_models.py` (run `space_models.py embed` first: pooled vectors of
minilm-l6, minilm-l3 and mpnet-base on every corpus and audit text). Every model of the zoo here is those vectors
exactly as its graph maps them (the shipped specialists' adapters, adv-offspace's signed permutation). Label quality
is the global same-source MRR over a whole labelled set (`train.mrr`), per domain (the corpus eval split of 5
domains, the held-out audit set of 4) and on one mixed corpus of all of them.

1. **Same text, different winners.** For every pair of models of one space: the same-text cosine over every
   labelled text (p5, median); the target is p5 >= 0.95 and median >= 0.98 for every pair.
2. **Retrieval across batches.** Each labelled set is cut into batches of 16 (seeded shuffle); each batch is "won"
   by one model of the space and its vectors go into one index. Two winner policies: a uniformly random model of the
   space per batch (the most mixing the market can do, 5 seeds, the worst reported) and the home specialist of the
   batch's domain where there is one (else minilm-l6). Compared with the best single model of the space run alone
   on the same items; the target is a ratio >= 1.0. The same policies across spaces (minilm-l3 mixed in, no space
   rule) show what the rule prevents.
3. **Specialists keep their quality.** Each shipped specialist's home-domain MRR against the same fit without the
   space constraint (its "own vectors": split-half InfoNCE alone, from the cache of space_models.py); target >= 98%.
4. **Cheats win 0.** Real core rounds (`InProcessShard`, the real `MemberRound` with its in-round space check) on
   every batch with a shard of five: minilm-l6, the three specialists and adv-offspace, with adv-offspace claiming
   the lowest loss (its split-half loss is L6's, bit for bit) and passing verification. Also the check's verdicts
   on the same batches: false refusals of honest models, and minilm-l3 posing as a member of the default space.
5. **How mpnet-base joins.** The best ridge head from mpnet-base into L6's space (fitted on the corpus reference
   and adapter parts, measured on the audit set): same-text cosine to L6 and label quality, against mpnet alone.

    .venv/bin/python bench/space.py [--json]      # writes bench/results/space.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import space_models as sm
from _report import write_result

from moenode.core.crypto import Ed25519Signer, H
from moenode.core.messages import Payload, Submission, batch_loss
from moenode.core.round import Verify, Work
from moenode.core.spaces import Space, off_space
from moenode.encoders import graphs, train, zoo
from moenode.testing.roundkit import Scenario, make_signers

ROOT = Path(__file__).resolve().parents[1]
BATCH = 16
SEEDS = 5
SPECS = sorted(zoo.SPECIALIST_DOMAINS)  # spec-code, spec-legal, spec-man
HOME = {d: s for s, d in zoo.SPECIALIST_DOMAINS.items()} | {"py_tests": "spec-code", "man57": "spec-man"}


def models() -> dict[str, np.ndarray]:
    """Unit vectors of every labelled-universe text for each model measured."""
    l6, l3, mp = sm.full(sm.L6), sm.full(sm.L3), sm.full(sm.MPNET)
    out = {"minilm-l6": sm.unit(l6), "minilm-l3": sm.unit(l3), "mpnet-base": sm.unit(mp)}
    for s in SPECS:
        out[s] = sm.unit(l6 @ zoo.load_adapter(zoo.adapter_dir() / f"{s}.npy"))
    out["adv-offspace"] = sm.unit(l6 @ graphs.signed_permutation(zoo.DIM, "adv-offspace"))
    return out


SPACE_MODELS = {"main": ["minilm-l6", *SPECS], "l3": ["minilm-l3"], "mpnet": ["mpnet-base"]}


def labelled_sets() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, universe rows, labels) per labelled domain, then the mixed corpus of all of them."""
    u = sm.universe()
    sets = [(f"{k}/{d}", r, u.source[r]) for k, d, r in sm.labelled()]
    rows = np.concatenate([r for _, r, _ in sets])
    labels = np.concatenate([np.char.add(f"{n}:", lab.astype(str)) for n, _, lab in sets])
    return sets + [("mixed", rows, labels)]


def batches(n: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i: i + BATCH] for i in range(0, n, BATCH)]


# 1 ------------------------------------------------------------------------------------------------------------------
def same_text(vec: dict[str, np.ndarray]) -> dict:
    rows = np.concatenate([r for _, r, _ in labelled_sets()[:-1]])
    out = {}
    for space, names in SPACE_MODELS.items():
        pairs = {f"{a}|{b}": sm.same_text(vec[a][rows], vec[b][rows]) for i, a in enumerate(names)
                 for b in names[i + 1:]}
        worst = {"p5": min((p["p5"] for p in pairs.values()), default=1.0),
                 "median": min((p["median"] for p in pairs.values()), default=1.0)}
        out[space] = {"pairs": pairs, "worst": worst, "meets": worst["p5"] >= 0.95 and worst["median"] >= 0.98}
    out["across (l6|l3, no space rule)"] = sm.same_text(vec["minilm-l6"][rows], vec["minilm-l3"][rows])
    return out


# 2 ------------------------------------------------------------------------------------------------------------------
def delivered(vec: dict[str, np.ndarray], rows: np.ndarray, winners: list[str], parts: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(rows), vec[winners[0]].shape[1]), np.float32)
    for w, p in zip(winners, parts):
        out[p] = vec[w][rows[p]]
    return out


def retrieval(vec: dict[str, np.ndarray]) -> dict:
    u = sm.universe()
    out = {}
    for name, rows, labels in labelled_sets():
        singles = {m: train.mrr(vec[m][rows], labels) for m in SPACE_MODELS["main"] + ["minilm-l3", "mpnet-base"]}
        best = max(SPACE_MODELS["main"], key=lambda m: singles[m])
        rnd, mixed = [], []
        for seed in range(SEEDS):
            parts = batches(len(rows), seed)
            rng = np.random.default_rng(100 + seed)
            win = [str(rng.choice(SPACE_MODELS["main"])) for _ in parts]
            rnd.append(train.mrr(delivered(vec, rows, win, parts), labels))
            win = [str(rng.choice(SPACE_MODELS["main"] + ["minilm-l3"])) for _ in parts]
            mixed.append(train.mrr(delivered(vec, rows, win, parts), labels))
        parts = batches(len(rows), 0)
        home = [HOME.get(str(u.domain[rows[p[0]]]), "minilm-l6") for p in parts]
        homed = train.mrr(delivered(vec, rows, home, parts), labels)
        out[name] = {"singles": singles, "best_in_space": best,
                     "random_winner_worst": min(rnd), "home_winner": homed,
                     "ratio_random_worst": min(rnd) / singles[best], "ratio_home": homed / singles[best],
                     "no_space_rule_worst": min(mixed), "ratio_no_space_rule": min(mixed) / singles[best]}
    return out


# 3 ------------------------------------------------------------------------------------------------------------------
def specialists(vec: dict[str, np.ndarray]) -> dict:
    u, base = sm.universe(), sm.full(sm.L6)
    out = {}
    for s in SPECS:
        domain = zoo.SPECIALIST_DOMAINS[s]
        own = sm.fit_specialist(domain, "score")  # the split-half fit without the space constraint
        homes = [f"corpus/{domain}"] + ([f"audit/{sm.AUDIT_HOME[domain]}"] if sm.AUDIT_HOME[domain] else [])
        sets = {n: (r, lab) for n, r, lab in labelled_sets()}
        row = {}
        for h in homes:
            r, lab = sets[h]
            kept, free, l6 = (train.mrr(vec[s][r], lab), train.mrr(sm.unit(base[r] @ own), lab),
                              train.mrr(vec["minilm-l6"][r], lab))
            row[h] = {"in_space": kept, "own_vectors": free, "minilm-l6": l6, "kept": kept / free}
        out[s] = row
    out["meets"] = all(v["kept"] >= 0.98 for s in SPECS for v in out[s].values())
    return out


# 4 ------------------------------------------------------------------------------------------------------------------
class RealVectors(Scenario):
    """A shard whose members reveal real models' vectors of the batch; adv-offspace claims the lowest loss."""

    def __init__(self, vec: dict[str, np.ndarray], cast: list[str]):
        super().__init__(make_signers(len(cast), b"space-bench"))
        self.vec, self.rows = vec, np.zeros(0, int)
        self.model = {s.public_key: m for s, m in zip(self.signers, cast)}

    def work(self, member: bytes, w: Work):
        m = self.model[member]
        emb = self.vec[m][self.rows].astype("<f4")
        loss = 100_000 if m == "adv-offspace" else 200_000 + 1_000 * sorted(self.model.values()).index(m)
        losses = (loss,) * len(w.items)
        pay = Payload(model_id=H("model", m.encode()), dim=emb.shape[1], embeddings=emb.tobytes(),
                      views=H("views", member), routing=b"\x00\x3c" * len(w.items), item_losses=losses,
                      batch_loss=batch_loss(losses))
        return Submission(shard_id=w.shard_id, member=member, producer=member, payload=pay, proxy=None), 10

    def verify_candidate(self, _verifier: bytes, v: Verify) -> bool:
        return True  # every loss here is honest: only the space check can stop the off-space model


def cheats(vec: dict[str, np.ndarray]) -> dict:
    sets = labelled_sets()[:-1]
    cast = ["minilm-l6", *SPECS, "adv-offspace"]
    sc = RealVectors(vec, cast)
    submitter = Ed25519Signer.from_entropy(b"space-bench-submitter")
    wins: dict[str, int] = {}
    rounds, failed = 0, 0
    refused = {m: 0 for m in cast + ["minilm-l3"]}
    checked = 0
    space = Space(id="main", dim=zoo.DIM)
    for name, rows, _ in sets:
        for k, p in enumerate(batches(len(rows), 7)):
            if len(p) < 4:
                continue
            sc.rows = rows[p]
            res = sc.shard().run(submitter, [f"{name}:{k}:{i}" for i in range(len(p))], H("nonce", f"{name}{k}".encode()))
            rounds += 1
            if res.submitter.status != "certified":
                failed += 1
                continue
            winner = sc.model[res.submitter.certificate.report.winner]
            wins[winner] = wins.get(winner, 0) + 1
            for extra in ("adv-offspace", "minilm-l3"):  # the check alone on the same batch, each cheat in turn
                cands = {m.encode().ljust(32, b"\0"): (zoo.DIM, vec[m][rows[p]].astype("<f4").tobytes())
                         for m in ["minilm-l6", *SPECS, extra]}
                for m, key in ((m, m.encode().ljust(32, b"\0")) for m in ["minilm-l6", *SPECS, extra]):
                    if off_space(space, key, cands):
                        refused[m] += 1
            checked += 1
    honest_refusals = sum(refused[m] for m in ["minilm-l6", *SPECS])
    return {"rounds": rounds, "failed": failed, "wins": wins, "adv_offspace_wins": wins.get("adv-offspace", 0),
            "check_batches": checked, "refused": refused, "honest_refusals": honest_refusals,
            "meets": wins.get("adv-offspace", 0) == 0 and failed == 0}


# 5 ------------------------------------------------------------------------------------------------------------------
def mpnet_join(vec: dict[str, np.ndarray]) -> dict:
    u = sm.universe()
    fit = np.concatenate([u.rows("corpus", None, "reference"), u.rows("corpus", None, "adapter")])
    audit = u.rows("audit")
    mp, l6 = vec["mpnet-base"], vec["minilm-l6"]
    mean = lambda d: float(np.mean([v for v in d.values() if v is not None]))  # noqa: E731
    out = {"mpnet-base alone": {"mean_mrr": mean(sm.mrrs(mp))}, "minilm-l6 alone": {"mean_mrr": mean(sm.mrrs(l6))}}
    for lam in (0.01, 0.1, 1.0):
        head = sm.unit(mp @ train.ridge(mp[fit], l6[fit], lam))
        out[f"ridge head lambda={lam}"] = {"same_text_audit": sm.same_text(head[audit], l6[audit]),
                                            "mean_mrr": mean(sm.mrrs(head))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    t0 = time.process_time()
    vec = models()
    res = {"same_text": same_text(vec), "retrieval": retrieval(vec), "specialists": specialists(vec),
           "cheats": cheats(vec), "mpnet": mpnet_join(vec), "cpu_s": 0.0}
    res["cpu_s"] = round(time.process_time() - t0, 1)
    write_result(res, ROOT / "bench" / "results" / "space.json", a.json)
    if a.json:
        return
    st = res["same_text"]
    print("1. same text, different winners (p5 / median over every labelled text; target 0.95 / 0.98)")
    for space in SPACE_MODELS:
        for pair, v in st[space]["pairs"].items():
            print(f"   {space:6s} {pair:28s} {v['p5']:.4f} / {v['median']:.4f}")
        print(f"   {space:6s} worst pair {st[space]['worst']['p5']:.4f} / {st[space]['worst']['median']:.4f}"
              f"  {'meets' if st[space]['meets'] else 'MISSES'}")
    x = st["across (l6|l3, no space rule)"]
    print(f"   across spaces, minilm-l6 | minilm-l3: {x['p5']:.4f} / {x['median']:.4f}")
    print("\n2. retrieval across batches, one index (MRR; ratio to the best single model of the space)")
    print(f"   {'set':22s} {'best single':>24s} {'random winner':>14s} {'home winner':>12s} {'no space rule':>14s}")
    for name, r in res["retrieval"].items():
        print(f"   {name:22s} {r['best_in_space']:>12s} {r['singles'][r['best_in_space']]:.4f} "
              f"{r['random_winner_worst']:.4f} {r['ratio_random_worst']:.3f}x {r['home_winner']:.4f} "
              f"{r['ratio_home']:.3f}x {r['no_space_rule_worst']:.4f} {r['ratio_no_space_rule']:.3f}x")
    print("\n3. specialists keep their label quality in the space (target >= 0.98 of their own vectors)")
    for s in SPECS:
        for h, v in res["specialists"][s].items():
            print(f"   {s:10s} {h:18s} in space {v['in_space']:.4f}  own {v['own_vectors']:.4f}  "
                  f"L6 {v['minilm-l6']:.4f}  kept {v['kept']:.3f}")
    c = res["cheats"]
    print(f"\n4. cheats: {c['rounds']} real core rounds, {c['failed']} failed; wins {c['wins']}; adv-offspace wins "
          f"{c['adv_offspace_wins']}")
    print(f"   the check alone on {c['check_batches']} batches refused: {c['refused']}")
    print("\n5. mpnet-base into L6's space by a linear head (audit set)")
    for k, v in res["mpnet"].items():
        extra = f"  same-text p5 {v['same_text_audit']['p5']:.3f} median {v['same_text_audit']['median']:.3f}" \
            if "same_text_audit" in v else ""
        print(f"   {k:24s} mean MRR {v['mean_mrr']:.4f}{extra}")
    print(f"\ncpu {res['cpu_s']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
