"""The app's listening sockets (webapp/listeners.py): several on one port, new connections spread over them."""

from __future__ import annotations

import select
import socket

import pytest

from webapp.web.listeners import listening_sockets, spreads_connections

pytestmark = pytest.mark.skipif(not spreads_connections(), reason="SO_REUSEPORT spreads connections on Linux only")


def test_the_sockets_share_one_port_and_new_connections_spread_over_them() -> None:
    sockets = listening_sockets("127.0.0.1", 0, count=4)
    clients: list[socket.socket] = []
    try:
        assert len(sockets) == 4
        port = sockets[0].getsockname()[1]
        assert port != 0 and {s.getsockname()[1] for s in sockets} == {port}
        for sock in sockets:
            sock.setblocking(False)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
        accepted: dict[int, int] = {}
        while sum(accepted.values()) < len(clients):
            ready, _, _ = select.select(sockets, [], [], 5)
            assert ready, "a connection was never accepted"
            for sock in ready:
                conn, _ = sock.accept()
                conn.close()
                accepted[sockets.index(sock)] = accepted.get(sockets.index(sock), 0) + 1
        assert len(accepted) > 1  # (40 connections all hashed to one of 4 sockets: about 1 in 10^23)
    finally:
        for sock in sockets + clients:
            sock.close()


def test_a_port_in_use_is_refused_whoever_holds_it() -> None:
    """The sockets listen from the start: a port only bound could be joined, or taken, by anyone."""
    group = listening_sockets("127.0.0.1", 0, count=2)
    plain = socket.socket()
    try:
        with pytest.raises(OSError):  # another copy of the app: it must not join the group
            listening_sockets("127.0.0.1", group[0].getsockname()[1], count=2)
        plain.bind(("127.0.0.1", 0))
        plain.listen(8)
        with pytest.raises(OSError):  # any other program
            listening_sockets("127.0.0.1", plain.getsockname()[1], count=2)
    finally:
        for sock in group + [plain]:
            sock.close()


def test_every_address_of_the_host_gets_its_sockets_on_one_port() -> None:
    sockets = listening_sockets("localhost", 0, count=2)
    try:
        addresses = {sock.getsockname()[0] for sock in sockets}
        assert "127.0.0.1" in addresses and len(sockets) == 2 * len(addresses)
        assert len({sock.getsockname()[1] for sock in sockets}) == 1
    finally:
        for sock in sockets:
            sock.close()
