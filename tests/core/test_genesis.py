import pytest

from moenode.core.crypto import Ed25519Signer
from moenode.core.errors import SchemaError
from moenode.core.genesis import Account, Genesis, Params, epoch_seeds, genesis_to_toml, next_epoch_seed, parse_genesis


def genesis() -> Genesis:
    accs = sorted((Account(Ed25519Signer.from_entropy(bytes([i])).public_key, 100, 10, "minilm-l6", 1)
                   for i in range(3)), key=lambda a: a.pubkey)
    return Genesis("unit", 1_000, 60_000, Params(), tuple(accs))


def test_toml_roundtrip_and_network_id():
    g = genesis()
    again = parse_genesis(genesis_to_toml(g))
    assert again == g and again.network_id == g.network_id
    other = parse_genesis(genesis_to_toml(g).replace('name = "unit"', 'name = "unit2"'))
    assert other.network_id != g.network_id


def test_defaults_fill_in():
    pk = "11" * 32
    g = parse_genesis(f'[network]\nname="x"\ngenesis_time_ms=0\n[[accounts]]\npubkey="{pk}"\nstake=5\n')
    assert g.params == Params() and g.epoch_ms == 3_600_000 and g.accounts[0].balance == 0


@pytest.mark.parametrize("patch, match", [
    ("mask_views = 2", "mask_views = 99"),
    ("grace_min_ms = 1000", "grace_min_ms = -1"),
    ("winner_bps = 9000", 'winner_bps = "lots"'),
])
def test_out_of_bounds_params_are_named(patch, match):
    text = genesis_to_toml(genesis()).replace(patch, match)
    with pytest.raises(SchemaError, match=match.split(" ")[0]):
        parse_genesis(text)


@pytest.mark.parametrize("bad, match", [
    ("nonsense ===", "TOML"),
    ('[network]\nname="x"\ngenesis_time_ms=0\n', "stake"),
    ('[network]\nname="x"\ngenesis_time_ms=0\n[params]\nbogus=1\n', "unknown params"),
    ('[network]\nname="x"\ngenesis_time_ms=0\n[[accounts]]\npubkey="zz"\nstake=1\n', "hex"),
    ('[network]\ngenesis_time_ms=0\n', "name"),
])
def test_bad_genesis(bad, match):
    with pytest.raises(SchemaError, match=match):
        parse_genesis(bad)


def test_epochs_and_seeds():
    g = genesis()
    assert g.epoch(1_000) == 0 and g.epoch(60_999) == 0 and g.epoch(61_000) == 1 and g.epoch(0) == -1
    seeds = epoch_seeds(g, 3)
    assert seeds[0] == g.seed0() and len(set(seeds)) == 4
    assert epoch_seeds(g, 3, {1: b"d" * 32})[2] != seeds[2]
    assert seeds[1] == next_epoch_seed(1, seeds[0], b"")
    with pytest.raises(ValueError):
        next_epoch_seed(0, seeds[0])
