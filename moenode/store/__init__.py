"""Durable state on disk: the ledger (sqlite, WAL) and the node's keys. Only this package and the node touch disk."""
