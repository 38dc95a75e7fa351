"""The demo's workload: real corpus text, one domain per batch, reproducible from its seed."""

from moenode.testing.demo import workload


def test_workload_batches_are_real_text_from_one_domain_each():
    from moenode.encoders import corpus

    w = workload(10, 4, seed=1)
    assert len(w) == 10 and all(len(t) == 4 for _, t in w)
    assert {d for d, _ in w} == set(corpus.domains())
    texts = {d: {it.text for it in corpus.load(d)} for d in corpus.domains()}
    assert all(set(t) <= texts[d] for d, t in w)
    assert w == workload(10, 4, seed=1) and w != workload(10, 4, seed=2)


def test_delivered_quality_is_judged_against_the_best_model_of_the_space_the_batches_named():
    from moenode.testing.demo import Submitted, best_in_space

    def sub(space: str) -> Submitted:
        return Submitted(0, "code", "node0", 0.0, 1.0, True, result={"space": space})

    alone = {"minilm-l6": 0.50, "spec-code": 0.60, "mpnet-base": 0.90}  # mpnet-base serves a space of its own
    got = best_in_space([sub("main"), sub("main")], alone, 0.61)
    assert got["best_in_space"] == "spec-code" and abs(got["ratio_to_best_in_space"] - 0.61 / 0.60) < 1e-12
    assert best_in_space([sub("mpnet")], alone, 0.45)["ratio_to_best_in_space"] == 0.5
    assert best_in_space([sub("main"), sub("mpnet")], alone, 0.5) == {}
