import numpy as np

from moenode.node.winner_index import SNAPSHOT, WinnerIndex


def _vecs(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float16)


def test_add_lookup_once_and_threshold():
    w = WinnerIndex(16)
    v = _vecs(5, 16, 0)
    assert w.add(b"c" * 32, v, b"p" * 32, [10, 20, 30, 40, 50], epoch=0) == 5
    assert w.add(b"c" * 32, v, b"p" * 32, [10, 20, 30, 40, 50], epoch=0) == 0  # a certificate counts once
    hits = w.neighbours(v[:2].astype(np.float32), k=3, min_cos_micro=999_000)
    assert [h[0][:2] for h in hits] == [(b"p" * 32, 10), (b"p" * 32, 20)]
    assert all(h[0][2] >= 999_000 and len(h) == 1 for h in hits)  # the others are far below 0.999
    assert w.neighbours(np.zeros((0, 16), np.float32), 3, 0) == []


def test_trim_by_epoch_and_size():
    w = WinnerIndex(8, epochs=2, max_entries=4)
    w.add(b"a" * 32, _vecs(3, 8, 1), b"x" * 32, [1, 2, 3], epoch=0)
    w.add(b"b" * 32, _vecs(3, 8, 2), b"y" * 32, [4, 5, 6], epoch=1)
    assert len(w) == 6
    assert w.trim(1) == 2 and len(w) == 4  # size cap drops the two oldest
    assert w.trim(2) == 1 and w.producers() == {b"y" * 32: 3}  # epoch 0 falls out of a 2-epoch window


def test_persists_and_sets_aside_a_corrupt_snapshot(tmp_path):
    w = WinnerIndex(8, directory=tmp_path)
    v = _vecs(4, 8, 3)
    w.add(b"a" * 32, v, b"x" * 32, [1, 2, 3, 4], epoch=5)
    w.save()
    r = WinnerIndex.open(tmp_path, 8)
    assert len(r) == 4 and r.has(b"a" * 32)
    assert r.neighbours(v[:1].astype(np.float32), 1, 0) == w.neighbours(v[:1].astype(np.float32), 1, 0)
    assert r.add(b"b" * 32, v, b"y" * 32, [1, 2, 3, 4], epoch=5) == 4 and len(r) == 8  # ids keep growing
    (tmp_path / SNAPSHOT).write_bytes(b"garbage")
    fresh = WinnerIndex.open(tmp_path, 8)
    assert len(fresh) == 0 and (tmp_path / (SNAPSHOT + ".bad")).exists()


def test_routing_is_per_space_and_the_space_persists(tmp_path):
    """A round of one space says nothing about who wins in another: lookups answer from their own space only."""
    rng = np.random.default_rng(3)
    v = rng.normal(size=(4, 8)).astype(np.float32)
    idx = WinnerIndex(8, directory=tmp_path)
    idx.add(b"1" * 32, v, b"L" * 32, [100] * 4, 0, "main")
    idx.add(b"2" * 32, v, b"M" * 32, [50] * 4, 0, "mpnet")
    assert {p for hits in idx.neighbours(v, 4, 0, "main") for p, _, _ in hits} == {b"L" * 32}
    assert {p for hits in idx.neighbours(v, 4, 0, "mpnet") for p, _, _ in hits} == {b"M" * 32}
    assert {p for hits in idx.neighbours(v, 4, 0) for p, _, _ in hits} == {b"L" * 32, b"M" * 32}
    idx.save()
    again = WinnerIndex.open(tmp_path, 8)
    assert {p for hits in again.neighbours(v, 4, 0, "mpnet") for p, _, _ in hits} == {b"M" * 32}
