"""Sync cursors: how far this node has walked each peer's history, kept in the store the walk writes to.

A peer's history is paged by its own row numbers, so a cursor is per peer (and per history: the ledger's log and
the certificate archive each keep theirs, in their own file). A cursor is committed after the rows it covers, on
the same connection, so after a crash it never points past a row the walk did not keep: the walk resumes from it
and fetches at most one page again. Both stores run `SCHEMA` when they open.
"""

import sqlite3

SCHEMA = "CREATE TABLE IF NOT EXISTS sync_cursors (peer BLOB PRIMARY KEY, cursor BLOB NOT NULL);"


def read_cursors(db: sqlite3.Connection) -> dict[bytes, bytes]:
    return {bytes(peer): bytes(cursor) for peer, cursor in db.execute("SELECT peer, cursor FROM sync_cursors")}


def write_cursor(db: sqlite3.Connection, peer: bytes, cursor: bytes) -> None:
    db.execute("INSERT OR REPLACE INTO sync_cursors VALUES (?, ?)", (peer, cursor))
