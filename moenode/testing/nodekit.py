"""Real nodes in one process (real keys, ledger store, libp2p hosts, ONNX encoders), for the daemon's tests and the
benchmarks: a `Cluster` of homes started and stopped under one nursery, `synced_node` for sync and ledger work
without encoders or rounds, and long certified ledger histories built in seconds (`certified_transfers`,
`write_log`)."""

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from moenode.core.crypto import Ed25519Signer, H
from moenode.core.genesis import Account, Genesis, Params
from moenode.core.messages import seal
from moenode.core.orders import BatchVote, Transfer, batch_proofs, batch_vote_digest, certify, vote_digest
from moenode.node import Node
from moenode.node.config import Config
from moenode.store.keys import create_key
from moenode.store.ledger_db import init_ledger

PARAMS = Params(commit_timeout_ms=30_000, grace_min_ms=200, grace_cap_ms=3_000, vote_timeout_ms=10_000,
                reveal_timeout_ms=10_000, report_timeout_ms=10_000, round_abort_ms=60_000)
TEXTS = [
    "def parse_header(line):\n    key, _, value = line.partition(':')\n    return key.strip().lower(), value.strip()",
    "The licensee may copy and distribute verbatim copies of the program's source code as received.",
    "grep searches the named input files for lines containing a match to the given patterns.",
    "Fixed a crash when the configuration file contains an empty section; thanks to the reporter.",
    "Return the number of items in a container, raising TypeError when the object has no length.",
    "rsync copies files efficiently between hosts, sending only the differences between the files.",
    "This program is distributed in the hope that it will be useful, but WITHOUT ANY WARRANTY.",
    "New upstream release with updated translations and a rewritten command line parser module.",
]


def seed(i: int, tag: str = "node") -> bytes:
    return H("key", f"tests/node/{tag}/{i}".encode())


def make_genesis(specs: list[tuple[bytes, int, str]], params: Params = PARAMS, balance: int = 100_000,
                 epoch_ms: int = 3_600_000) -> Genesis:
    """specs: (seed, stake, model) per account."""
    accts = [Account(Ed25519Signer(s).public_key, balance=balance, stake=stake, model_id=model)
             for s, stake, model in specs]
    return Genesis("nodetest", int(time.time() * 1000) - 1_000, epoch_ms, params,
                   tuple(sorted(accts, key=lambda a: a.pubkey)))


@dataclass
class Member:
    home: Path
    seed: bytes
    model: str
    node: Node | None = None
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def account(self) -> bytes:
        return Ed25519Signer(self.seed).public_key


class Cluster:
    def __init__(self, root: Path, genesis: Genesis, nursery: trio.Nursery):
        self.root, self.genesis, self.nursery = root, genesis, nursery
        self.members: list[Member] = []

    def add(self, seed_: bytes, model: str = "minilm-l3") -> Member:
        home = self.root / f"n{len(self.members)}"
        home.mkdir(parents=True, exist_ok=True)
        init_ledger(home / "ledger.sqlite")  # as `moenode init` does: a key without its ledger is refused
        create_key(home / "key", seed_)
        m = Member(home, seed_, model)
        self.members.append(m)
        return m

    async def start(self, m: Member, bootstrap_from: list[Member] | None = None, **cfg) -> Node:
        peers = bootstrap_from if bootstrap_from is not None else [x for x in self.members if x.node and x is not m]
        boot = tuple(x.node.net.addrs()[0] for x in peers if x.node is not None)
        config = Config(home=m.home, model=m.model, bootstrap=boot, **cfg)
        node = Node(m.home, config=config, genesis=self.genesis)
        m.node, m.done = node, trio.Event()

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            try:
                await node.run(task_status=task_status)
            finally:
                m.done.set()

        await self.nursery.start(run)
        return node

    async def start_all(self, members: list[Member]) -> list[Member]:
        """Start each member in turn (each bootstraps from those already up), then wait for the mesh."""
        for m in members:
            await self.start(m)
        await self.connected()
        return members

    async def stop(self, m: Member) -> None:
        if m.node is not None:
            m.node.stop()
            await m.done.wait()
            m.node = None

    async def stop_all(self) -> None:
        for m in reversed(self.members):
            await self.stop(m)

    @property
    def nodes(self) -> list[Node]:
        return [m.node for m in self.members if m.node is not None]

    async def connected(self, timeout: float = 20.0) -> None:
        """Until every running node sees every other and has their adverts (the gossip mesh works)."""
        n = len(self.nodes)
        await wait_for(lambda: all(len(x.net.connected()) >= n - 1 and len(x.adverts) >= n - 1
                                   for x in self.nodes), timeout)


async def wait_for(cond: Callable[[], bool], timeout: float = 20.0, step: float = 0.1) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(step)


@contextlib.asynccontextmanager
async def cluster(root: Path, genesis: Genesis) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        c = Cluster(root, genesis, nursery)
        try:
            yield c
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                await c.stop_all()


def certified_transfers(genesis: Genesis, authorities: list[bytes], users: list[bytes], n: int, *,
                        first: int = 0, batch: int = 256) -> list[tuple[bytes, bytes]]:
    """`n` certified Transfers of 1 unit (order id, certificate bytes), round robin over the `users` seeds (each
    pays the next), every `batch` of them voted for by every one of the `authorities` seeds with one batch vote: a
    long, valid ledger history, built in seconds. `first` is the users' next sequence number."""
    auth = [Ed25519Signer(a) for a in authorities]
    keys = [Ed25519Signer(u) for u in users]
    out = []
    for b0 in range(0, n, batch):
        orders = []
        for i in range(b0, min(n, b0 + batch)):
            u = keys[i % len(keys)]
            to = keys[(i + 1) % len(keys)].public_key
            orders.append(seal(Transfer(u.public_key, first + i // len(keys), 0, to, 1), u, genesis.network_id))
        root, proofs = batch_proofs([vote_digest(o.id, 0) for o in orders])
        sigs = {a.public_key: a.sign(batch_vote_digest(root)) for a in auth}
        out += [(o.id, certify(o, {pk: BatchVote(sig, *proof) for pk, sig in sigs.items()}).encode())
                for o, proof in zip(orders, proofs)]
    return out


def write_log(path: Path, genesis: Genesis, certs: list[tuple[bytes, bytes]]) -> None:
    """Append certified orders to the ledger store at `path` in one transaction, as a node that applied them did."""
    from moenode.store.ledger_db import LedgerDB

    db = LedgerDB(path, genesis.network_id)
    db.db.execute("BEGIN")
    for oid, data in certs:
        db.append("order", oid, data)
    db.db.execute("COMMIT")
    db.close()


@contextlib.asynccontextmanager
async def synced_node(m: Member, genesis: Genesis, *, gossip: bool = False, **net) -> AsyncIterator[Node]:
    """The node of `m`'s home with its real stores and sync, on a real libp2p host (NetConfig fields in `net`) that
    serves the `sync` pages as the daemon does, and with `gossip` its gossip topics too; no encoders or rounds: what
    sync and the ledger need, quickly."""
    from moenode.net import NetConfig, open_host
    from moenode.node.sync import PAGE_LIMIT

    node = Node(m.home, config=Config(home=m.home, model=m.model), genesis=genesis)
    m.node = node
    try:
        async with open_host(NetConfig(seed=node.seed, net_id=node.net_id, **net)) as host:
            node.net = host
            host.set_page_handler("sync", node.sync.serve_page, max_limit=PAGE_LIMIT)
            if gossip:
                await node._subscribe(host)  # the daemon's own topic wiring
            yield node
    finally:
        m.node = None
        node.archive.close()
        node.payments.close()
