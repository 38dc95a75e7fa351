import hashlib

from moenode.core.crypto import CheapSigner, Ed25519Signer, H, body_digest, cheap_verify, ed25519_verify
from moenode.core.codec import canonical


def test_H_is_tagged_blake2b():
    want = hashlib.blake2b(b"moenode/data\x00abc", digest_size=32).digest()
    assert H("data", b"abc") == want
    assert H("data", b"abc") != H("shard", b"abc")


def test_sign_and_verify():
    s = Ed25519Signer.from_entropy(b"k")
    d = body_digest({"type": "X", "n": 1})
    sig = s.sign(d)
    assert ed25519_verify(s.public_key, d, sig)
    assert not ed25519_verify(s.public_key, H("msg", canonical({"type": "X", "n": 2})), sig)
    assert not ed25519_verify(Ed25519Signer.from_entropy(b"j").public_key, d, sig)
    assert not ed25519_verify(s.public_key, d, sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not ed25519_verify(b"short", d, sig)


def test_signatures_are_deterministic():
    s = Ed25519Signer(b"\x07" * 32)
    assert s.sign(b"x" * 32) == Ed25519Signer(b"\x07" * 32).sign(b"x" * 32)


def test_cheap_signer_is_not_ed25519():
    c = CheapSigner(b"p" * 32)
    sig = c.sign(b"d" * 32)
    assert cheap_verify(b"p" * 32, b"d" * 32, sig) and len(sig) == 64
    assert not ed25519_verify(b"p" * 32, b"d" * 32, sig)
