"""Hashing and signatures.

`H(tag, data)` is BLAKE2b-256 over `b"moenode/" + tag + b"\\x00" + data`; every use has its own tag, so a hash made
for one purpose can never be taken for another. Identities are Ed25519 keys, the same keys as libp2p peer ids:
the account id is the raw 32-byte public key. A message is signed over `H("msg", canonical(body))`.

The signer and the verifier are values the caller passes in: the daemon always uses `Ed25519Signer` and
`ed25519_verify`; the simulator may plug in `CheapSigner`, which is *not* secure and says so.
"""

import hashlib
from collections.abc import Callable
from typing import Any, Protocol

import nacl.bindings
import nacl.exceptions
import nacl.signing

from moenode.core.codec import canonical

DIGEST_SIZE = 32
PUBKEY_SIZE = 32
SIG_SIZE = 64

Verifier = Callable[[bytes, bytes, bytes], bool]  # (pubkey, digest, sig) -> ok


def H(tag: str, data: bytes) -> bytes:
    """Tagged BLAKE2b-256."""
    prefix = _PREFIXES.get(tag)
    if prefix is None:
        prefix = _PREFIXES[tag] = hashlib.blake2b(b"moenode/" + tag.encode("utf-8") + b"\x00",
                                                  digest_size=DIGEST_SIZE)
    h = prefix.copy()  # the tag's prefix absorbed once; one of the hottest calls in the ledger and the simulator
    h.update(data)
    return h.digest()


_PREFIXES: dict[str, "hashlib.blake2b"] = {}


def body_digest(body: dict[str, Any]) -> bytes:
    """What a signature covers: H("msg", canonical(body))."""
    return H("msg", canonical(body))


class Signer(Protocol):
    public_key: bytes

    def sign(self, digest: bytes) -> bytes: ...


class Ed25519Signer:
    """Ed25519 over pynacl. `seed` is the 32-byte private seed, which is also what a libp2p Ed25519 key stores."""

    def __init__(self, seed: bytes):
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._key = nacl.signing.SigningKey(seed)
        self.seed = bytes(seed)
        self.public_key = bytes(self._key.verify_key)

    @classmethod
    def from_entropy(cls, entropy: bytes) -> "Ed25519Signer":
        """A key derived from caller-provided entropy (tests, testnet genesis); the core draws none itself."""
        return cls(H("key", entropy))

    def sign(self, digest: bytes) -> bytes:
        return self._key.sign(digest).signature


def ed25519_verify(pubkey: bytes, digest: bytes, sig: bytes) -> bool:
    if len(pubkey) != PUBKEY_SIZE or len(sig) != SIG_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(pubkey).verify(digest, sig)
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return False


def is_ed25519_public_key(pk: bytes) -> bool:
    """True if `pk` is an Ed25519 public key: the canonical encoding of a point of the prime-order subgroup, not of
    small order. Every key a seed makes is one; most 32-byte strings (hashes, typos) are not."""
    return len(pk) == PUBKEY_SIZE and bool(nacl.bindings.crypto_core_ed25519_is_valid_point(pk))


class CheapSigner:
    """A stand-in signer for the simulator only: the 'signature' is a keyed hash anyone can forge.

    It keeps message sizes and code paths identical to Ed25519 while costing about a microsecond.
    """

    def __init__(self, public_key: bytes):
        self.public_key = public_key

    def sign(self, digest: bytes) -> bytes:
        return H("cheap-sig", self.public_key + digest) * 2


def cheap_verify(pubkey: bytes, digest: bytes, sig: bytes) -> bool:
    return sig == H("cheap-sig", pubkey + digest) * 2
