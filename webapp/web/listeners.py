"""The sockets the app listens on: several on one port, so a busy app still accepts new connections fast.

uvloop's libuv (since 1.45) accepts one connection per listening socket per turn of the event
loop. Under load a turn takes tens of milliseconds (hundreds of replies streaming), so a burst
of new connections waits in the kernel's queue: 500 browsers opening their page's stream at
once on a busy app were accepted at about 33 a second, the last after 11 s (bench/README.md,
round 6), while requests on open connections were answered in under a second.

With SO_REUSEPORT, Linux spreads new connections over several sockets bound to one address,
and the loop accepts one from each per turn: LISTENERS of them accept that burst in about a
second. Only processes of the same user can join the group (the kernel's rule), and a probe
without the option is bound first, so a second app on the port is refused as before. Where the
option is missing or does not spread connections (Windows, macOS), one socket per address.

The sockets listen as soon as they are bound (connections made while the app starts wait in
the queue): a port that is bound but not listening can be taken by anyone with SO_REUSEADDR.
"""

from __future__ import annotations

import os
import socket
import sys

LISTENERS = 16
BACKLOG = 2048  # (uvicorn's default)


def spreads_connections() -> bool:
    """SO_REUSEPORT balances new connections over the sockets (Linux; BSDs give them all to one)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listening_sockets(host: str, port: int, count: int = LISTENERS, backlog: int = BACKLOG) -> list[socket.socket]:
    """`count` listening sockets per address `host` resolves to (as asyncio's create_server binds them:
    "" is every interface), all on `port` (0: the port the first one got). OSError (the port is
    taken, a host that does not resolve) after closing any already made."""
    count = count if spreads_connections() else 1
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in _addresses(host, port):
            if port == 0 and sockets:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            if count > 1:  # a socket without SO_REUSEPORT cannot share the port: whoever holds it refuses us
                with _socket(family, kind, proto) as probe:
                    probe.bind(address)
                    probe.listen(1)
                    address = (address[0], probe.getsockname()[1], *address[2:])
            for _ in range(count):
                sock = _socket(family, kind, proto)
                sockets.append(sock)
                if count > 1:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(address)
                sock.listen(backlog)
                address = (address[0], sock.getsockname()[1], *address[2:])
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _addresses(host: str, port: int) -> list[tuple]:
    """The addresses to bind, one per family and address, as asyncio's create_server resolves them."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen: set[tuple] = set()
    return [info for info in found if not (info[4] in seen or seen.add(info[4]))]


def _socket(family: int, kind: int, proto: int) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    if os.name == "posix":  # (on Windows SO_REUSEADDR would let another program bind the same port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:  # IPv6 only, as asyncio's sockets: IPv4 has its own when the host has one
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock
