"""Regenerate protocol/vectors/scoring_*.json (run by hand; the tests only read them).

    .venv/bin/python tests/encoders/make_vectors.py

The files pin the exact parts of the scorer: seed streams and patterns, the plan (buckets, demotion, reference
draws), losses recomputed from revealed float16 views, and the verification sample.
"""

import json
from dataclasses import replace
from pathlib import Path

from moenode.core.crypto import H
from moenode.core.genesis import Params
from moenode.core.scoring import ONE, z_loss
from moenode.encoders import scoring

OUT = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
SEEDS = [bytes(32), H("test", b"scoring-1"), H("test", b"scoring-2")]


def synth_ids(tag: bytes, n: int, lengths: list[int]) -> list[list[int]]:
    """Deterministic token ids in 1000..29999 (no special tokens), one list per length."""
    out = []
    for i, length in enumerate(lengths):
        s = scoring.Stream("test", tag + i.to_bytes(2, "big"))
        out.append([1000 + s.below(29_000) for _ in range(length)])
    return out[:n]


def patterns() -> dict:
    cases = []
    for seed in SEEDS:
        for t in scoring.BUCKETS:
            for j in (0, 1, 7):
                cases.append({"shard_seed": seed.hex(), "t": t, "j": j, "positions": list(scoring.pattern(seed, t, j))})
    s = scoring.Stream("mask", SEEDS[1] + (16).to_bytes(2, "big") + (0).to_bytes(2, "big"))
    words = [s.word() for _ in range(10)]
    s2 = scoring.Stream("refdraw", SEEDS[1] + (8).to_bytes(2, "big"))
    return {"description": "P_j = sorted(Stream('mask', shard_seed || t:u16be || j:u16be).choose(t, t/2)); "
                           "stream words are big-endian u32 read in order from H(tag, key || block:u32be).",
            "stream": {"tag": "mask", "key": (SEEDS[1] + (16).to_bytes(2, "big") + (0).to_bytes(2, "big")).hex(),
                       "words": words},
            "choose": {"tag": "refdraw", "key": (SEEDS[1] + (8).to_bytes(2, "big")).hex(), "n": 50, "k": 12,
                       "values": s2.choose(50, 12)},
            "patterns": cases}


def plan_case(name: str, lengths: list[int], ref_lengths: list[int], params: Params, seed: bytes) -> dict:
    ids = synth_ids(name.encode(), len(lengths), lengths)
    refs = synth_ids(name.encode() + b"/ref", len(ref_lengths), ref_lengths)
    if len(ids) > 3:
        ids[3] = list(ids[1])  # a duplicate item: never a negative of its twin
    plan = scoring.make_plan(ids, seed, params, refs)
    return {"name": name, "shard_seed": seed.hex(), "mask_views": params.mask_views,
            "min_negatives": params.min_negatives, "score_window": params.score_window, "item_ids": ids,
            "ref_ids": refs,
            "buckets": [{"t": b.t, "members": b.members, "refs": b.refs, "base": b.base, "rows": b.rows}
                        for b in plan.buckets],
            "rows": plan.rows}


def plans() -> dict:
    p = Params(mask_views=2, min_negatives=4, score_window=128)
    cases = [
        plan_case("small", [5, 8, 9, 9, 15, 16, 20, 33, 40, 70, 130], [8, 8, 12, 16, 16, 17, 30, 64, 64, 100], p,
                  SEEDS[1]),
        plan_case("demote", [140, 129, 65, 12, 8], [10, 11, 12, 20, 40],
                  Params(mask_views=3, min_negatives=6, score_window=128), SEEDS[2]),
        plan_case("window", [5, 8, 9, 9, 15, 16, 20, 33, 40, 70, 130], [8, 8, 12, 16], Params(), SEEDS[1]),
    ]
    return {"description": "make_plan on token ids: buckets, demotion, reference draws and row layout", "cases": cases}


def losses() -> dict:
    from moenode.encoders import zoo

    enc = zoo.load("minilm-l3")
    cases = []
    for name, p, lengths in (("losses", Params(mask_views=2, min_negatives=4), [8, 9, 12, 9, 16, 18, 20, 24, 10]),
                             ("window", Params(), [8, 9, 12, 9, 16, 18, 20, 24, 40, 33, 70, 35])):
        case = plan_case(name, lengths, [8, 9, 10, 16, 20, 11], p, SEEDS[1])
        plan = scoring.make_plan(case["item_ids"], SEEDS[1], p, case["ref_ids"])
        views = scoring.to_f16(enc.embed_ids(plan.view_seqs()))
        case["views_f16_hex"] = views.tobytes().hex()
        case["dim"] = enc.dim
        case["item_losses"] = scoring.losses_from_views(plan, views)
        cases.append(case)
    z = [{"pos": pos, "negs": negs, "loss": z_loss(pos, negs)} for pos, negs in (
        (ONE - 7, [ONE // 2, ONE // 3, -ONE // 5]), (0, [ONE // 2, ONE // 2 + 1]), (5, [5, 5, 5]),
        (-ONE, [ONE, ONE - 1, ONE - 3]), (ONE // 4, [ONE // 4 + 9, ONE // 4 - 9, ONE // 4]))]
    return {"description": "losses recomputed exactly from revealed float16 views (rows x dim, little-endian); "
                           "z_loss on exact integer similarities (units of 2^-48)", "cases": cases, "z": z}


def verify_sample() -> dict:
    p = replace(Params(), verify_items=3, verify_views=4)
    s = scoring.Stream("vsample", SEEDS[2])
    return {"description": "Stream('vsample', sample_seed): choose(scored items (>= 2 negatives), verify_items), "
                           "then per item "
                           "choose(2M, verify_views), then choose(reference rows, verify_views), then "
                           "choose(items, verify_items) for embeddings and routing",
            "sample_seed": SEEDS[2].hex(), "n_scored": 20, "mask_views": 8, "verify_items": p.verify_items,
            "verify_views": p.verify_views, "ref_rows": 40, "n_items": 24,
            "draws": {"items": (a := s.choose(20, 3)), "views": [s.choose(16, 4) for _ in a],
                      "refs": s.choose(40, 4), "spot": s.choose(24, 3)}}


def main() -> None:
    for name, fn in (("patterns", patterns), ("plan", plans), ("losses", losses), ("verify_sample", verify_sample)):
        path = OUT / f"scoring_{name}.json"
        path.write_text(json.dumps(fn(), indent=1) + "\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
