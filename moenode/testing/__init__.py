"""Tools for tests, benchmarks and researchers, kept out of the daemon's import path (as `trio.testing` is).

- `inproc`: every member and the submitter of one shard round in one process, on a virtual clock.
- `testnet`: local testnets of real daemon processes (`Testnet`, `NodeProcess`), and testnet geneses.
- `ledger_tools`: a running testnet's ledgers read from the outside (snapshots, replays, agreement).
- `demo`: the testnet demo and benchmark workload of real corpus text.
- `roundkit`, `ledgerkit`, `fuzzkit`, `nodekit`, `simkit`: fixtures shared by the test suite and `bench/`: shard
  rounds on synthetic payloads, ledgers of staked authorities, hostile decoder inputs, in-process daemon clusters,
  small simulator scenarios.

The daemon (`moenode.node`) never imports this package; the `moenode testnet` commands do.
"""
