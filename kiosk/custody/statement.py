"""Ledger statements: small signed JSON claims ("segment sealed", "manifest sealed", "key enrolled",
later "accessed", "decrypted", "exported", "deleted by order") made by an actor with its Ed25519 key.

A statement is `{"v", "type", "actor", "key", "time", "body", "sig"}`; `sig` signs the RFC 8785 form of
the rest, prefixed with a domain tag so the signature cannot be replayed as anything else. The ledger
leaf is the RFC 8785 form of the whole signed statement. A statement whose body carries a `subject`
is unique per (type, subject): the ledger refuses a second, different one (that is how a crashed
sealer finds its earlier entry instead of adding a duplicate).
"""

from __future__ import annotations

import datetime as dt
import json
import time

from .canonical import EncodingError, b64d, b64e, canonical_json, loads_canonical
from .keys import Signer, verify_signature

VERSION = 1
DOMAIN = b"testimony-kiosk/statement/v1\n"
FIELDS = {"v", "type", "actor", "key", "time", "body", "sig"}

SEGMENT_SEALED = "segment-sealed"
MANIFEST_SEALED = "manifest-sealed"
KEY_ENROLLED = "key-enrolled"
DELETED_BY_ORDER = "deleted-by-order"


class StatementError(ValueError):
    """A statement is malformed or its signature does not verify."""


def utc_now_iso(ts: float | None = None) -> str:
    ts = time.time() if ts is None else ts
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_statement(signer: Signer, kind: str, body: dict, at: float | None = None) -> dict:
    stmt = {"v": VERSION, "type": kind, "actor": signer.actor, "key": signer.public_b64,
            "time": utc_now_iso(at), "body": body}
    stmt["sig"] = b64e(signer.sign(DOMAIN + canonical_json(stmt)))
    return stmt


def check_shape(stmt: object) -> dict:
    if not isinstance(stmt, dict) or set(stmt) != FIELDS:
        raise StatementError(f"a statement has exactly the fields {sorted(FIELDS)}")
    if stmt["v"] != VERSION:
        raise StatementError(f"unknown statement version {stmt['v']!r}")
    for name in ("type", "actor", "time", "key", "sig"):
        if not isinstance(stmt[name], str) or not stmt[name]:
            raise StatementError(f"statement field {name!r} must be a non-empty string")
    if not isinstance(stmt["body"], dict):
        raise StatementError("statement body must be an object")
    subject = stmt["body"].get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject):
        raise StatementError("statement subject must be a non-empty string")
    return stmt


def verify_statement(stmt: object) -> dict:
    """Shape and signature (by the key the statement names). Whether that key may speak for the actor is
    the ledger's enrolment question, answered elsewhere."""
    verify_statement_leaf(stmt)
    return stmt  # type: ignore[return-value]


def verify_statement_leaf(stmt: object) -> bytes:
    """Verify, and return the statement's leaf bytes (canonicalising once: the ledger's hot path)."""
    stmt = check_shape(stmt)
    try:
        key = b64d(stmt["key"], "statement key", 32)
        sig = b64d(stmt["sig"], "statement signature", 64)
    except EncodingError as exc:
        raise StatementError(str(exc)) from None
    unsigned = canonical_json({k: v for k, v in stmt.items() if k != "sig"})
    if not verify_signature(key, sig, DOMAIN + unsigned):
        raise StatementError(f"signature of {stmt['type']} statement by {stmt['actor']} does not verify")
    return _splice_sig(unsigned, stmt["key"], stmt["sig"])


def _splice_sig(unsigned: bytes, key_b64: str, sig_b64: str) -> bytes:
    """RFC 8785 form of the signed statement from that of the unsigned one: top-level keys sort as
    actor, body, key, sig, time, type, v, so `"sig"` goes right after the top-level `"key"` member. That
    member is found with rfind: an unescaped `"key":"` cannot occur inside a JSON string, and only the
    body (which comes earlier) could hold another one."""
    anchor = f'"key":"{key_b64}",'.encode()
    at = unsigned.rfind(anchor)
    if at < 0:
        raise StatementError("statement is missing its key")
    at += len(anchor)
    return unsigned[:at] + f'"sig":"{sig_b64}",'.encode() + unsigned[at:]


def leaf_bytes(stmt: dict) -> bytes:
    return canonical_json(stmt)


def parse_leaf(data: bytes) -> dict:
    try:
        return check_shape(loads_canonical(data, "ledger leaf"))
    except EncodingError as exc:
        raise StatementError(str(exc)) from None


def parse_leaf_unchecked(data: bytes) -> dict:
    """Parse a leaf without the canonical-form check (callers compare `verify_statement_leaf`'s output
    with the stored bytes instead, which checks both at the cost of one canonicalisation)."""
    try:
        return check_shape(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StatementError(f"ledger leaf is not JSON ({exc})") from None


def dedupe_key(stmt: dict) -> str | None:
    subject = stmt["body"].get("subject")
    return None if subject is None else f"{stmt['type']}:{subject}"
