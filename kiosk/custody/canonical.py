"""Canonical encodings: RFC 8785 JSON and strict base64, so every byte that is signed or hashed has
exactly one spelling (a flipped padding bit or an added space must never verify)."""

from __future__ import annotations

import base64
import binascii
import json

import rfc8785


class EncodingError(ValueError):
    """Bytes that are not in the one canonical form we accept."""


_MAX_SAFE_INT = 2**53 - 1


class _NeedsFullJCS(Exception):
    pass


def _plain(value: object) -> object:
    """Copy `value` into a form whose `json.dumps(sort_keys=True)` output is byte-identical to RFC 8785,
    or raise _NeedsFullJCS. Holds because both use shortest round-trip float digits; only integral
    floats (JCS writes 10, Python 10.0), exponent ranges, keys outside the BMP (JCS sorts by UTF-16
    units) and oversized integers differ, and those are sent to the rfc8785 package instead."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            return value
        raise _NeedsFullJCS
    if t is float:
        if value.is_integer():
            if abs(value) <= _MAX_SAFE_INT:
                return int(value)
            raise _NeedsFullJCS
        if 1e-4 <= abs(value) < 1e16:
            return value
        raise _NeedsFullJCS
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str or not k.isascii() and max(map(ord, k)) > 0xFFFF:
                raise _NeedsFullJCS
            out[k] = _plain(v)
        return out
    if t is list or t is tuple:
        return [_plain(v) for v in value]
    raise _NeedsFullJCS


def canonical_json(value: object) -> bytes:
    """RFC 8785 bytes of `value`: the C json encoder where it provably agrees, rfc8785 otherwise
    (the ledger canonicalises every statement, so this is on its hot path)."""
    try:
        text = json.dumps(_plain(value), ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                          allow_nan=False)
        return text.encode("utf-8")
    except (_NeedsFullJCS, UnicodeEncodeError, RecursionError):
        return rfc8785.dumps(value)


def loads_canonical(data: bytes, what: str = "document") -> object:
    """Parse JSON that must already be in RFC 8785 form (so the bytes on disk are the signed bytes)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncodingError(f"{what} is not valid JSON ({exc})") from None
    try:
        again = canonical_json(value)
    except Exception as exc:  # rfc8785 refuses non-finite floats, oversized ints, lone surrogates
        raise EncodingError(f"{what} cannot be canonicalised ({exc})") from None
    if again != data:
        raise EncodingError(f"{what} is not in canonical (RFC 8785) form")
    return value


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str, what: str = "base64 value", size: int | None = None) -> bytes:
    """Decode standard padded base64, refusing any other spelling of the same bytes."""
    if not isinstance(text, str):
        raise EncodingError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise EncodingError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise EncodingError(f"{what} is not canonical base64")
    if size is not None and len(raw) != size:
        raise EncodingError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw
