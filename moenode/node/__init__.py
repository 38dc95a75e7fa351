"""The daemon (`moenode.node`): see `moenode.node.daemon` for the theory of operation.

Modules: `daemon` (the Node and `run_node`), `rounds` (shard rounds over the network, the expert's proxy RPC and
the submitter gateway), `payments` (ledger, authority and the order-certifying client), `sync` (catch-up for late
joiners), `compute` (encoders on worker threads), `decoding` (large peer inputs decoded on worker threads),
`archive` (the verified history on disk).
"""

from moenode.node.daemon import Node, run_node

__all__ = ["Node", "run_node"]
