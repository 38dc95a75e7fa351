"""The node's key file: one 32-byte Ed25519 seed, the node's account, signer and libp2p identity at once.

Theory of operation: the file holds one line, `ed25519-seed:<64 hex digits>`. It is created once, atomically and
private from its first byte: the seed is written to a temporary file opened with mode 0600 and O_EXCL, flushed to
disk, then hard-linked to its final name, which fails if a key is already there, so two concurrent `init`s can
never leave two different keys or a half-written one. Loading refuses a file that others can read (as ssh does)
or that is not exactly one well-formed seed, with an error that names the file and the fix.
"""

import os
import stat
from pathlib import Path

PREFIX = "ed25519-seed:"
SEED_BYTES = 32


class KeyFileError(Exception):
    """The key file is missing, unreadable, malformed or too widely readable."""


def _parse(path: Path, text: str) -> bytes:
    line = text.strip()
    if not line.startswith(PREFIX):
        raise KeyFileError(f"{path}: not a moenode key file (expected a line starting with {PREFIX!r})")
    try:
        seed = bytes.fromhex(line[len(PREFIX):])
    except ValueError:
        raise KeyFileError(f"{path}: the seed is not hex") from None
    if len(seed) != SEED_BYTES:
        raise KeyFileError(f"{path}: the seed is {len(seed)} bytes, expected {SEED_BYTES}")
    return seed


def load_key(path: str | os.PathLike) -> bytes:
    """The 32-byte seed stored at `path`. Raises KeyFileError."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{p}: no key file (run `moenode init` to create one)") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{p}: permissions {stat.filemode(st.st_mode)} are too open; run `chmod 600 {p}`")
    try:
        text = p.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"{p}: cannot read the key ({e})") from None
    return _parse(p, text)


def create_key(path: str | os.PathLike, seed: bytes | None = None) -> bytes:
    """Write a new key (random unless `seed` is given) to `path`; never overwrites. Returns the seed."""
    p = Path(path)
    seed = os.urandom(SEED_BYTES) if seed is None else bytes(seed)
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a seed is {SEED_BYTES} bytes")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(PREFIX + seed.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)  # atomic, and refuses to replace an existing key
        except FileExistsError:
            raise KeyFileError(f"{p}: a key already exists; refusing to overwrite it") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(p.parent)
    return seed


def load_or_create_key(path: str | os.PathLike) -> tuple[bytes, bool]:
    """(seed, created): the existing key, or a new one if there is none."""
    p = Path(path)
    if p.exists():
        return load_key(p), False
    try:
        return create_key(p), True
    except KeyFileError:  # another process created it between our check and our link
        return load_key(p), False


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
