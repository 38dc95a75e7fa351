"""Networking: the only package that imports libp2p. See docs/networking.md and `moenode.net.host`."""

from moenode.net.direct import NetError, PeerUnreachable, RemoteError, RequestTimeout
from moenode.net.gossip import TOPICS, topic_name
from moenode.net.guard import GuardConfig
from moenode.net.host import NetConfig, NetHost, open_host
from moenode.net.identity import account_id_of, key_pair_from_seed, peer_id_of
from moenode.net.limits import Rate

__all__ = [
    "NetConfig", "NetHost", "open_host", "GuardConfig", "NetError", "PeerUnreachable", "RemoteError", "RequestTimeout",
    "TOPICS", "topic_name", "account_id_of", "peer_id_of", "key_pair_from_seed", "Rate",
]
