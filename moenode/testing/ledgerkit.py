"""Shared fixtures for ledger tests and benchmarks: a genesis of staked authorities plus users, orders, and shard
certificates.

Everything is the real code (orders, authorities, ledgers, selection); `cheap=True` swaps Ed25519 for the
simulator's keyed-hash signer so property tests can run many examples, and the attack tests use Ed25519.
"""

from collections.abc import Callable

from moenode.core.authority import Authority, LedgerStore, MemoryStore
from moenode.core.crypto import CheapSigner, Ed25519Signer, H, cheap_verify, ed25519_verify
from moenode.core.errors import ProtocolError
from moenode.core.genesis import Account, Genesis, Params
from moenode.core.spaces import Space
from moenode.core.ledger import Ledger
from moenode.core.messages import Certificate, Report, Signed, body_of, seal
from moenode.core.codec import canonical
from moenode.core.orders import CertifiedOrder, PayEscrow, Settle, certify, escrow_account
from moenode.core.messages import shard_id as derive_shard_id
from moenode.core.selection import data_hash, sample_shard, shard_seed, shard_size

EPOCH_MS = 1_000_000
T0 = 1_000  # a time inside epoch 0


def signers(n: int, tag: bytes, cheap: bool = False) -> list:
    if cheap:
        return [CheapSigner(H("cheap-key", tag + i.to_bytes(4, "big"))) for i in range(n)]
    return [Ed25519Signer.from_entropy(tag + i.to_bytes(4, "big")) for i in range(n)]


class Net:
    """`n` staked authorities and `users` unstaked accounts, each authority with its own ledger and store."""

    def __init__(self, n: int = 5, users: int = 3, *, cheap: bool = False, name: str = "ledgertest",
                 stake: int = 10_000, balance: int = 1_000_000, params: Params | None = None,
                 stakes: list[int] | None = None, stores: Callable[[int, bytes], LedgerStore] | None = None,
                 spaces: tuple[Space, ...] = (Space(),)):
        """`stores(i, network_id)` gives authority i's store (default: a MemoryStore each)."""
        self.verify = cheap_verify if cheap else ed25519_verify
        self.auth_keys = signers(n, b"auth", cheap)
        self.user_keys = signers(users, b"user", cheap)
        stakes = stakes or [stake] * n
        accounts = [Account(s.public_key, balance=balance, stake=st) for s, st in zip(self.auth_keys, stakes)]
        accounts += [Account(u.public_key, balance=balance) for u in self.user_keys]
        accounts.sort(key=lambda a: a.pubkey)
        self.genesis = Genesis(name=name, genesis_time_ms=0, epoch_ms=EPOCH_MS, params=params or Params(),
                               accounts=tuple(accounts), spaces=spaces)
        self.net = self.genesis.network_id
        stores = stores or (lambda i, net: MemoryStore())
        self.authorities = [Authority(Ledger(self.genesis, self.verify), k, stores(i, self.net))
                            for i, k in enumerate(self.auth_keys)]
        self.keys = {k.public_key: k for k in self.auth_keys + self.user_keys}

    @property
    def ledger(self) -> Ledger:
        return self.authorities[0].ledger

    def seal(self, order, signer) -> Signed:
        return seal(order, signer, self.net)

    def votes(self, signed: Signed, now: int = T0, to: list[int] | None = None,
              vote_epoch: int | None = None) -> dict[bytes, bytes]:
        """Ask authorities (all, or the indices in `to`) to vote (in `vote_epoch`: a renewal); refusals are
        skipped."""
        out = {}
        for i, a in enumerate(self.authorities):
            if to is not None and i not in to:
                continue
            try:
                out[a.me] = a.handle_order(signed.encode(), now, vote_epoch=vote_epoch)
            except ProtocolError:
                pass
        return out

    def certify(self, signed: Signed, now: int = T0, to: list[int] | None = None,
                vote_epoch: int | None = None) -> CertifiedOrder:
        cert = certify(signed, self.votes(signed, now, to, vote_epoch), vote_epoch)
        cert.check(self.ledger.power_at(cert.vote_epoch), self.verify)
        return cert

    def broadcast(self, cert: CertifiedOrder) -> None:
        data = cert.encode()
        for a in self.authorities:
            a.accept_certificate(data)
            a.ledger.assert_supply()

    def run(self, order, signer, now: int = T0) -> CertifiedOrder:
        cert = self.certify(self.seal(order, signer), now)
        self.broadcast(cert)
        return cert

    # shards -------------------------------------------------------------------------------------------------------
    def pay(self, payer, fee: int = 1_000, deadline_ms: int = 500_000, nonce: bytes = b"\x01" * 32,
            items: tuple[bytes, ...] = (b"hello",), epoch: int = 0, now: int = T0):
        """Certify and apply a PayEscrow for a fresh shard; returns (cert, shard context dict)."""
        dh = data_hash(list(items))
        sid = derive_shard_id(epoch, dh, nonce, payer.public_key)
        seq = self.ledger.sequence(payer.public_key)
        cert = self.run(PayEscrow(payer.public_key, seq, epoch, sid, fee, deadline_ms), payer, now)
        return cert, {"shard_id": sid, "data_hash": dh, "nonce": nonce, "epoch": epoch, "fee": fee,
                      "submitter": payer.public_key, "pay_id": cert.id}

    def members(self, ctx: dict) -> tuple[list[bytes], int]:
        led = self.ledger
        power = led.power_at(ctx["epoch"])
        n, q = shard_size(sum(1 for v in power.values() if v > 0))
        seed = shard_seed(led.epoch_seed(ctx["epoch"]), ctx["data_hash"], ctx["nonce"], ctx["pay_id"])
        return sample_shard(power, seed, n), q

    def report(self, ctx: dict, winner: bytes | None = None, producer: bytes | None = None, share_bps: int = 0,
               strikes: tuple[bytes, ...] = (), faulty: tuple[bytes, ...] = (), **over) -> Report:
        members, _ = self.members(ctx)
        winner = winner or members[0]
        fields = dict(shard_id=ctx["shard_id"], epoch=ctx["epoch"], submitter=ctx["submitter"],
                      data_hash=ctx["data_hash"], nonce=ctx["nonce"], pay_id=ctx["pay_id"], fee=ctx["fee"],
                      winner=winner, producer=producer or winner, producer_share_bps=share_bps,
                      model_id=H("model", winner), winner_digest=H("sub", winner), loss_micro=100_000,
                      item_losses=(100_000,), routing=b"\x00\x3c" * 2, strikes=tuple(sorted(strikes)),
                      faulty=tuple(sorted(faulty)))
        fields.update(over)
        return Report(**fields)

    def shard_cert(self, report: Report, signers: list[bytes] | None = None) -> Certificate:
        members, q = self.members({"epoch": report.epoch, "data_hash": report.data_hash, "nonce": report.nonce,
                                   "pay_id": report.pay_id})
        chosen = signers if signers is not None else members[:q]
        digest = H("msg", canonical(body_of(report, self.net)))
        sigs = tuple(sorted((pk, self.keys[pk].sign(digest)) for pk in chosen))
        return Certificate(report=report, signatures=sigs)

    def settle_order(self, ctx: dict, cert: Certificate) -> Settle:
        return Settle(escrow_account(ctx["shard_id"]), 0, ctx["epoch"], cert)

    def settle(self, ctx: dict, cert: Certificate, submitter, now: int = T0) -> CertifiedOrder:
        return self.run(self.settle_order(ctx, cert), submitter, now)

    def digests(self) -> set[bytes]:
        return {a.ledger.state_digest() for a in self.authorities}


def unchecked(cls, **fields):
    """A message built without its validate(): what a client that skips the schema's rules would sign."""
    msg = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(msg, name, value)
    return msg


def seal_unchecked(msg, signer, net: bytes) -> bytes:
    """The envelope bytes of `msg`, signed as is (seal() would validate it first)."""
    body = body_of(msg, net)
    return canonical({"body": body, "signer": signer.public_key, "sig": signer.sign(H("msg", canonical(body)))})
