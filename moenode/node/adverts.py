"""Adverts: what each expert serves, at what price and where, gossiped on `adverts`.

Theory of operation: every node advertises its model, its proxy price and its addresses (a sealed `Advert`) at
start, every `advert_interval_s`, and soon after a peer it has not told connects, so a late joiner learns every
expert within seconds without the whole network re-advertising every few seconds (at one advert a second
network-wide, adverts were most of a testnet's idle CPU). A received advert (signed by its gossip origin, newer
than the one we hold) is kept, and its addresses are given to the host, so that the expert can be dialled for a
proxy request. `prices()` is what routing reads.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from moenode.core.crypto import ed25519_verify
from moenode.core.errors import SignatureError
from moenode.core.messages import Advert, open_signed, seal
from moenode.node.context import Context, NetLink

log = logging.getLogger("moenode.node")

NEWCOMER_CHECK_S = 1.0  # how often the advert loop looks for peers it has not advertised to
NEWCOMER_DELAY_S = 2.0


class Adverts:
    """Collaborators: the context, the net link, our proxy price and how often we advertise; `run` is given the
    encoders (`compute`: the model we advertise)."""

    def __init__(self, ctx: Context, link: NetLink, price_bps: int, interval_s: float):
        self.ctx, self.link, self.price_bps, self.interval_s = ctx, link, price_bps, interval_s
        self.known: dict[bytes, Advert] = {}  # the newest advert of each account

    def __len__(self) -> int:
        return len(self.known)

    def __contains__(self, account: object) -> bool:
        return account in self.known

    def decode(self, data: bytes) -> Any:
        return open_signed(data, self.ctx.net_id, ed25519_verify, (Advert,))

    async def on_gossip(self, origin: bytes, data: bytes) -> None:
        env = self.decode(data)
        if env.signer != origin:
            raise SignatureError("Advert: signed by another account than its gossip origin")
        adv: Advert = env.msg
        old = self.known.get(env.signer)
        if old is not None and old.time_ms >= adv.time_ms:
            return
        self.known[env.signer] = adv
        for addr in adv.addrs:
            try:
                self.link.host.add_address(env.signer, addr)
            except Exception:  # an unparsable address in a valid advert: ignore that address
                continue

    def prices(self) -> dict[bytes, int]:
        return {pk: a.price for pk, a in self.known.items() if a.price <= 10_000}

    async def run(self, compute: Any) -> None:
        """Advertise `compute`'s model at start, every interval, and soon after a peer we have not told connects."""
        net = self.link.host
        delays = [0.5, 1.0, 2.0]
        told: set[bytes] = set()
        while True:
            if delays:
                await trio.sleep(delays.pop(0))
            else:
                with trio.move_on_after(self.interval_s):
                    while set(net.connected()) <= told:
                        await trio.sleep(NEWCOMER_CHECK_S)
                    await trio.sleep(NEWCOMER_DELAY_S)  # until the newcomer has joined the adverts mesh
            told = set(net.connected())
            adv = Advert(model_id=compute.model_id, model_name=compute.encoder.name[:64], price=self.price_bps,
                         addrs=tuple(net.addrs()[:8]), time_ms=self.ctx.now_ms())
            try:
                await net.gossip.publish("adverts", seal(adv, self.ctx.signer, self.ctx.net_id).encode())
            except Exception as e:
                log.debug("advert not published: %r", e)
