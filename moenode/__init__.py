"""moenode: a peer-to-peer market of encoder experts.

Shards of stake-weighted nodes embed submitted text, the split-half differential loss picks the winner, and every
value move settles through signed messages. `moenode.core` is the sans-IO protocol; `moenode.node` drives it.
"""

__version__ = "0.1.0"
