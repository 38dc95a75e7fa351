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
