"""The ledger store's writes leave the event loop and stay as durable as before (`moenode.node.writer`).

A real node home, its real ledger store (sqlite) and authority: every write the store runs is recorded with the
thread it ran on. Signing a checkpoint used to write and fsync its vote lock on the trio thread, as did every
certificate the ledger applied; now they run on a worker thread, and a vote still leaves only once its lock is
on disk, and the log on disk keeps the order in which the ledger applied its entries.
"""

import contextlib
import dataclasses
import threading
import time

import pytest
import trio

from moenode.core.authority import checkpoint_lock_key
from moenode.node import Node
from moenode.node.config import Config
from moenode.store.ledger_db import LedgerDB
from moenode.testing.nodekit import Cluster, certified_transfers, make_genesis, seed


@pytest.fixture
def writes(monkeypatch):
    """Every write of a ledger store: (method, whether it ran on the main (trio) thread)."""
    seen: list[tuple[str, bool]] = []
    for name in ("put_locks", "append", "save_cursor"):
        original = getattr(LedgerDB, name)

        def recorded(self, *args, _name=name, _original=original):
            seen.append((_name, threading.current_thread() is threading.main_thread()))
            return _original(self, *args)

        monkeypatch.setattr(LedgerDB, name, recorded)
    return seen


@contextlib.contextmanager
def _node(tmp_path, **genesis_changes):
    """A node of a fresh home (not running): its real stores, closed at the end; and the seeds of its authority
    and of two users."""
    authorities, users = [seed(0, "auth")], [seed(i, "user") for i in range(2)]
    genesis = make_genesis([(authorities[0], 1_000, "minilm-l3")] + [(u, 0, "minilm-l3") for u in users])
    genesis = dataclasses.replace(genesis, **genesis_changes)
    m = Cluster(tmp_path, genesis, None).add(authorities[0])
    node = Node(m.home, config=Config(home=m.home, model=m.model), genesis=genesis)
    try:
        yield node, authorities, users
    finally:
        node.archive.close()
        node.payments.close()


def _on_disk(node) -> LedgerDB:
    """The node's ledger store as a second connection reads it: what a kill -9 now would leave."""
    return LedgerDB(node.config.path("ledger"), node.net_id)


async def test_a_checkpoint_vote_leaves_only_with_its_lock_on_disk_written_off_the_event_loop(tmp_path, writes):
    epoch_ms = 600_000  # epoch 1 now: the authorities of epoch 1 sign checkpoint 0
    with _node(tmp_path, genesis_time_ms=int(time.time() * 1000) - epoch_ms - 60_000, epoch_ms=epoch_ms) as (node, _, _):
        cp = node.payments.ledger.propose_checkpoint(0)
        sig = await node.epochs.serve_checkpoint(b"\x01" * 32, cp.encode())
        assert len(sig) == 64
        assert writes == [("put_locks", False)]  # written and fsynced on a worker thread
        other = _on_disk(node)
        assert checkpoint_lock_key(0) in other.locks()
        other.close()


async def test_applied_certificates_reach_the_log_off_the_event_loop_in_their_order(tmp_path, writes):
    with _node(tmp_path) as (node, authorities, users):
        certs = certified_transfers(node.genesis, authorities, users, 6, batch=2)
        for _, data in certs:
            assert node.payments.accept(data) == "applied"
        async with trio.open_nursery() as n:
            n.start_soon(node.payments.store.run)  # what the running node does: flush as writes are queued
            with trio.fail_after(10):
                while node.payments.store.pending:
                    await trio.sleep(0.01)
            n.cancel_scope.cancel()
        assert writes == [("append", False)] * len(certs)
        other = _on_disk(node)
        assert [ident for _, ident, _ in other.entries()] == [oid for oid, _ in certs]
        other.close()


async def test_what_is_queued_at_close_is_written(tmp_path, writes):
    """A node that stops (or a test that never ran the writer) loses none of the writes its ledger decided."""
    with _node(tmp_path) as (node, authorities, users):
        certs = certified_transfers(node.genesis, authorities, users, 3)
        for _, data in certs:
            node.payments.accept(data)
    other = _on_disk(node)
    assert [ident for _, ident, _ in other.entries()] == [oid for oid, _ in certs]
    other.close()


async def test_a_failed_write_is_kept_and_tried_again_first(tmp_path, monkeypatch):
    append, fail = LedgerDB.append, [True]

    def flaky(self, *args):
        if fail[0]:
            fail[0] = False
            raise OSError("disk full")
        return append(self, *args)

    monkeypatch.setattr(LedgerDB, "append", flaky)
    with _node(tmp_path) as (node, authorities, users):
        store = node.payments.store
        certs = certified_transfers(node.genesis, authorities, users, 3)
        for _, data in certs[:2]:
            node.payments.accept(data)
        with pytest.raises(OSError):
            await store.flush()
        assert store.pending == 2
        node.payments.accept(certs[2][1])
        await store.flush()
        assert store.pending == 0
        assert [ident for _, ident, _ in store.entries()] == [oid for oid, _ in certs]
