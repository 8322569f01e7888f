"""Domain errors: each says what went wrong in words an operator or clerk can act on.

The CLI turns them into one line and a non-zero exit; the web app maps them to 4xx/5xx with the
message as the reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable


class KioskError(Exception):
    """Base class of every error the kiosk raises on purpose."""

    http_status = 500


class ConfigError(KioskError):
    """A settings file or room profile is malformed; names the file and the key."""

    http_status = 400

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


class DeviceUnavailable(KioskError):
    """A camera or microphone named in the room profile cannot be opened."""

    http_status = 503


class SourceError(KioskError):
    """A capture source failed while running (file unreadable, decoder error, ...)."""

    http_status = 503


class SessionStateError(KioskError):
    """An action that the session's current state does not allow (e.g. pause before start)."""

    http_status = 409


class SessionNotFound(KioskError):
    http_status = 404


class DiskFull(KioskError):
    """Not enough free space for the configured maximum session."""

    http_status = 507


class SealError(KioskError):
    """Sealing a segment or manifest failed."""


class LedgerConflict(KioskError):
    """The ledger refused an entry or disagrees with a checkpoint."""

    http_status = 409


class VerificationFailed(KioskError):
    """A sealed session or ledger did not verify; carries the failing items."""

    http_status = 422

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        super().__init__("; ".join(failures))


def clear_errors(fn: Callable[..., int]) -> Callable[..., int]:
    """For CLI commands: malformed input (bad key strings, unreadable files) becomes one clear line."""

    @functools.wraps(fn)
    def run(*args, **kwargs) -> int:
        try:
            return fn(*args, **kwargs)
        except KioskError:
            raise
        except (ValueError, OSError) as exc:
            raise KioskError(f"{type(exc).__name__}: {exc}") from None

    return run
