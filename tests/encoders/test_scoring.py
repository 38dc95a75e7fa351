"""The split-half scorer: golden vectors, exact recomputation, payloads, and the lazy verification."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from moenode.core.crypto import H
from moenode.core.genesis import Params
from moenode.core.messages import Payload
from moenode.core.scoring import z_loss
from moenode.encoders import scoring, zoo

VEC = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


def vec(name):
    return json.loads((VEC / f"scoring_{name}.json").read_text())


# golden vectors ---------------------------------------------------------------------------------------------------
def test_stream_and_pattern_vectors():
    v = vec("patterns")
    s = scoring.Stream(v["stream"]["tag"], bytes.fromhex(v["stream"]["key"]))
    assert [s.word() for _ in range(len(v["stream"]["words"]))] == v["stream"]["words"]
    c = v["choose"]
    assert scoring.Stream(c["tag"], bytes.fromhex(c["key"])).choose(c["n"], c["k"]) == c["values"]
    for case in v["patterns"]:
        p = scoring.pattern(bytes.fromhex(case["shard_seed"]), case["t"], case["j"])
        assert list(p) == case["positions"]
        assert len(set(p)) == case["t"] // 2 and list(p) == sorted(p) and 0 <= p[0] and p[-1] < case["t"]


def test_plan_vectors():
    for case in vec("plan")["cases"]:
        p = Params(mask_views=case["mask_views"], min_negatives=case["min_negatives"],
                   score_window=case["score_window"])
        plan = scoring.make_plan(case["item_ids"], bytes.fromhex(case["shard_seed"]), p, case["ref_ids"])
        got = [{"t": b.t, "members": b.members, "refs": b.refs, "base": b.base, "rows": b.rows} for b in plan.buckets]
        assert got == case["buckets"] and plan.rows == case["rows"]


@pytest.mark.parametrize("k", [0, 1])
def test_losses_recompute_exactly_from_revealed_views(k):
    case = vec("losses")["cases"][k]
    p = Params(mask_views=case["mask_views"], min_negatives=case["min_negatives"], score_window=case["score_window"])
    plan = scoring.make_plan(case["item_ids"], bytes.fromhex(case["shard_seed"]), p, case["ref_ids"])
    views = np.frombuffer(bytes.fromhex(case["views_f16_hex"]), "<f2").reshape(plan.rows, case["dim"])
    assert scoring.losses_from_views(plan, views) == case["item_losses"]
    # the arithmetic is exact, so row order inside a matmul cannot matter: permuting dims gives the same losses
    perm = np.random.default_rng(0).permutation(case["dim"])
    assert scoring.losses_from_views(plan, views[:, perm]) == case["item_losses"]


def test_z_loss_vectors():
    for c in vec("losses")["z"]:
        assert z_loss(c["pos"], c["negs"]) == c["loss"]


def test_verify_sample_vector():
    v = vec("verify_sample")
    s = scoring.Stream("vsample", bytes.fromhex(v["sample_seed"]))
    items = s.choose(v["n_scored"], v["verify_items"])
    views = [s.choose(2 * v["mask_views"], v["verify_views"]) for _ in items]
    d = v["draws"]
    assert (items, views) == (d["items"], d["views"])
    assert s.choose(v["ref_rows"], v["verify_views"]) == d["refs"]
    assert s.choose(v["n_items"], v["verify_items"]) == d["spot"]


# properties of the loss ---------------------------------------------------------------------------------------------
SEED = H("test", b"shard")
P = Params()
TEXTS = [
    "The committee approved the new budget after a long debate about school funding and road repairs.",
    "Heavy rain flooded several streets downtown, and the city closed two bridges until the water receded.",
    "def parse(line):\n    key, _, value = line.partition('=')\n    return key.strip(), value.strip()",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software.",
    "ls lists information about the files in the current directory, sorted alphabetically by default.",
    "The team scored twice in the final minutes to win the championship in front of a home crowd.",
    "Researchers found that the new vaccine reduced hospital admissions by half among older adults.",
    "for i in range(10):\n    total += values[i] * weights[i]\nprint(total / sum(weights))",
    "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED.",
    "grep searches the named input files for lines containing a match to the given pattern.",
    "Stocks fell sharply on Monday as investors worried about rising interest rates and weak earnings.",
    "too short",
]
REF = TEXTS[:4] + [
    "The library will be closed on public holidays and open late on Thursdays during the exam period.",
    "rm removes each specified file. By default, it does not remove directories.",
    "You may convey verbatim copies of the Program's source code as you receive it, in any medium.",
    "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n        self.items.append(x)",
]


@pytest.fixture(scope="module")
def l3_payload():
    enc = zoo.load("minilm-l3")
    return enc, scoring.make_payload(enc, enc, TEXTS, SEED, P, REF)


def test_payload_is_valid_and_recomputes(l3_payload):
    enc, pay = l3_payload
    assert isinstance(pay, Payload)
    Payload.from_body(pay.to_body())  # passes the message schema
    assert pay.model_id == enc.model_id and len(pay.item_losses) == len(TEXTS)
    assert pay.item_losses[-1] == scoring.UNSCORED  # < 8 tokens: the same constant for every candidate
    plan = scoring.plan_for(TEXTS, SEED, P, REF)
    scored = sorted(b.members[m] for b, m in plan.scored())
    assert scored == [i for i in range(len(TEXTS) - 1) if i != 6]  # 6 is alone in bucket 8: no negatives
    assert all(0 <= pay.item_losses[i] < scoring.MICRO for i in scored)
    ok, why = scoring.verify_payload(enc, enc, TEXTS, SEED, pay, P, REF)
    assert ok, why


def test_bit_identical_across_runs(l3_payload):
    enc, pay = l3_payload
    again = scoring.make_payload(enc, enc, TEXTS, SEED, P, REF)
    assert again == pay and again.digest() == pay.digest()
    other = scoring.make_payload(enc, enc, TEXTS, H("test", b"other"), P, REF)
    assert other.views != pay.views  # another seed, other patterns


def test_short_items_are_unscored_for_every_model():
    for name in ("minilm-l3", "adv-zero", "adv-noise"):
        s = scoring.score(zoo.load(name), ["tiny text", "also very small"], SEED, P, REF)
        assert s.losses == [scoring.UNSCORED, scoring.UNSCORED] and s.plan.rows == 0


def test_degenerate_encoders_score_worst():
    for name in ("adv-zero", "adv-constant"):
        s = scoring.score(zoo.load(name), TEXTS, SEED, P, REF)
        assert s.losses == [scoring.MICRO] * len(TEXTS)


def _resign(pay: Payload, views: np.ndarray, plan) -> Payload:
    losses = tuple(scoring.losses_from_views(plan, views))
    from moenode.core.messages import batch_loss

    return replace(pay, views=views.tobytes(), item_losses=losses, batch_loss=batch_loss(losses))


def test_verification_catches_tampering(l3_payload):
    enc, pay = l3_payload
    l6 = zoo.load("minilm-l6")
    ok, why = scoring.verify_payload(l6, enc, TEXTS, SEED, pay, P, REF)
    assert not ok and "model_id" in why
    lower = list(pay.item_losses)
    lower[0] = max(0, lower[0] - 1)
    bad = replace(pay, item_losses=tuple(lower), batch_loss=scoring.batch_loss(lower))
    if lower[0] != pay.item_losses[0]:
        ok, why = scoring.verify_payload(enc, enc, TEXTS, SEED, bad, P, REF)
        assert not ok and "claimed loss" in why
    plan = scoring.plan_for(TEXTS, SEED, P, REF)
    views = np.frombuffer(pay.views, "<f2").reshape(plan.rows, enc.dim).copy()
    scaled = views.copy()
    scaled[0] *= np.float16(1.05)  # a longer positive half: caught by the norm rule
    ok, why = scoring.verify_payload(enc, enc, TEXTS, SEED, _resign(pay, scaled, plan), P, REF)
    assert not ok and "unit" in why
    nan = views.copy()
    nan[3, 0] = np.nan
    ok, why = scoring.verify_payload(enc, enc, TEXTS, SEED, replace(pay, views=nan.tobytes()), P, REF)
    assert not ok and "finite" in why
    ok, why = scoring.verify_payload(enc, enc, TEXTS, SEED, replace(pay, views=pay.views[:-2]), P, REF)
    assert not ok
    emb = np.frombuffer(pay.embeddings, "<f4").reshape(len(TEXTS), enc.dim)[::-1].copy()
    ok, why = scoring.verify_payload(enc, enc, TEXTS, SEED, replace(pay, embeddings=emb.tobytes()), P, REF)
    assert not ok and "embedding" in why
    rout = np.frombuffer(pay.routing, "<f2").reshape(len(TEXTS), enc.dim)[::-1].copy()
    ok, why = scoring.verify_payload(enc, enc, TEXTS, SEED, replace(pay, routing=rout.tobytes()), P, REF)
    assert not ok and "routing" in why


def test_a_transductive_cheat_wins_the_loss_but_fails_reexecution(l3_payload):
    """A producer that knows batch and patterns can emit item-id vectors: perfect loss, caught by re-execution."""
    enc, pay = l3_payload
    plan = scoring.plan_for(TEXTS, SEED, P, REF)
    views = np.frombuffer(pay.views, "<f2").reshape(plan.rows, enc.dim).copy()
    rng = np.random.default_rng(7)
    for b in plan.buckets:
        for m in range(len(b.members)):
            code = rng.standard_normal(enc.dim)
            code /= np.linalg.norm(code)
            for j in range(len(b.patterns)):
                views[b.row_a(m, j)] = code
                views[b.row_b(m, j)] = code
    cheat = _resign(pay, views, plan)
    assert cheat.batch_loss < pay.batch_loss
    ok, why = scoring.verify_payload(enc, enc, TEXTS, SEED, cheat, P, REF)
    assert not ok and "re-execute" in why


def test_additive_identity_rewards_linear_cheats():
    items = TEXTS[:6]
    zero = scoring.additive_losses(zoo.load("adv-zero"), items, SEED, P)
    bag = scoring.additive_losses(zoo.load("adv-bag-of-tokens"), items, SEED, P)
    real = scoring.additive_losses(zoo.load("minilm-l3"), items, SEED, P)
    assert max(zero) < 1e-6 and np.mean(bag) < np.mean(real)  # why it never pays
