"""Decoding peers' bytes without holding up the event loop.

Every decoder of untrusted bytes is bounded by its type's size cap and value budget (`moenode.core.codec`), so even
the largest legitimate message, a 12 MiB Reveal, decodes and verifies in tens of milliseconds. That is still too
long to hold the trio thread, which meanwhile serves every other peer and the control API. So an input above
`INLINE_BYTES` is decoded on a worker thread; the many small ones stay inline, where a thread hop would cost more
than the decoding. Decoders are pure functions of their arguments (`moenode.core` is sans-IO), so running one on a
thread shares nothing with the loop. Either way its CPU time counts as the `codec_signatures` stage.
"""

from collections.abc import Callable
from typing import Any, TypeVar

import trio

from moenode.node.stages import STAGES

INLINE_BYTES = 64 << 10

T = TypeVar("T")


async def decode_off_loop(decoder: Callable[..., T], data: bytes, *args: Any) -> T:
    """`decoder(data, *args)`: inline for small inputs, on a worker thread above INLINE_BYTES."""
    if len(data) <= INLINE_BYTES:
        return _timed(decoder, data, *args)
    return await trio.to_thread.run_sync(_timed, decoder, data, *args)


def _timed(decoder: Callable[..., T], data: bytes, *args: Any) -> T:
    with STAGES.measure("codec_signatures"):
        return decoder(data, *args)
