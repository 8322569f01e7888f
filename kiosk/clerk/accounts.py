"""Clerk accounts on the court machine: name -> argon2id password hash in DATA/clerks.json (0600), kept
apart from the room station's operators, and each clerk's own Ed25519 signing key
(DATA/clerk/keys/<name>_ed25519, 0600) that signs the clerk's ledger statements ("accessed",
"exported", "deleted-by-order"), so the ledger names the person, not just the machine."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..custody.keys import Signer, load_or_create_key
from ..web.auth import MIN_PASSWORD, NAME_RE
from .errors import ClerkError

CLERKS_FILE = "clerks.json"
CLERK_DIR = "clerk"
KEYS_DIR = "keys"


def clerk_actor(name: str) -> str:
    return f"clerk:{name}"


class ClerkAccounts:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / CLERKS_FILE
        self.hasher = PasswordHasher()  # argon2id
        self._lock = threading.Lock()
        self._dummy = self.hasher.hash(secrets.token_hex(16))  # equal work for unknown names

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"clerks": {}}
        except json.JSONDecodeError as exc:
            raise ClerkError(f"{self.path}: not valid JSON ({exc}); restore it from backup") from None
        if not isinstance(data.get("clerks"), dict):
            raise ClerkError(f"{self.path}: no 'clerks' object; restore it from backup")
        return data

    def names(self) -> list[str]:
        return sorted(self._load()["clerks"])

    def exists(self, name: str) -> bool:
        return name in self._load()["clerks"]

    def add(self, name: str, password: str, replace: bool = False) -> None:
        if not NAME_RE.match(name):
            raise ClerkError("clerk name: 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit")
        if len(password) < MIN_PASSWORD:
            raise ClerkError(f"password too short: at least {MIN_PASSWORD} characters")
        with self._lock:
            data = self._load()
            if name in data["clerks"] and not replace:
                raise ClerkError(f"clerk {name!r} exists; use --replace to set a new password")
            data["clerks"][name] = {"hash": self.hasher.hash(password),
                                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)

    def verify(self, name: str, password: str) -> bool:
        entry = self._load()["clerks"].get(name)
        try:
            return self.hasher.verify(entry["hash"] if entry else self._dummy, password) and entry is not None
        except (VerificationError, InvalidHashError):
            return False

    def key_path(self, name: str) -> Path:
        return self.data_dir / CLERK_DIR / KEYS_DIR / f"{name}_ed25519"

    def signer(self, name: str) -> Signer:
        """The clerk's signing key (created 0600 on first use). Only for existing accounts."""
        if not self.exists(name):
            raise ClerkError(f"no clerk account {name!r} (kiosk clerk add-clerk {name})")
        return load_or_create_key(self.key_path(name), clerk_actor(name))
