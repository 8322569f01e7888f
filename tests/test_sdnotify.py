"""READY and WATCHDOG notifications reach a real datagram socket the way systemd would read them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kiosk import sdnotify


def test_notify_and_watchdog_send_to_the_notify_socket(tmp_path: Path, monkeypatch):
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(3)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert sdnotify.notify("READY=1")
    assert server.recv(100) == b"READY=1"
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    healthy = {"ok": True}
    stop = sdnotify.start_watchdog(lambda: healthy["ok"])
    try:
        assert server.recv(100) == b"WATCHDOG=1"
        healthy["ok"] = False
        server.settimeout(0.35)  # over three ping intervals (the app pings at WATCHDOG_USEC / 2)
        late = 0
        for _ in range(3):  # a ping already in flight may still arrive, then silence
            try:
                server.recv(100)
                late += 1
            except TimeoutError:
                break
        assert late <= 1, f"{late} pings after the media thread was reported dead"
        server.settimeout(1.0)
        with pytest.raises(TimeoutError):
            server.recv(100)  # systemd's watchdog now runs out and restarts the service
        healthy["ok"] = True
        server.settimeout(2.0)
        assert server.recv(100) == b"WATCHDOG=1", "pings resume once healthy again"
    finally:
        stop.set()
        server.close()


def test_notify_is_a_no_op_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
