"""The daemon (`moenode.node`): see `moenode.node.daemon` for the theory of operation.

Modules: `daemon` (the composition root: the Node and `run_node`; no other module here imports it), `context` (the
frozen context every part shares: signer, genesis, clock, counters, reject, spawn), `rounds` (shard rounds over the
network and the expert's proxy RPC), `submitter` (our own submissions: pay, send, refund, retry), `payments` (ledger, authority and the order-certifying
client), `writer` (the authority's store writes, on worker threads), `certificates` (the door every shard
certificate goes through), `epochs` (checkpoints and evidence), `sync` (catch-up for late joiners), `adverts`
(experts' adverts), `compute` (encoders on worker threads), `decoding` (large peer inputs decoded on worker
threads), `winner_index` (where past winners were, for routing), `control_server` (the control API on 127.0.0.1),
`config` (config.toml) and `home` (creating a node home).

`Node` and `run_node` are loaded on first use, so that `moenode.node.config` and `moenode.node.home` stay cheap to
import (`moenode init` needs them, not the daemon).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moenode.node.daemon import Node, run_node

__all__ = ["Node", "run_node"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from moenode.node import daemon

        return getattr(daemon, name)
    raise AttributeError(f"module 'moenode.node' has no attribute {name!r}")
