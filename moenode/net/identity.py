"""One key, two views: the node's Ed25519 seed as a libp2p identity, and the libp2p host built on it.

Theory of operation: the 32-byte seed that `moenode.core.crypto.Ed25519Signer` signs messages with is also the
libp2p host key, so a peer's libp2p public key *is* its account id (the raw 32-byte Ed25519 public key), and its
peer id (`12D3KooW...`, an identity multihash of that key) can be converted both ways without a lookup.

The host is built with exactly one security protocol (Noise), one muxer (Yamux) and one connection per peer:
py-libp2p enables plaintext by default and waits 250 ms per dial unless `max_connections_per_peer=1`.

Listeners do not share ports: py-libp2p sets SO_REUSEPORT on its TCP listeners (for hole punching, which moenode
does not use), so a second node told to listen on a port in use would start and the kernel would split incoming
connections between the two. `_no_port_sharing` keeps SO_REUSEADDR only, so such a bind fails.
"""

import socket
from collections.abc import Sequence

import libp2p.transport.tcp.tcp as libp2p_tcp
import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from moenode.core.crypto import PUBKEY_SIZE
from moenode.core.errors import ProtocolError

DEFAULT_LISTEN = ("/ip4/127.0.0.1/tcp/0",)


def _no_port_sharing(sock) -> None:  # noqa: ANN001 - a trio socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebinding after a restart (TIME_WAIT) is fine


libp2p_tcp._set_reuse_flags = _no_port_sharing


def key_pair_from_seed(seed: bytes) -> KeyPair:
    """The libp2p Ed25519 key pair of a 32-byte seed (the same key `Ed25519Signer(seed)` holds)."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    return create_new_key_pair(seed)


def peer_id_of(account_id: bytes) -> ID:
    """Account id (raw Ed25519 public key) -> libp2p peer id."""
    if len(account_id) != PUBKEY_SIZE:
        raise ValueError(f"an account id is {PUBKEY_SIZE} bytes, got {len(account_id)}")
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(account_id))


def account_id_of(peer_id: ID) -> bytes:
    """libp2p peer id -> account id. A peer whose id does not embed an Ed25519 key is a ProtocolError."""
    try:
        key = peer_id.extract_public_key()
    except Exception:  # malformed multihash or key protobuf from a remote peer
        key = None
    if key is None or key.get_type() != KeyType.Ed25519:
        raise ProtocolError(f"peer {peer_id} does not carry an Ed25519 key", reason="bad_identity")
    raw = key.to_bytes()
    if len(raw) != PUBKEY_SIZE:
        raise ProtocolError(f"peer {peer_id} has a malformed Ed25519 key", reason="bad_identity")
    return raw


def account_id_from_text(peer_id: str) -> bytes:
    """A peer id in its text form (`12D3KooW...`) -> account id; ProtocolError if it is not one."""
    try:
        pid = ID.from_base58(peer_id)
    except Exception:  # noqa: BLE001 - any base58 or multihash failure means "not a peer id"
        raise ProtocolError(f"{peer_id!r} is not a peer id", reason="bad_identity") from None
    return account_id_of(pid)


def make_libp2p_host(seed: bytes, listen: Sequence[str] = DEFAULT_LISTEN) -> IHost:
    """A libp2p host: TCP, Noise only, Yamux, one connection per peer. Run it with `host.run(listen_addrs)`."""
    kp = key_pair_from_seed(seed)
    return new_host(
        key_pair=kp,
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)},
        muxer_preference="YAMUX",
        listen_addrs=[multiaddr.Multiaddr(a) for a in listen],
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
