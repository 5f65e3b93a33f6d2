"""A free TCP port on the loopback interface, for servers started on this machine."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the kernel just handed out, so another process is unlikely to take it before we
    bind it (the small race is acceptable for dev servers and tests, never for production)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
