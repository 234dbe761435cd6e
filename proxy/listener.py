"""Listening sockets: one SO_REUSEPORT socket per listener per worker slot.

The master creates them and keeps them open for the life of the listener, so a worker that dies
or is replaced on reload hands its socket (and the connections waiting in its accept queue) to the
slot's next process instead of letting Linux reset them (Granian issues #546, #849). Each worker
accepts only on its own slot's sockets.
"""
from __future__ import annotations

import socket

BACKLOG = 4096


def open_listen_socket(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if address == "::" else 1)
        sock.bind((address, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class ListenerSockets:
    """The sockets of one listener, one per worker slot, all bound to the same address and port."""

    def __init__(self, name: str, address: str, port: int):
        self.name = name
        self.address = address
        self.configured_port = port
        self.port = port          # the bound port (differs when the config says 0)
        self.socks: list[socket.socket] = []

    def key(self) -> tuple:
        return (self.name, self.address, self.configured_port)

    def ensure_slots(self, n: int) -> None:
        while len(self.socks) < n:
            sock = open_listen_socket(self.address, self.port)
            if not self.socks:
                self.port = sock.getsockname()[1]
            self.socks.append(sock)

    def shrink_to(self, n: int) -> None:
        while len(self.socks) > n:
            self.socks.pop().close()

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []
