"""The order outbox: what a node signed survives reopening and kill -9, beside the ledger store in one file."""

import signal
import subprocess
import sys
import textwrap

from moenode.core.crypto import Ed25519Signer, ed25519_verify
from moenode.core.genesis import Account, Genesis
from moenode.store.ledger_db import open_authority
from moenode.store.outbox import KEEP_CLOSED, Entry, Outbox

ME, OTHER = b"m" * 32, b"e" * 32


def test_entries_survive_reopen_and_close_keeps_our_newest(tmp_path):
    path = tmp_path / "ledger.sqlite"
    box = Outbox(path)
    box.add(b"1" * 32, ME, 0, b"order-0", ())
    box.add(b"2" * 32, OTHER, 0, b"refund", (b"pay-cert",))
    box.add(b"1" * 32, ME, 0, b"order-0", ())  # the same order again: one row
    box.record(b"1" * 32, b"cert-0")
    box.close_db()
    box = Outbox(path)
    assert box.open_entries() == [Entry(b"order-0", (), b"cert-0"), Entry(b"refund", (b"pay-cert",), None)]
    box.close(b"1" * 32, ME)
    box.drop(b"2" * 32)
    assert box.open_entries() == [] and box.recent(ME, 3) == [b"cert-0"]
    for seq in range(1, KEEP_CLOSED + 3):  # closed rows of our own account: the newest few are kept, in order
        oid = seq.to_bytes(32, "big")
        box.add(oid, ME, seq, b"o", ())
        box.record(oid, f"cert-{seq}".encode())
        box.close(oid, ME)
    assert box.recent(ME, 3) == [f"cert-{s}".encode() for s in range(KEEP_CLOSED, KEEP_CLOSED + 3)]
    assert box.db.execute("SELECT count(*) FROM outbox").fetchone()[0] == KEEP_CLOSED
    box.close_db()


def test_the_outbox_shares_the_ledger_file_without_disturbing_it(tmp_path):
    path = tmp_path / "ledger.sqlite"
    signer = Ed25519Signer.from_entropy(b"outbox-test")
    genesis = Genesis(name="outboxtest", genesis_time_ms=0, epoch_ms=1_000_000,
                      accounts=(Account(signer.public_key, balance=1_000, stake=100),))
    auth = open_authority(path, genesis, signer, ed25519_verify)
    box = Outbox(path)
    box.add(b"1" * 32, ME, 0, b"order", ())
    auth.store.append("skip", (0).to_bytes(8, "big"), b"")
    box.close_db()
    auth.store.close()
    again = open_authority(path, genesis, signer, ed25519_verify)  # quick_check, schema and replay all pass
    assert again.ledger.known_through == 2
    assert Outbox(path).open_entries() == [Entry(b"order", (), None)]
    again.store.close()


def test_an_order_written_survives_kill_9(tmp_path):
    path = tmp_path / "ledger.sqlite"
    script = textwrap.dedent(f"""
        import time
        from moenode.store.outbox import Outbox
        box = Outbox({str(path)!r})
        box.add(b"1" * 32, b"m" * 32, 7, b"order-7", (b"att",))
        box.record(b"1" * 32, b"cert-7")
        print("written", flush=True)
        time.sleep(3600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"written"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert Outbox(path).open_entries() == [Entry(b"order-7", (b"att",), b"cert-7")]
