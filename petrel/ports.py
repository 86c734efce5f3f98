"""Free listening ports for local processes (``petrel topology``, tests, benchmarks).

A port handed out by ``bind(0)`` comes from the kernel's ephemeral range, the same range
outgoing connections take their source ports from: while a service that listens on such a
port restarts, a client connection can grab it and the restart fails with "address already
in use". ``free_port`` therefore picks ports *below* the ephemeral range.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10_000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now and outside the ephemeral range."""
    high = _ephemeral_low() - 1
    for _ in range(200):
        port = random.randint(LOWEST, high)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # crowded below the range: any free port will do
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
