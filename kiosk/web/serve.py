"""`kiosk serve` (the room's web app) and `kiosk operator add` (console accounts); helpers that run the
app in a background thread for the demo, tests and benches.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import load_room, load_settings
from ..errors import KioskError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..live.roles import Role
    from ..station import Station


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the operator console, viewer pages, session API and WHEP")
    p.add_argument("--room", required=True, help="room profile, e.g. rooms/demo.toml or demo")
    p.add_argument("--host", help="bind address (default: server.host in the settings)")
    p.add_argument("--port", type=port_number, help="port, 0 for any free one (default: server.port in the settings)")
    p.add_argument("--data-dir", type=Path, help="data folder (default: storage.data_dir)")
    p.add_argument("--tls-cert", type=Path, help="TLS certificate (PEM); with --tls-key serves https")
    p.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    p.add_argument("--operator-link", action="store_true",
                   help="print a one-time console sign-in link (a credential: only on a trusted terminal)")
    p.set_defaults(func=run_serve)

    op = sub.add_parser("operator", help="manage operator accounts of the console")
    op_sub = op.add_subparsers(dest="operator_command", metavar="ACTION")
    add = op_sub.add_parser("add", help="add an operator (password from a prompt or --password-stdin)")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--replace", action="store_true", help="set a new password for an existing operator")
    add.add_argument("--data-dir", type=Path, help="data folder (default: storage.data_dir)")
    add.set_defaults(func=run_operator_add)
    ls = op_sub.add_parser("list", help="list operator names")
    ls.add_argument("--data-dir", type=Path)
    ls.set_defaults(func=run_operator_list)
    op.set_defaults(func=lambda args: (op.print_help(), 2)[1])


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0..65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def check_tls_files(cert: Path, key: Path) -> None:
    """Fail before anything starts when the certificate and key cannot be loaded together."""
    import ssl

    for path in (cert, key):
        if not path.is_file():
            raise KioskError(f"TLS file not found: {path}")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise KioskError(f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and matching key "
                         f"({exc.__class__.__name__}: {exc})") from None


def listen(host: str, port: int) -> socket.socket:
    """Bind the server socket before anything is printed, so a busy port is one clear error."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise KioskError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def base_url(scheme: str, host: str, port: int) -> str:
    """The URL people open; an IPv6 address goes in brackets."""
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def _data_dir(args) -> Path:
    settings = load_settings(args.config)
    return Path(args.data_dir or settings.storage.data_dir).resolve()


def run_operator_add(args) -> int:
    from .auth import OperatorStore

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            print("kiosk: error: the passwords differ", file=sys.stderr)
            return 2
    store = OperatorStore(_data_dir(args))
    store.add(args.name, password, replace=args.replace)
    print(f"operator {args.name} saved in {store.path}")
    return 0


def run_operator_list(args) -> int:
    from .auth import OperatorStore

    for name in OperatorStore(_data_dir(args)).names():
        print(name)
    return 0


def run_serve(args) -> int:
    import uvicorn

    from ..station import Station
    from .app import create_app

    settings = load_settings(args.config)
    if args.data_dir:
        settings.storage.data_dir = args.data_dir.resolve()
    room = load_room(args.room)
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    if bool(args.tls_cert) != bool(args.tls_key):
        raise KioskError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        check_tls_files(args.tls_cert, args.tls_key)
    sock = listen(host, port)  # before anything is created: a busy port leaves nothing behind
    if not settings.custody.recipients:
        synthetic = all(s.kind == "synthetic" for s in [*room.cameras, *room.microphones])
        if not synthetic:
            raise KioskError(f"{args.config or 'config/kiosk.toml'}: custody.recipients: no court recipient "
                             "configured; a real room never records without the court's public key")
        from ..custody.keys import ensure_demo_court

        identity = ensure_demo_court(settings)
        print(f"kiosk: synthetic room without court recipients: sealing to the DEMO court identity {identity}",
              flush=True)
    port = sock.getsockname()[1]
    station = Station(settings, room)
    app = create_app(station)
    scheme = "https" if args.tls_cert else "http"
    base = settings.server.public_url or base_url(scheme, host, port)
    ctx = app.state.kiosk
    print(f"kiosk: serving room {room.room.id} on {base}/console", flush=True)
    if not ctx.operators.names():
        print("kiosk: no operator accounts yet; add one with: kiosk operator add NAME", flush=True)
    if args.operator_link:
        print(f"kiosk: one-time console link: {base}/login/once/{ctx.sign_ins.mint_link_token('local')}", flush=True)
    _notify_systemd_when_listening(host, port, station)
    try:
        config = uvicorn.Config(app, log_level="warning", access_log=False, ssl_certfile=args.tls_cert,
                                ssl_keyfile=args.tls_key, lifespan="on")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        station.close()
    return 0


def _notify_systemd_when_listening(host: str, port: int, station) -> None:
    """READY=1 once the port accepts connections; WATCHDOG=1 while the media thread (if any) is alive."""
    import socket
    import threading
    import time

    from .. import sdnotify

    def healthy() -> bool:
        p, s = station.pipeline, station.session
        return p is None or s is None or s.state.value == "ended" or p.progressing

    def wait_then_notify() -> None:
        for _ in range(600):
            try:
                with socket.create_connection((host if host not in ("0.0.0.0", "::") else "127.0.0.1", port), 0.5):
                    break
            except OSError:
                time.sleep(0.1)
        sdnotify.notify("READY=1")
        sdnotify.start_watchdog(healthy)

    threading.Thread(target=wait_then_notify, name="sd-notify", daemon=True).start()


# ---------------------------------------------------------------- background server


@dataclass
class BackgroundServer:
    """The app served on a background thread (demo, tests, benches)."""

    app: FastAPI
    base_url: str
    server: object
    thread: threading.Thread
    stopped: bool = field(default=False)

    @property
    def ctx(self):
        return self.app.state.kiosk

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.ctx.live.loop

    def call(self, coro, timeout: float = 10.0):
        """Run a coroutine on the server's event loop from another thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def invite_url(self, role: Role | str, label: str = "", pre_admit: bool = False) -> str:
        from ..live.roles import parse_invite_role

        role = parse_invite_role(str(role))
        _invite, token = self.ctx.live.issue_invite(role, label, pre_admit=pre_admit)
        return f"{self.base_url}/join/{token}"

    def operator_url(self, name: str = "local") -> str:
        """A one-time console sign-in link (valid 15 minutes)."""
        return f"{self.base_url}/login/once/{self.ctx.sign_ins.mint_link_token(name)}"

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.server.should_exit = True
        self.thread.join(timeout=15)


def serve_on_thread(make_app: Callable[[str], FastAPI], host: str, port: int, name: str,
                    public_url: str | None = None, **config) -> tuple[FastAPI, str, object, threading.Thread]:
    """Bind first (port 0 picks a free one), build the app for its base URL, serve it with uvicorn on a
    daemon thread, and return (app, base URL, server, thread) once it accepts requests."""
    import uvicorn

    sock = listen(host, port)
    base = public_url or base_url("http", host, sock.getsockname()[1])
    app = make_app(base)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise KioskError(f"the {name} server did not start on {base}")
        time.sleep(0.02)
    return app, base, server, thread


def start_background_server(station: Station, host: str = "127.0.0.1", port: int = 0,
                            public_url: str | None = None) -> BackgroundServer:
    """Serve create_app(station) on a thread; port 0 picks a free one. Returns once it accepts requests."""
    from .app import create_app

    app, base, server, thread = serve_on_thread(lambda base: create_app(station, public_url=base), host, port,
                                                "kiosk-web", public_url, lifespan="on", ws_ping_interval=20)
    return BackgroundServer(app, base, server, thread)


def start_demo_server(station: Station, host: str = "127.0.0.1", port: int = 0) -> dict:
    """For `kiosk demo`: serve in the background and say where to look. Returns lines to print, the
    base URL, an observer link that is let in on arrival, and `stop`."""
    srv = start_background_server(station, host, port)
    viewer = srv.invite_url("observer", "Demo observer", pre_admit=True)
    judge = srv.invite_url("judge", "Demo judge")
    return {
        "base_url": srv.base_url,
        "viewer_url": viewer,
        "judge_url": judge,
        "server": srv,
        "stop": srv.stop,
        "lines": [
            f"live: operator console (one-time link): {srv.operator_url('demo')}",
            f"live: viewer link (observer, let in on arrival): {viewer}",
            f"live: judge link (waits for the operator to admit): {judge}",
        ],
    }
