"""An authority in its own process, for the kill -9 test: one command per stdin line, one reply per stdout line.

    python ledger_proc.py DB GENESIS_TOML INDEX [--pause-after-lock]

Commands: `order <hex>` -> `vote <hex sig>` or `error <reason> <message>`; `cert <hex>` -> `ok <status>`;
`balance <hex pk>` -> `balance <n>`; `digest` -> `digest <hex>`. With --pause-after-lock the process prints
`locked` as soon as a lock is durable and then waits, before the signature is made, to be killed.
"""

import sys
import time
from pathlib import Path

from moenode.core.crypto import Ed25519Signer, ed25519_verify
from moenode.core.errors import ProtocolError
from moenode.core.genesis import parse_genesis
from moenode.store.ledger_db import LedgerDB, open_authority


def main() -> None:
    db_path, genesis_path, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pause = "--pause-after-lock" in sys.argv
    genesis = parse_genesis(Path(genesis_path).read_text())
    signer = Ed25519Signer.from_entropy(b"auth" + index.to_bytes(4, "big"))
    auth = open_authority(db_path, genesis, signer, ed25519_verify)
    if pause:
        put = auth.store.put_locks

        def put_then_wait(*args):
            put(*args)
            print("locked", flush=True)
            time.sleep(3600)  # the parent kills us here: lock on disk, no signature yet

        auth.store.put_locks = put_then_wait  # type: ignore[method-assign]
    assert isinstance(auth.store, LedgerDB)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "order":
                now, _, data = arg.partition(" ")
                print("vote", auth.handle_order(bytes.fromhex(data), int(now)).hex(), flush=True)
            elif cmd == "cert":
                print("ok", auth.accept_certificate(bytes.fromhex(arg)), flush=True)
            elif cmd == "balance":
                print("balance", auth.ledger.balance(bytes.fromhex(arg)), flush=True)
            elif cmd == "digest":
                print("digest", auth.ledger.state_digest().hex(), flush=True)
        except ProtocolError as e:
            print("error", e.reason, str(e).replace("\n", " "), flush=True)


if __name__ == "__main__":
    main()
