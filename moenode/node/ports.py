"""Ports a node is about to listen on, checked before it starts: one that another process holds is refused in
one line.

libp2p would otherwise share a TCP port with another listener (its listeners set SO_REUSEPORT), and the kernel
would then split incoming connections between two nodes; a control port in use would fail deep inside the
daemon's nursery. A probe socket binds each fixed port without SO_REUSEPORT: the bind fails with EADDRINUSE if any
process listens there, whatever flags it used. Port 0 (a free port picked at start) needs no check.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from moenode.node.config import ConfigError


def tcp_endpoint(multiaddr: str) -> tuple[int, str, int] | None:
    """(family, host, port) of an /ip4/../tcp/.. or /ip6/../tcp/.. multiaddr; None for anything else."""
    parts = multiaddr.strip("/").split("/")
    if len(parts) < 4 or parts[0] not in ("ip4", "ip6") or parts[2] != "tcp":
        return None
    try:
        port = int(parts[3])
    except ValueError:
        return None
    return (socket.AF_INET if parts[0] == "ip4" else socket.AF_INET6), parts[1], port


def port_in_use(family: int, host: str, port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection in TIME_WAIT is not a user
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise ConfigError(f"cannot listen on {host} port {port}: {e.strerror}") from None
    return False


def check_ports_free(listen: Iterable[str], control_port: int) -> None:
    """Raise ConfigError naming the first fixed port another process listens on (libp2p `listen` addresses, then
    the control port on 127.0.0.1)."""
    for addr in listen:
        ep = tcp_endpoint(addr)
        if ep and ep[2] and port_in_use(*ep):
            raise ConfigError(f"listen address {addr}: port {ep[2]} is in use by another process (another node?); "
                              "stop it or choose another port in config.toml [node] listen")
    if control_port and port_in_use(socket.AF_INET, "127.0.0.1", control_port):
        raise ConfigError(f"control port {control_port} on 127.0.0.1 is in use by another process; stop it or "
                          "choose another (config.toml [node] control_port, 0 picks a free one)")
