"""The simulated network's population: node keys, roles, spaces, the genesis, and how a submission becomes a shard.

Both fidelity levels build their nodes here, so the same seed gives the same keys, the same byzantine nodes, the
same spaces and the same shards. Each node declares, in the genesis, the vector space its model serves (the world
says which: `World.spaces`), so `Genesis.space_book` is the daemon's own account of who serves what. Submission k
names a space drawn from a hash of (seed, k) with the weights of `[sim] space_mix` (by default the share of nodes
that serve each space), the same at both levels and independent of the item stream. Signatures use `CheapSigner` /
`cheap_verify` (a keyed hash, not secure) because the simulator measures protocol and market dynamics, not
cryptography; `tests/sim/test_message.py` runs the same rounds with real Ed25519.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from moenode.core.crypto import CheapSigner, Ed25519Signer, H, Signer, Verifier, cheap_verify, ed25519_verify
from moenode.core.genesis import Account, Genesis
from moenode.core.messages import shard_id as make_shard_id
from moenode.core.selection import data_hash, shard_seed
from moenode.core.spaces import SpaceBook
from moenode.sim.config import Scenario
from moenode.sim.world import World
from moenode.sim.worlds import make_world

BEHAVIOURS = ("honest", "equivocate", "fake", "collapsed", "withhold")


@dataclass
class Population:
    scenario: Scenario
    keys: list[bytes]
    index_of: dict[bytes, int]
    behaviour: np.ndarray  # per node, one of BEHAVIOURS
    world: World
    clients: list[bytes]
    genesis: Genesis

    signers: dict[bytes, Signer]
    verify: Verifier
    serves: list[str]  # per node, the space its model serves
    space_weights: dict[str, float]  # the workload's mix of spaces

    @classmethod
    def build(cls, sc: Scenario) -> "Population":
        s = sc.sim
        if sc.net.ed25519:  # real keys (consistency runs); otherwise the cheap stand-in
            eds = [Ed25519Signer.from_entropy(b"sim-node" + s.seed.to_bytes(8, "big") + i.to_bytes(4, "big"))
                   for i in range(s.nodes)]
            keys = [e.public_key for e in eds]
            cl = [Ed25519Signer.from_entropy(b"sim-client" + s.seed.to_bytes(8, "big") + i.to_bytes(4, "big"))
                  for i in range(4)]
            signers: dict[bytes, Signer] = {e.public_key: e for e in eds + cl}
            clients = [c.public_key for c in cl]
            verify: Verifier = ed25519_verify
        else:
            keys = [H("sim-node", s.seed.to_bytes(8, "big") + i.to_bytes(4, "big")) for i in range(s.nodes)]
            clients = [H("sim-client", s.seed.to_bytes(8, "big") + i.to_bytes(4, "big")) for i in range(4)]
            signers = {k: CheapSigner(k) for k in keys + clients}
            verify = cheap_verify
        world = make_world(sc.world, s.seed, s.nodes)
        rng = np.random.default_rng(s.seed + 7)
        behaviour = np.array(["honest"] * s.nodes, dtype=object)
        order = rng.permutation(s.nodes)
        start = 0
        a = sc.adversary
        for name, frac in (("equivocate", a.equivocate), ("fake", a.fake), ("collapsed", a.collapsed),
                           ("withhold", a.withhold)):
            k = int(round(frac * s.nodes))
            behaviour[order[start:start + k]] = name
            start += k
        world.collapsed[:] = behaviour == "collapsed"
        inv = rng.random(s.nodes) < s.invest
        world.investing[:] = inv & (behaviour == "honest")
        spaces, serves = world.spaces()
        accounts = [Account(k, balance=0, stake=s.stake, model_id="synthetic", price=int(world.price_bps[i]),
                            spaces=(serves[i],)) for i, k in enumerate(keys)]
        accounts += [Account(c, balance=s.client_balance) for c in clients]
        accounts.sort(key=lambda acc: acc.pubkey)
        genesis = Genesis(name=f"sim-{s.name}"[:64], genesis_time_ms=0, epoch_ms=3_600_000, params=sc.params,
                          accounts=tuple(accounts), spaces=spaces)
        return cls(sc, keys, {k: i for i, k in enumerate(keys)}, behaviour, world, clients, genesis, signers, verify,
                   serves, workload(genesis.space_book, serves, s.space_mix))

    @property
    def book(self) -> SpaceBook:
        return self.genesis.space_book

    @cached_property
    def _space_cum(self) -> tuple[list[str], np.ndarray]:
        return list(self.space_weights), np.cumsum(list(self.space_weights.values()))

    def space_of(self, k: int) -> str:
        """The space submission k names."""
        ids, cum = self._space_cum
        if len(ids) == 1:
            return ids[0]
        u = int.from_bytes(H("sim-space", self.scenario.sim.seed.to_bytes(8, "big") + k.to_bytes(8, "big"))[:8],
                           "big") / 2.0**64
        return ids[min(int(np.searchsorted(cum, u * cum[-1], side="right")), len(ids) - 1)]

    def serving(self, space: str) -> np.ndarray:
        """Per node, whether it serves `space`."""
        return np.array([space == s for s in self.serves], dtype=bool)

    def cheats_by_space(self) -> dict[str, set[str]]:
        """Per space of the network, the cheats among the nodes that serve it."""
        out: dict[str, set[str]] = {s: set() for s in self.book.ids()}
        for i, space in enumerate(self.serves):
            if self.cheat(i):
                out[space].add(self.cheat(i))
        return out

    def cheat(self, i: int) -> str:
        """What node i wins as a cheat ("" for an honest model): its byzantine class, else its adversary model."""
        b = str(self.behaviour[i])
        if b != "honest":
            return b
        return self.world.label(i) if self.world.adversary(i) else ""

    def node_class(self, i: int) -> str:
        b = self.behaviour[i]
        if b != "honest":
            return b
        return "slow" if self.world.slow[i] else "honest"


def workload(book: SpaceBook, serves: list[str], mix: dict) -> dict[str, float]:
    """The weight of each space in the submissions: `mix` ({} : the number of nodes that serve each)."""
    if not mix:
        return {s: float(serves.count(s)) for s in book.ids() if s in serves} or {book.default.id: 1.0}
    unknown = set(mix) - set(book.ids())
    if unknown:
        raise ValueError(f"scenario: sim.space_mix names spaces this network does not have: {sorted(unknown)} "
                         f"(it has {', '.join(book.ids())})")
    return {str(s): float(v) for s, v in mix.items() if v > 0}


def item_text(item_id: int) -> str:
    return f"item-{item_id}"


def nonce_of(k: int) -> bytes:
    return H("sim-nonce", k.to_bytes(8, "big"))


def round_ids(epoch: int, epoch_seed: bytes, items: list[str], nonce: bytes, submitter: bytes, space: str
              ) -> tuple[bytes, bytes, bytes, bytes]:
    """(shard_id, data_hash, pay_id, shard_seed) exactly as the submitter and every member derive them; the space is
    bound into the shard id."""
    dh = data_hash([t.encode("utf-8") for t in items])
    sid = make_shard_id(epoch, dh, nonce, submitter, space)
    pay_id = H("pay", sid)
    return sid, dh, pay_id, shard_seed(epoch_seed, dh, nonce, pay_id)


def chunks(submissions: int, chunk: int, epoch_submissions: int) -> list[tuple[int, int]]:
    """(start, size) of the item-stream chunks: never across an epoch boundary. Both levels draw items this way."""
    out, done = [], 0
    while done < submissions:
        size = min(chunk, submissions - done, epoch_submissions - done % epoch_submissions)
        out.append((done, size))
        done += size
    return out
