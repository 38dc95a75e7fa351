import os
import stat

import pytest

from moenode.core.crypto import Ed25519Signer
from moenode.store.keys import KeyFileError, create_key, load_key, load_or_create_key


def test_create_load_roundtrip_private(tmp_path):
    p = tmp_path / "home" / "key"
    seed, created = load_or_create_key(p)
    assert created and len(seed) == 32
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert load_key(p) == seed
    again, created2 = load_or_create_key(p)
    assert again == seed and not created2
    assert Ed25519Signer(seed).public_key == Ed25519Signer(load_key(p)).public_key
    assert [f for f in os.listdir(p.parent) if f != "key"] == []  # no temporary left behind


def test_never_overwrites(tmp_path):
    p = tmp_path / "key"
    first = create_key(p)
    with pytest.raises(KeyFileError, match="already exists"):
        create_key(p)
    assert load_key(p) == first


def test_refuses_open_permissions_and_garbage(tmp_path):
    p = tmp_path / "key"
    create_key(p, bytes(range(32)))
    os.chmod(p, 0o644)
    with pytest.raises(KeyFileError, match="too open"):
        load_key(p)
    os.chmod(p, 0o600)
    p.write_text("ed25519-seed:abcd\n")
    with pytest.raises(KeyFileError, match="expected 32"):
        load_key(p)
    p.write_text("hello\n")
    with pytest.raises(KeyFileError, match="not a moenode key"):
        load_key(p)
    with pytest.raises(KeyFileError, match="moenode init"):
        load_key(tmp_path / "missing")
