"""The sockets the app listens on: several on one port, so a busy app still accepts new connections fast.

uvloop's libuv (since 1.45) accepts one connection per listening socket per turn of the event
loop. Under load a turn takes tens of milliseconds (hundreds of replies streaming), so a burst
of new connections waits in the kernel's queue: 500 browsers opening their page's stream at
once on a busy app were accepted at about 35 a second, the last after 11 s (bench/README.md,
round 6), while requests on open connections were answered in under a second.

With SO_REUSEPORT, Linux spreads new connections over several sockets bound to one address,
and the loop accepts one from each per turn: LISTENERS of them accept that burst in about a
second. Only processes of the same user can join the group (the kernel's rule). Where the
option is missing or does not spread connections (Windows, macOS), one socket, as before.
"""

from __future__ import annotations

import socket
import sys

LISTENERS = 16


def spreads_connections() -> bool:
    """SO_REUSEPORT balances new connections over the sockets (Linux; BSDs give them all to one)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listening_sockets(host: str, port: int, count: int = LISTENERS) -> list[socket.socket]:
    """`count` sockets bound to host:port (port 0: the port the first one got), ready to pass to
    uvicorn.Server.run(sockets=...); OSError (the port is taken) after closing any already made."""
    count = count if spreads_connections() else 1
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if count > 1:
        # a socket without SO_REUSEPORT cannot share the port: a second app started on it (another
        # copy of this one included, which could otherwise join the group) is refused as before
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            probe.listen(1)
            port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
