import os
import stat

import pytest

from moenode.core.crypto import Ed25519Signer
from moenode.store.keys import (
    KeyFileError,
    create_key,
    create_token,
    load_key,
    load_or_create_key,
    load_or_create_token,
    load_token,
)


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


@pytest.mark.parametrize("create,load", [(create_key, load_key), (create_token, load_token)], ids=["key", "token"])
def test_a_secret_others_can_read_is_refused(tmp_path, create, load):
    p = tmp_path / "secret"
    create(p)
    os.chmod(p, 0o644)
    with pytest.raises(KeyFileError, match="too open"):
        load(p)


def test_refuses_garbage(tmp_path):
    p = tmp_path / "key"
    create_key(p, bytes(range(32)))
    p.write_text("ed25519-seed:abcd\n")
    with pytest.raises(KeyFileError, match="expected 32"):
        load_key(p)
    p.write_text("hello\n")
    with pytest.raises(KeyFileError, match="not a moenode key"):
        load_key(p)
    with pytest.raises(KeyFileError, match="moenode init"):
        load_key(tmp_path / "missing")


def test_the_control_token_is_made_once_private_and_kept(tmp_path):
    p = tmp_path / "control.token"
    token, created = load_or_create_token(p)
    assert created and len(token) == 64 and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert p.read_text() == token + "\n"  # the whole file is the token: a Prometheus credentials_file
    assert load_or_create_token(p) == (token, False) and load_token(p) == token
    p.write_text("not a token\n")
    with pytest.raises(KeyFileError, match="delete it and restart"):
        load_or_create_token(p)
    assert p.read_text() == "not a token\n"  # never replaced behind the operator's back
