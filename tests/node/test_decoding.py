"""Large peer inputs decode on a worker thread, small ones inline; the result and the errors are the decoder's."""

import threading

import pytest

from moenode.core.crypto import H, ed25519_verify
from moenode.core.errors import TooLarge
from moenode.core.messages import Commit, Payload, Reveal, Submission, open_signed, seal
from moenode.node.decoding import INLINE_BYTES, decode_off_loop
from moenode.testing.fuzzkit import NET, SIGNER, dense_envelope


def _reveal(blob: int) -> bytes:
    pay = Payload(H("m", b""), 1, b"\x00" * 4, b"v" * blob, b"\x00\x3c", (5,), 5)
    sid = H("sid", b"")
    return seal(Reveal(sid, Submission(sid, SIGNER.public_key, SIGNER.public_key, pay, None)), SIGNER, NET).encode()


async def test_small_inputs_decode_inline_and_large_ones_on_a_worker_thread():
    threads = []

    def opened(data: bytes):
        threads.append(threading.get_ident())
        return open_signed(data, NET, ed25519_verify, (Commit, Reveal))

    small = seal(Commit(H("s", b""), H("d", b"")), SIGNER, NET).encode()
    large = _reveal(4 * INLINE_BYTES)
    assert (await decode_off_loop(opened, small)).encode() == small
    assert (await decode_off_loop(opened, large)).encode() == large
    assert threads[0] == threading.get_ident() and threads[1] != threading.get_ident()


async def test_a_decoders_protocol_error_comes_through_the_worker_thread():
    with pytest.raises(TooLarge):
        await decode_off_loop(open_signed, dense_envelope(1 << 20, "arrays"), NET, ed25519_verify, (Reveal,))
