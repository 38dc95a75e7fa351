"""The sqlite ledger store: state survives reopening and kill -9; a corrupt or foreign store refuses to start."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from moenode.core.authority import order_lock_key
from moenode.core.crypto import Ed25519Signer, ed25519_verify
from moenode.core.genesis import Account, Genesis, genesis_to_toml
from moenode.core.errors import ProtocolError
from moenode.core.orders import CertifiedOrder, Transfer, certify, vote_digest
from moenode.core.messages import seal
from moenode.store.ledger_db import LedgerDB, StoreError, open_authority

PROC = Path(__file__).with_name("ledger_proc.py")
N = 4


def keys(tag: bytes, n: int) -> list[Ed25519Signer]:
    return [Ed25519Signer.from_entropy(tag + i.to_bytes(4, "big")) for i in range(n)]


AUTH, USERS = keys(b"auth", N), keys(b"user", 3)


def genesis(name: str = "storetest") -> Genesis:
    accts = [Account(k.public_key, balance=1_000, stake=100) for k in AUTH]
    accts += [Account(u.public_key, balance=1_000) for u in USERS]
    return Genesis(name=name, genesis_time_ms=0, epoch_ms=1_000_000,
                   accounts=tuple(sorted(accts, key=lambda a: a.pubkey)))


def cluster(tmp_path: Path, g: Genesis):
    return [open_authority(tmp_path / f"a{i}.db", g, k, ed25519_verify) for i, k in enumerate(AUTH)]


def run(auths, g: Genesis, order, signer, now: int = 10) -> CertifiedOrder:
    signed = seal(order, signer, g.network_id)
    cert = certify(signed, {a.me: a.handle_order(signed.encode(), now) for a in auths})
    for a in auths:
        a.accept_certificate(cert.encode())
    return cert


def test_state_and_locks_survive_reopen(tmp_path):
    g = genesis()
    auths = cluster(tmp_path, g)
    alice, bob = USERS[:2]
    run(auths, g, Transfer(alice.public_key, 0, 0, bob.public_key, 300), alice)
    pending = seal(Transfer(alice.public_key, 1, 0, bob.public_key, 5), alice, g.network_id)
    auths[0].handle_order(pending.encode(), 10)  # locked, never certified
    digest = auths[0].ledger.state_digest()
    for a in auths:
        a.store.close()
    again = open_authority(tmp_path / "a0.db", g, AUTH[0], ed25519_verify)
    assert again.ledger.state_digest() == digest
    assert again.ledger.balance(bob.public_key) == 1_300
    assert again.locked(alice.public_key, 1) == pending.id
    conflicting = seal(Transfer(alice.public_key, 1, 0, bob.public_key, 6), alice, g.network_id)
    with pytest.raises(Exception, match="already signed"):
        again.handle_order(conflicting.encode(), 10)


def test_a_batch_of_locks_is_written_whole_or_not_at_all(tmp_path):
    g = genesis()
    auth = open_authority(tmp_path / "a.db", g, AUTH[0], ed25519_verify)
    alice, bob = USERS[:2]
    batch = [seal(Transfer(u.public_key, 0, 0, bob.public_key, 5), u, g.network_id) for u in (alice, USERS[2])]
    auth.handle_orders([s.encode() for s in batch], 10)
    auth.store.close()
    db = LedgerDB(tmp_path / "a.db", g.network_id)
    assert {db.locks()[order_lock_key(s.msg.account, 0)][0] for s in batch} == {s.id for s in batch}
    # a row that clashes with a stored lock fails the whole transaction: the row before it is not kept either
    new_key = order_lock_key(bob.public_key, 0)
    clash = order_lock_key(alice.public_key, 0)
    with pytest.raises(Exception, match="UNIQUE"):
        db.put_locks([(new_key, b"x" * 32, b"", b""), (clash, b"y" * 32, b"", b"")])
    assert new_key not in LedgerDB(tmp_path / "a.db", g.network_id).locks()


def test_foreign_and_corrupt_stores_refuse_to_start(tmp_path):
    g = genesis()
    auths = cluster(tmp_path, g)
    run(auths, g, Transfer(USERS[0].public_key, 0, 0, USERS[1].public_key, 10), USERS[0])
    for a in auths:
        a.store.close()
    with pytest.raises(StoreError, match="belongs to network"):
        open_authority(tmp_path / "a0.db", genesis("othernet"), AUTH[0], ed25519_verify)
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match="not an sqlite file"):
        open_authority(junk, g, AUTH[0], ed25519_verify)
    # a log entry whose votes were altered on disk no longer replays
    db = LedgerDB(tmp_path / "a1.db", g.network_id)
    (data,) = db.db.execute("SELECT data FROM log WHERE kind='order'").fetchone()
    bad = data.replace(data[-64:], bytes(64))
    db.db.execute("UPDATE log SET data=? WHERE kind='order'", (bad,))
    db.close()
    with pytest.raises(StoreError, match="log entry 1 of 1 .* does not replay"):
        open_authority(tmp_path / "a1.db", g, AUTH[1], ed25519_verify)
    # a truncated database file
    p = tmp_path / "a2.db"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(StoreError):
        open_authority(p, g, AUTH[2], ed25519_verify)


def _start(db: Path, gpath: Path, pause: bool) -> subprocess.Popen:
    args = [sys.executable, str(PROC), str(db), str(gpath), "0"] + (["--pause-after-lock"] if pause else [])
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def _ask(p: subprocess.Popen, line: str) -> str:
    p.stdin.write(line + "\n")
    p.stdin.flush()
    return p.stdout.readline().strip()


def test_kill_9_between_lock_and_reply(tmp_path):
    g = genesis()
    gpath = tmp_path / "genesis.toml"
    gpath.write_text(genesis_to_toml(g))
    db = tmp_path / "auth0.db"
    alice, bob, carol = USERS
    # a certificate the process applies before it is killed
    others = cluster(tmp_path, g)
    signed0 = seal(Transfer(alice.public_key, 0, 0, carol.public_key, 100), alice, g.network_id)
    cert0 = certify(signed0, {a.me: a.handle_order(signed0.encode(), 10) for a in others})
    a = seal(Transfer(alice.public_key, 1, 0, bob.public_key, 50), alice, g.network_id)
    b = seal(Transfer(alice.public_key, 1, 0, carol.public_key, 60), alice, g.network_id)

    p = _start(db, gpath, pause=True)
    try:
        assert _ask(p, "cert " + cert0.encode().hex()) == "ok applied"
        assert _ask(p, f"order 10 {a.encode().hex()}") == "locked"  # lock durable, signature not yet made
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        p.kill()
    assert p.returncode == -signal.SIGKILL

    p = _start(db, gpath, pause=False)
    try:
        assert _ask(p, "balance " + carol.public_key.hex()) == "balance 1100"  # the applied cert survived
        reply = _ask(p, f"order 10 {b.encode().hex()}")
        assert reply.startswith("error conflict"), reply
        kind, sig = _ask(p, f"order 10 {a.encode().hex()}").split()
        assert kind == "vote" and ed25519_verify(AUTH[0].public_key, vote_digest(a.id, 0), bytes.fromhex(sig))
        # a certificate applied just before a kill -9, with no lock written after it (no fsync): still there
        for o in others:
            o.accept_certificate(cert0.encode())
        cert_a = certify(a, {o.me: o.handle_order(a.encode(), 10) for o in others})
        assert _ask(p, "cert " + cert_a.encode().hex()) == "ok applied"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        p.kill()
    store = LedgerDB(db, g.network_id)
    assert store.locks()[order_lock_key(alice.public_key, 1)][0] == a.id
    store.close()
    again = open_authority(db, g, AUTH[0], ed25519_verify)
    assert again.ledger.balance(bob.public_key) == 1_050 and again.ledger.balance(carol.public_key) == 1_100


def test_random_histories_rebuild_to_the_same_state():
    """Certificates, pending ones and a checkpoint, in a random order, survive a reopen bit for bit."""
    import random
    import tempfile

    from hypothesis import given, settings
    from hypothesis import strategies as st

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
    from test_ledger_properties import OP, build_history

    from moenode.core.crypto import cheap_verify

    @settings(max_examples=10, deadline=None)
    @given(ops=st.lists(OP, min_size=1, max_size=15), seed=st.integers(0, 2**32 - 1))
    def check(ops, seed):
        rng = random.Random(seed)
        net, msgs = build_history(4, ops, rng)
        rng.shuffle(msgs)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "ledger.db"
            auth = open_authority(path, net.genesis, net.auth_keys[0], cheap_verify)
            for kind, data in msgs:
                (auth.accept_certificate if kind == "order" else auth.accept_checkpoint)(data)
            want = auth.ledger.state_digest()
            assert want == net.ledger.state_digest()
            auth.store.close()
            again = open_authority(path, net.genesis, net.auth_keys[0], cheap_verify)
            assert again.ledger.state_digest() == want
            again.store.close()

    check()


def test_a_late_checkpoint_rewrites_the_log_and_survives_reopen(tmp_path):
    from moenode.core.checkpoint import CheckpointCert

    g = genesis()
    auths = cluster(tmp_path, g)
    alice, bob = USERS[:2]
    run(auths, g, Transfer(alice.public_key, 0, 0, bob.public_key, 300), alice)
    cp = auths[0].ledger.propose_checkpoint(0)
    now = g.epoch_ms + 1
    data = CheckpointCert(cp, tuple(sorted((a.me, a.sign_checkpoint(cp, now)) for a in auths[:3]))).encode()
    for a in auths[:3]:
        assert a.accept_checkpoint(data) == "applied"
    late = auths[3]
    late.catch_up(2 * g.epoch_ms + 1)  # its window closed here before the certificate came: carried over
    run(auths, g, Transfer(bob.public_key, 0, 2, alice.public_key, 7), bob, now=2 * g.epoch_ms + 2)
    assert late.ledger.state_digest() != auths[0].ledger.state_digest()
    assert late.accept_checkpoint(data) == "adopted"
    digest = auths[0].ledger.state_digest()
    assert late.ledger.state_digest() == digest
    late.store.close()
    again = open_authority(tmp_path / "a3.db", g, AUTH[3], ed25519_verify)
    assert again.ledger.state_digest() == digest and again.ledger.balance(alice.public_key) == 707


def test_future_orders_an_older_version_logged_unchecked_are_deleted_on_open(tmp_path):
    """An older node logged every certified order of a not yet fixed epoch on arrival, unchecked, so a forger could
    fill its log. Opening such a store replays what holds and deletes those rows (the others keep their place)."""
    g = genesis()
    auths = cluster(tmp_path, g)
    alice, bob = USERS[:2]
    cert = run(auths, g, Transfer(alice.public_key, 0, 0, bob.public_key, 300), alice)
    store = auths[0].store
    for i in range(50):  # what the old code appended for each forged order it was offered (made-up votes)
        order = seal(Transfer(alice.public_key, 1 + i, 2, bob.public_key, 1), alice, g.network_id)
        forged = certify(order, {a.me: bytes(64) for a in auths}).encode()
        store.append("order", order.id, forged)
    later = seal(Transfer(bob.public_key, 0, 0, alice.public_key, 7), bob, g.network_id)
    store.append("order", later.id, certify(later, {a.me: a.handle_order(later.encode(), 10)
                                                    for a in auths}).encode())
    assert len(store.entries()) == 52
    store.close()
    again = open_authority(tmp_path / "a0.db", g, AUTH[0], ed25519_verify)
    assert [ident for _, ident, _ in again.store.entries()] == [cert.id, later.id]
    assert [seq for (seq,) in again.store.db.execute("SELECT seq FROM log")] == [1, 52]  # the others keep their place
    assert not again.ledger.pending
    assert again.ledger.balance(bob.public_key) == 1_293 and again.ledger.applied[(alice.public_key, 0)] == cert.id


def test_a_lost_ledger_is_refused_and_a_resynced_one_abstains_for_two_epochs(tmp_path):
    """The locks in the ledger stop a second vote for one sequence. A home that ran (its key or certificate archive
    exists) but whose ledger is missing or empty has lost them, and is refused; `resync_ledger` sets the file aside
    and starts an empty ledger whose authority votes on nothing until two epochs on."""
    from moenode.store.ledger_db import init_ledger, require_ledger, resync_ledger

    g = genesis()
    e = g.epoch_ms
    path, key = tmp_path / "ledger.sqlite", tmp_path / "key"
    key.write_text("a key")
    require_ledger(path, [])  # a new home: nothing to lose
    with pytest.raises(StoreError, match=r"ledger.sqlite is missing but .*key exists: this node's vote locks are gone"):
        require_ledger(path, [key])
    path.write_bytes(b"")
    with pytest.raises(StoreError, match=r"is empty \(0 bytes\)") as err:
        require_ledger(path, [key])
    assert err.value.resyncable
    path.unlink()
    init_ledger(path)  # what `moenode init` leaves: claimed by the first network that opens it
    require_ledger(path, [key])
    open_authority(path, g, AUTH[0], ed25519_verify).store.close()
    with pytest.raises(StoreError, match="belongs to network") as err:
        open_authority(path, genesis("othernet"), AUTH[0], ed25519_verify)
    assert not err.value.resyncable

    moved, votes_from = resync_ledger(path, g, 3 * e + 5, "t1")
    assert moved[0] == tmp_path / "ledger.sqlite.t1.broken" and moved[0].exists() and votes_from == 5
    auth = open_authority(path, g, AUTH[0], ed25519_verify)
    alice, bob = USERS[:2]
    for epoch in (3, 4):
        order = seal(Transfer(alice.public_key, 0, epoch, bob.public_key, 1), alice, g.network_id)
        with pytest.raises(ProtocolError, match="votes again from epoch 5") as err:
            auth.handle_order(order.encode(), epoch * e + 10)
        assert err.value.reason == "abstaining"
    with pytest.raises(ProtocolError, match="votes again from epoch 5"):
        auth.sign_checkpoint(auth.ledger.propose_checkpoint(3), 4 * e + 10)
    order = seal(Transfer(alice.public_key, 0, 5, bob.public_key, 1), alice, g.network_id)
    assert ed25519_verify(AUTH[0].public_key, vote_digest(order.id, 5), auth.handle_order(order.encode(), 5 * e + 1))
    auth.store.close()
    assert open_authority(path, g, AUTH[0], ed25519_verify).votes_from_epoch == 5  # survives a restart


def test_an_order_waiting_when_a_late_checkpoint_is_adopted_still_applies_and_is_logged(tmp_path):
    """Adopting a late checkpoint certificate rebuilds the ledger from the log; a certified order that was waiting
    for a later table is in no log (it is logged when it applies), so the rebuilt ledger must take it over."""
    from moenode.core.checkpoint import CheckpointCert

    g = genesis()
    e = g.epoch_ms
    auths = cluster(tmp_path, g)
    alice, bob = USERS[:2]
    run(auths, g, Transfer(alice.public_key, 0, 0, bob.public_key, 300), alice)
    cp = auths[0].ledger.propose_checkpoint(0)
    data = CheckpointCert(cp, tuple(sorted((a.me, a.sign_checkpoint(cp, e + 1)) for a in auths[:3]))).encode()
    for a in auths[:3]:
        assert a.accept_checkpoint(data) == "applied"
        a.catch_up(3 * e + 1)  # no checkpoint of epoch 1 formed: table 3 carries over
    late = auths[3]
    late.catch_up(2 * e + 1)  # it missed the certificate: table 2 carried over here
    signed = seal(Transfer(bob.public_key, 0, 3, alice.public_key, 7), bob, g.network_id)
    cert = certify(signed, {a.me: a.handle_order(signed.encode(), 3 * e + 2) for a in auths[:3]})
    for a in auths[:3]:
        assert a.accept_certificate(cert.encode()) == "applied"
    assert late.accept_certificate(cert.encode()) == "pending"
    assert late.accept_checkpoint(data) == "adopted"
    assert len(late.ledger.pending) == 1
    late.catch_up(3 * e + 5)
    assert not late.ledger.pending and late.ledger.state_digest() == auths[0].ledger.state_digest()
    assert [k for k, _, _ in late.store.entries()] == ["order", "checkpoint", "skip", "order"]
    late.store.close()
    again = open_authority(tmp_path / "a3.db", g, AUTH[3], ed25519_verify)
    assert again.ledger.state_digest() == auths[0].ledger.state_digest()
