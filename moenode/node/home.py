"""A node's home directory, created: the key, the default config.toml and the empty ledger store.

`init_home` is what `moenode init` does, and what a testnet does for each of its nodes. What lives in a home and
the config schema are described in `moenode.node.config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def init_home(home: Path, model: str | None = None, *, force: bool = False, listen: Sequence[str] = (),
              **config: Any) -> dict[str, str]:
    """Create a node home: a new key (0600), a default config.toml and an empty ledger store. `moenode init` and
    `moenode.testing.testnet` use it.

    An existing key is kept (an identity is never destroyed); `force` rewrites config.toml only. The ledger is
    created with the key because it will hold the key's vote locks: a home with a key and no ledger has lost them.
    Returns {"home", "account" (hex), "peer_id", "config", "key", "created"}.
    """
    from moenode.core.crypto import Ed25519Signer
    from moenode.node.config import load_config, model_setting, write_default_config
    from moenode.store.keys import load_or_create_key
    from moenode.store.ledger_db import init_ledger

    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    cfg_path = home / "config.toml"
    if force:
        cfg_path.unlink(missing_ok=True)
    overrides = dict(config)
    if model:
        overrides["model"] = model_setting(model)
    if listen:
        overrides["listen"] = list(listen)
    if not cfg_path.exists():
        write_default_config(home, **overrides)
    if not (home / "key").exists():
        init_ledger(load_config(home).path("ledger"))  # before the key: a key alone means a lost ledger
    seed, created = load_or_create_key(home / "key")
    account = Ed25519Signer(seed).public_key
    return {"home": str(home), "account": account.hex(), "peer_id": peer_id_hex(account),
            "config": str(cfg_path), "key": str(home / "key"), "created": "yes" if created else "no"}


def peer_id_hex(account: bytes) -> str:
    """The libp2p peer id (12D3KooW...) of an account; imports libp2p, so only where that is acceptable."""
    from moenode.net.identity import peer_id_of

    return peer_id_of(account).to_base58()
