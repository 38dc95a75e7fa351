"""The sans-IO protocol core: no I/O, no clock, no randomness of its own.

Every entry point takes `now` (integer milliseconds or seconds, as the caller's clock says) and returns effects.
The node (trio + libp2p) and the simulator (virtual clock) both drive this package.
"""
