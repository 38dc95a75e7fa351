"""One seed, one key: the libp2p identity and the message signer are the same Ed25519 key."""

import pytest
import trio
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.secp256k1 import create_new_key_pair as secp_key_pair
from libp2p.peer.id import ID

from moenode.core.crypto import Ed25519Signer, H, ed25519_verify
from moenode.core.errors import ProtocolError
from moenode.net import account_id_of, key_pair_from_seed, open_host, peer_id_of

from netkit import config, seed


def test_libp2p_key_is_the_signer_key():
    s = seed("identity")
    kp, signer = key_pair_from_seed(s), Ed25519Signer(s)
    assert kp.public_key.to_bytes() == signer.public_key
    digest = H("msg", b"a body")
    # signed by libp2p's key, verified by the core's verifier
    assert ed25519_verify(signer.public_key, digest, kp.private_key.sign(digest))
    # signed by the core's signer, verified by libp2p's key
    assert kp.public_key.verify(digest, signer.sign(digest))
    assert not ed25519_verify(signer.public_key, H("msg", b"another"), kp.private_key.sign(digest))


def test_peer_id_round_trip():
    acct = Ed25519Signer(seed("rt")).public_key
    pid = peer_id_of(acct)
    assert pid.to_base58().startswith("12D3KooW")
    assert account_id_of(pid) == acct
    assert account_id_of(ID.from_base58(pid.to_base58())) == acct
    assert pid == ID.from_pubkey(Ed25519PublicKey.from_bytes(acct))


def test_non_ed25519_peer_is_a_protocol_error():
    pid = ID.from_pubkey(secp_key_pair().public_key)
    with pytest.raises(ProtocolError) as e:
        account_id_of(pid)
    assert e.value.reason == "bad_identity"
    with pytest.raises(ValueError):
        peer_id_of(b"short")
    with pytest.raises(ValueError):
        key_pair_from_seed(b"\x00" * 31)


async def test_host_id_is_the_account():
    cfg = config("hostid")
    with trio.fail_after(10):
        async with open_host(cfg) as net:
            assert net.account_id == Ed25519Signer(cfg.seed).public_key
            assert net.peer_id == peer_id_of(net.account_id)
            assert all(a.endswith("/p2p/" + net.peer_id.to_base58()) for a in net.addrs())


def test_account_id_from_text_form():
    import pytest as _pytest

    from moenode.core.crypto import Ed25519Signer
    from moenode.core.errors import ProtocolError
    from moenode.net.identity import account_id_from_text, peer_id_of

    pk = Ed25519Signer(b"\x03" * 32).public_key
    assert account_id_from_text(peer_id_of(pk).to_base58()) == pk
    with _pytest.raises(ProtocolError):
        account_id_from_text("12D3KooWnotreally")
