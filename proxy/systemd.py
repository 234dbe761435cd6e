"""systemd's notify protocol, spoken directly: one datagram to $NOTIFY_SOCKET per state change
(sd_notify(3)); no dependency. Outside systemd (no NOTIFY_SOCKET) every call is a no-op."""
from __future__ import annotations

import os
import socket
import time


def notify(*lines: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):          # abstract namespace socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall("\n".join(lines).encode())
        return True
    except OSError:
        return False


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def reloading(status: str) -> bool:
    # MONOTONIC_USEC lets systemd (>= 253, Type=notify-reload) match the reload to this request
    return notify("RELOADING=1", f"STATUS={status}", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")


def stopping(status: str) -> bool:
    return notify("STOPPING=1", f"STATUS={status}")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")
