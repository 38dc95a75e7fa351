"""The node's secret files: its key and its control token.

The key file holds one line, `ed25519-seed:<64 hex digits>`: a 32-byte Ed25519 seed, the node's account, signer and
libp2p identity at once. The control token file (`HOME/control.token`) holds one line of 64 hex digits, the secret
every request to the node's control API must carry (`moenode.node.control_server`); it is the whole file, so a
Prometheus scrape config can name it as its `credentials_file`. The token's format and the checks on reading a
secret file are shared with the control client (`moenode.client`), which reads the token the same way.

Theory of operation: a secret file is created once, atomically and private from its first byte: the text is
written to a temporary file opened with mode 0600 and O_EXCL, flushed to disk, then hard-linked to its final name,
which fails if the file is already there, so two concurrent starts can never leave two different secrets or a
half-written one, and an existing secret is never replaced. Loading refuses a file that others can read (as ssh
does) or that is not exactly one well-formed secret, with a one-line error that names the file and the fix.
"""

import os
from pathlib import Path

from moenode.client import TOKEN_BYTES, parse_token, read_private

PREFIX = "ed25519-seed:"
SEED_BYTES = 32
KEEP = "the node never replaces it"


class KeyFileError(Exception):
    """A secret file (the key, the control token) is missing, unreadable, malformed or too widely readable."""


def _parse_seed(path: Path, text: str) -> bytes:
    fix = f"restore the key from a backup ({KEEP}; for a new identity, move it away and run `moenode init`)"
    line = text.strip()
    if not line.startswith(PREFIX):
        raise KeyFileError(f"{path}: not a moenode key file (expected one line {PREFIX}<64 hex digits>); {fix}")
    try:
        seed = bytes.fromhex(line[len(PREFIX):])
    except ValueError:
        raise KeyFileError(f"{path}: the key's seed is not hex; {fix}") from None
    if len(seed) != SEED_BYTES:
        raise KeyFileError(f"{path}: the key's seed is {len(seed)} bytes, expected {SEED_BYTES}; {fix}")
    return seed


def _read_private(path: str | os.PathLike, missing: str) -> tuple[Path, str]:
    return read_private(path, missing, KeyFileError)


def _create_private(path: str | os.PathLike, text: str, what: str) -> None:
    """Write `text` to a new file at `path`, mode 0600, atomically; never over an existing file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)  # atomic, and refuses to replace an existing file
        except FileExistsError:
            raise KeyFileError(f"{p}: a {what} already exists; refusing to overwrite it") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(p.parent)


# the key ----------------------------------------------------------------------------------------------------------
def load_key(path: str | os.PathLike) -> bytes:
    """The 32-byte seed stored at `path`. Raises KeyFileError."""
    return _parse_seed(*_read_private(path, "no key file (run `moenode init` to create one)"))


def create_key(path: str | os.PathLike, seed: bytes | None = None) -> bytes:
    """Write a new key (random unless `seed` is given) to `path`; never overwrites. Returns the seed."""
    seed = os.urandom(SEED_BYTES) if seed is None else bytes(seed)
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a seed is {SEED_BYTES} bytes")
    _create_private(path, PREFIX + seed.hex() + "\n", "key")
    return seed


def load_or_create_key(path: str | os.PathLike) -> tuple[bytes, bool]:
    """(seed, created): the existing key, or a new one if there is none."""
    return _load_or_create(path, load_key, create_key)


# the control token -------------------------------------------------------------------------------------------------
def load_token(path: str | os.PathLike) -> str:
    """The control token stored at `path` (hex). Raises KeyFileError."""
    return parse_token(*_read_private(path, "no control token (the node writes it when it starts)"), KeyFileError)


def create_token(path: str | os.PathLike) -> str:
    """Write a new random control token to `path`; never overwrites. Returns it."""
    token = os.urandom(TOKEN_BYTES).hex()
    _create_private(path, token + "\n", "control token")
    return token


def load_or_create_token(path: str | os.PathLike) -> tuple[str, bool]:
    """(token, created): the existing control token, or a new one if there is none."""
    return _load_or_create(path, load_token, create_token)


def _load_or_create(path, load, create):  # noqa: ANN001, ANN202 - one of the two pairs above
    p = Path(path)
    if p.exists():
        return load(p), False
    try:
        return create(p), True
    except KeyFileError:  # another process created it between our check and our link
        return load(p), False


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
