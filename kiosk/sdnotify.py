"""systemd readiness and watchdog notifications (sd_notify protocol), without a libsystemd dependency.

The kiosk says READY=1 once it serves, and pings WATCHDOG=1 only while its media thread is alive, so a
wedged pipeline gets the service restarted (and recovery closes what it left).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable


def notify(message: str) -> bool:
    """Send one notification; False when not run by systemd (no NOTIFY_SOCKET)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


def watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return None
    return int(usec) / 1e6 / 2


def start_watchdog(healthy: Callable[[], bool]) -> threading.Event | None:
    """Ping the watchdog at half its interval while `healthy()` holds. Returns a stop event."""
    interval = watchdog_interval()
    if interval is None:
        return None
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            if healthy():
                notify("WATCHDOG=1")

    threading.Thread(target=run, name="watchdog", daemon=True).start()
    return stop
