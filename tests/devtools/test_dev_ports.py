"""`opsloop dev` keeps its ports between runs (dev.json): a restart under traffic moved them all."""

from __future__ import annotations

import socket

from streams.devtools.dev import port_free


def test_a_port_whose_server_stopped_with_connections_in_time_wait_is_free_again():
    """A stopped server leaves its side of each connection in TIME_WAIT; the servers bind with SO_REUSEADDR
    (aiohttp, Kafka, PostgreSQL), so the port is theirs again at once, and port_free must say so."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    assert not port_free(port)  # listening: taken
    accepted.close()  # the server's side closes first, as a stopping server does
    assert client.recv(1) == b""
    client.close()
    server.close()
    assert port_free(port)
