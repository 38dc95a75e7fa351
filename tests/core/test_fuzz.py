"""Fuzzing every decoder a peer can reach: signed envelopes of every message type, the unsigned messages (shard
certificates, order requests and answers, certified orders, checkpoints and their certificates, the proxy answer,
evidence), sync entries, and codec.decode itself.

Each decoder gets valid inputs mutated byte by byte (bit flips, interesting bytes, truncation, extension, splicing,
random bytes) and by structure (a value of another type in one place, container-dense inflation, nesting past the
limit, non-canonical spellings of the same value). Two properties hold for every input: only ProtocolError
subclasses escape, and an accepted input is exactly the canonical encoding of what was decoded (nothing
non-canonical is accepted). 100,000 inputs in all, from a seeded generator: a failure names the seed, the decoder,
the input's index and its bytes; `MOENODE_FUZZ_SEED=N` reruns another sequence. `bench/fuzz.py` runs longer.
"""

import os

import pytest

from moenode.core.errors import ProtocolError
from moenode.testing.fuzzkit import _count, _deviant, _Spliced, fuzz, targets

SEED = int(os.environ.get("MOENODE_FUZZ_SEED", "20261206"))
TOTAL = 100_000
TARGETS = targets()
PER_TARGET = -(-TOTAL // len(TARGETS))


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_only_protocol_errors_escape_and_nothing_non_canonical_is_accepted(target):
    stats = fuzz(target, PER_TARGET, SEED)
    assert stats.inputs == PER_TARGET and stats.accepted + sum(stats.reasons.values()) == PER_TARGET
    assert stats.reasons.get("oversized", 0) > 0  # the dense inflations were refused by the value budget


def test_the_suite_is_100k_inputs_over_every_decoder():
    assert PER_TARGET * len(TARGETS) >= TOTAL
    names = {t.name for t in TARGETS}
    assert {"codec.decode", "open_order", "CertifiedOrder.decode", "ProxyAnswer.decode", "sync entry"} <= names


class _At:
    """A stand-in rng for _Spliced that puts the deviation at one chosen node."""

    def __init__(self, at: int):
        self.at = at

    def randrange(self, n: int) -> int:
        return self.at

    def random(self) -> float:
        return 0.5  # not the float spelling: the wider header

    def choice(self, xs):
        return xs[0]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_every_value_of_every_seed_spelled_otherwise_is_refused(target):
    """Exhaustively, not by chance: each value of each valid input, spelled with a wider header (a map's, an
    array's, a string's, an integer's), makes the input one no decoder accepts."""
    import msgpack

    for data in target.seeds:
        target.decode(data)  # the seed itself is accepted
        tree = msgpack.unpackb(data, raw=False, strict_map_key=False)
        for at in range(_count(tree)):
            spelled = _Spliced(_At(at), tree, _deviant).bytes()
            if spelled == data:  # a value with one spelling only (nil, a bool, a full-width integer)
                continue
            with pytest.raises(ProtocolError):
                target.decode(spelled)
