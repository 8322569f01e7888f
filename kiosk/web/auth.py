"""Who is asking: operator accounts, sign-in sessions, participant tokens, and per-route role checks.

- Operators: argon2id hashes (argon2-cffi) in DATA/operators.json, mode 0600; `kiosk operator add`.
- Sign-in sessions: a random token in an HttpOnly, SameSite=Strict cookie (Secure over https); the
  server keeps only its SHA-256, so nothing on disk or in logs can be replayed.
- Participants: the viewer token from a redeemed invite, as a cookie (pages) or a Bearer header (WHEP).
- Routes: every route and WebSocket depends on `require(*roles)`; `check_routes` refuses to build an app
  in which any route lacks that declaration (default deny), and the tests enumerate the routes again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.requests import HTTPConnection

from ..errors import KioskError
from ..live.presence import Admission, Participant
from ..live.roles import ALL_ROLES, Role

OPERATOR_COOKIE = "kiosk_operator"
VIEWER_COOKIE = "kiosk_viewer"
OPERATORS_FILE = "operators.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
MIN_PASSWORD = 10
SIGN_IN_HOURS = 12
ONE_TIME_LOGIN_MINUTES = 15


class AuthError(KioskError):
    http_status = 400


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------- operator accounts


class OperatorStore:
    """Operator accounts on disk: name -> argon2id hash. Written atomically, 0600."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / OPERATORS_FILE
        self.hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile defaults
        self._lock = threading.Lock()
        self._dummy = self.hasher.hash(secrets.token_hex(16))  # equal work for unknown names

    def _load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"operators": {}}
        except json.JSONDecodeError as exc:
            raise AuthError(f"{self.path}: not valid JSON ({exc}); restore it from backup") from None

    def names(self) -> list[str]:
        return sorted(self._load()["operators"])

    def add(self, name: str, password: str, replace: bool = False) -> None:
        if not NAME_RE.match(name):
            raise AuthError("operator name: 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit")
        if len(password) < MIN_PASSWORD:
            raise AuthError(f"password too short: at least {MIN_PASSWORD} characters")
        with self._lock:
            data = self._load()
            if name in data["operators"] and not replace:
                raise AuthError(f"operator {name!r} exists; use --replace to set a new password")
            data["operators"][name] = {
                "hash": self.hasher.hash(password),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)

    def verify(self, name: str, password: str) -> bool:
        entry = self._load()["operators"].get(name)
        try:
            return self.hasher.verify(entry["hash"] if entry else self._dummy, password) and entry is not None
        except (VerificationError, InvalidHashError):
            return False


# ---------------------------------------------------------------- principals


@dataclass
class Principal:
    role: Role
    name: str
    participant: Participant | None = None

    @property
    def participant_id(self) -> str | None:
        return self.participant.id if self.participant else None

    @property
    def admitted(self) -> bool:
        return self.participant is None or self.participant.admission == Admission.ADMITTED


@dataclass
class _SignIn:
    name: str
    expires: float


@dataclass
class SignIns:
    """Operator sign-in sessions and one-time sign-in links (both stored hashed, in memory)."""

    sessions: dict[str, _SignIn] = field(default_factory=dict)
    one_time: dict[str, _SignIn] = field(default_factory=dict)
    failures: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, name: str) -> str:
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.sessions[_sha(token)] = _SignIn(name, time.time() + SIGN_IN_HOURS * 3600)
        return token

    def lookup(self, token: str | None) -> str | None:
        if not token:
            return None
        with self.lock:
            entry = self.sessions.get(_sha(token))
            if entry is None or entry.expires < time.time():
                return None
            return entry.name

    def close(self, token: str | None) -> None:
        if token:
            with self.lock:
                self.sessions.pop(_sha(token), None)

    def mint_link_token(self, name: str) -> str:
        """A single-use sign-in token for a local operator (e.g. the demo prints a console link)."""
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.one_time[_sha(token)] = _SignIn(name, time.time() + ONE_TIME_LOGIN_MINUTES * 60)
        return token

    def redeem_link_token(self, token: str) -> str | None:
        with self.lock:
            entry = self.one_time.pop(_sha(token or ""), None)
        if entry is None or entry.expires < time.time():
            return None
        return entry.name

    def throttled(self, name: str) -> bool:
        """At most 5 failed sign-ins per name per 5 minutes (argon2 already makes each one slow)."""
        now = time.time()
        with self.lock:
            recent = [t for t in self.failures.get(name, []) if now - t < 300]
            self.failures[name] = recent
            return len(recent) >= 5

    def failed(self, name: str) -> None:
        with self.lock:
            self.failures.setdefault(name, []).append(time.time())


PRINCIPAL_SOURCES_ATTR = "principal_sources"


def principals(conn: HTTPConnection) -> list[Principal]:
    """Everyone this request could be acting as: a Bearer viewer token, an operator cookie, a viewer cookie,
    and whatever extra sources a mounted part registered in `app.state.principal_sources` (the clerk
    portal's sign-ins). An app without a station (the court-side clerk portal) has only the extra ones."""
    extra = [p for source in getattr(conn.app.state, PRINCIPAL_SOURCES_ATTR, ()) if (p := source(conn))]
    ctx = getattr(conn.app.state, "kiosk", None)
    if ctx is None:
        return extra
    current = ctx.station.session
    current_id = current.info.id if current is not None else None

    def participant(token: str) -> Principal | None:
        # a viewer token is bound to its session: once the room moves on to another one it opens nothing
        p = ctx.live.roster.by_token(token)
        return Principal(p.role, p.name, p) if p is not None and p.session_id == current_id else None

    found: list[Principal] = []
    header = conn.headers.get("authorization", "")
    if header[:7].lower() == "bearer " and (pr := participant(header[7:].strip())):
        found.append(pr)
    name = ctx.sign_ins.lookup(conn.cookies.get(OPERATOR_COOKIE))
    if name:
        found.append(Principal(Role.OPERATOR, name))
    if pr := participant(conn.cookies.get(VIEWER_COOKIE, "")):
        found.append(pr)
    return found + extra


# ---------------------------------------------------------------- route declarations

ROLES_ATTR = "kiosk_roles"


def require(*roles: Role, lobby: bool = False) -> Callable[[HTTPConnection], Principal | None]:
    """Dependency that lets through only the named roles (Role.PUBLIC: anyone).

    A participant counts only once admitted, unless `lobby=True` (pages and the WebSocket a waiting
    participant needs). Returns the acting Principal (None on a public route without credentials).
    """
    allowed = frozenset(roles)
    if not allowed:
        raise ValueError("require() needs at least one role")

    def dependency(conn: HTTPConnection) -> Principal | None:
        candidates = principals(conn)
        if Role.PUBLIC in allowed:
            return candidates[0] if candidates else None
        for principal in candidates:
            if principal.role in allowed and (lobby or principal.admitted):
                return principal
        if not candidates:
            raise HTTPException(401, "sign in or open your invitation link first")
        waiting = [c for c in candidates if c.role in allowed and not c.admitted]
        if waiting:
            raise HTTPException(403, "you have not been admitted to the session yet")
        roles_text = ", ".join(sorted(r.value for r in allowed))
        raise HTTPException(403, f"not allowed for your role; this needs: {roles_text}")

    setattr(dependency, ROLES_ATTR, allowed)
    dependency.__name__ = f"require_{'_'.join(sorted(r.value for r in allowed))}"
    return dependency


def declared_roles(route) -> frozenset[Role] | None:
    """The roles a route declares through require(), or None if it declares none."""
    found: set[Role] = set()
    seen = False
    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        roles = getattr(dep.call, ROLES_ATTR, None)
        if roles is not None:
            seen = True
            found |= roles
        stack.extend(dep.dependencies)
    return frozenset(found) if seen else None


def app_routes(routes: Iterable) -> list[tuple[str, object]]:
    """Every (full path, route) the app serves, routes of included routers included."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before lazy router inclusion: app.routes is already flat
        return [(getattr(r, "path", repr(r)), r) for r in routes]
    return [(ctx.path or "", ctx.original_route) for ctx in iter_route_contexts(list(routes))]


def check_routes(routes: Iterable) -> None:
    """Refuse to serve an app with any route or WebSocket that does not declare its roles."""
    missing = []
    for path, route in app_routes(routes):
        if isinstance(route, APIRoute | APIWebSocketRoute):
            if declared_roles(route) is None:
                missing.append(path)
        else:
            missing.append(f"{path} (not a FastAPI route: cannot declare roles)")
    if missing:
        raise RuntimeError(f"routes without a role declaration (default deny): {missing}")


__all__ = [
    "ALL_ROLES", "OPERATOR_COOKIE", "VIEWER_COOKIE", "OperatorStore", "Principal", "SignIns",
    "check_routes", "declared_roles", "principals", "require",
]
