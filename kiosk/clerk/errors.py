"""Errors of the court side, each worded for a clerk: what failed, on which session or segment, and
what to do about it. Web routes map them to 4xx via `http_status`; the CLI prints one line."""

from __future__ import annotations

from ..errors import KioskError


class ClerkError(KioskError):
    """A clerk's request cannot be carried out as asked (bad input, wrong state)."""

    http_status = 400


class SessionUnknown(ClerkError):
    http_status = 404


class IdentityError(ClerkError):
    """The court identity cannot be read or opened (missing file, wrong passphrase, not a recipient)."""

    http_status = 400


class RetrievalError(ClerkError):
    """Decrypting or reassembling a recording failed; nothing partial was left behind."""

    http_status = 422


class DeletedByOrder(ClerkError):
    """The recording was deleted by a court order: there is nothing left to retrieve."""

    http_status = 410
