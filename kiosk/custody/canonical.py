"""Canonical encodings: RFC 8785 JSON and strict base64, so every byte that is signed or hashed has
exactly one spelling (a flipped padding bit or an added space must never verify)."""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

import rfc8785


class EncodingError(ValueError):
    """Bytes that are not in the one canonical form we accept."""


def canonical_json(value: object) -> bytes:
    return rfc8785.dumps(value)


def loads_canonical(data: bytes, what: str = "document") -> object:
    """Parse JSON that must already be in RFC 8785 form (so the bytes on disk are the signed bytes)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncodingError(f"{what} is not valid JSON ({exc})") from None
    try:
        again = rfc8785.dumps(value)
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


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write, fsync, rename, fsync the folder: after a crash the file is either old or complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
