"""Canonical JSON: the fast path must give exactly the rfc8785 package's bytes (and refuse what it
refuses); strict base64 must refuse every other spelling of the same bytes."""

from __future__ import annotations

import base64
import random

import pytest
import rfc8785

from kiosk.custody.canonical import EncodingError, b64d, canonical_json, loads_canonical

POOL = ["a", "Z", "é", "\u2028", "\x7f", "\x00", "\x1f", "\n", '"', "\\", "/", "\ud7ff", "\ue000", "\uffff",
        "😀", "𝄞", "€", "\t", "\b", "\f", "\r"]
SPECIAL_FLOATS = [1e-7, 1e-5, 1e-4, 9.99e-5, 1e15, 1e16, 1e21, 1e22, -0.0, 0.0, 5e-324, 1.7976931348623157e308,
                  2.0**53, 2**53 + 2.0, 0.1, 1 / 3, 120.0, 130.5]


def _random_doc(rng: random.Random, depth: int = 0):
    def text():
        return "".join(rng.choice(POOL) for _ in range(rng.randrange(0, 6)))
    c = rng.random()
    if depth > 3 or c < 0.2:
        return text()
    if c < 0.35:
        return rng.choice([True, False, None, rng.randrange(-2**53 + 1, 2**53), rng.randrange(-99, 99), 2**60])
    if c < 0.55:
        r = rng.random()
        if r < 0.3:
            return float(rng.randrange(-10**6, 10**6))
        if r < 0.5:
            return rng.uniform(-1e6, 1e6)
        if r < 0.7:
            return rng.choice(SPECIAL_FLOATS)
        return float(f"{rng.uniform(-10, 10):.{rng.randrange(1, 12)}e}") * 10 ** rng.randrange(-8, 25)
    if c < 0.75:
        return [_random_doc(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {text(): _random_doc(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def test_fast_canonical_json_equals_rfc8785_on_random_documents():
    rng = random.Random(8785)
    compared = 0
    for _ in range(20_000):
        doc = _random_doc(rng)
        try:
            want = rfc8785.dumps(doc)
        except Exception:
            with pytest.raises(Exception):  # noqa: B017 - whatever rfc8785 refuses, we refuse too
                canonical_json(doc)
            continue
        assert canonical_json(doc) == want, doc
        compared += 1
    assert compared > 15_000


def test_keys_outside_the_bmp_sort_by_utf16_units():
    doc = {"\uffff": 1, "😀": 2, "a": 3}
    assert canonical_json(doc) == rfc8785.dumps(doc) == '{"a":3,"😀":2,"\uffff":1}'.encode()


def test_non_canonical_json_is_refused():
    assert loads_canonical(b'{"a":1,"b":[true,null]}') == {"a": 1, "b": [True, None]}
    for bad in (b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":1.0}', b'{"a":"\\u00e9"}', b"\xff"):
        with pytest.raises(EncodingError):
            loads_canonical(bad)


def test_base64_with_other_padding_bits_is_refused():
    raw = bytes(range(32))
    text = base64.b64encode(raw).decode()
    assert b64d(text, size=32) == raw
    last = text[-2]
    twin = text[:-2] + chr(ord(last) + 1) + "="  # same bytes under lenient decoders
    assert base64.b64decode(twin) == raw
    with pytest.raises(EncodingError, match="canonical"):
        b64d(twin)
    for bad in (text[:-1], text + "\n", " " + text, text.replace("A", "-", 1)):
        with pytest.raises(EncodingError):
            b64d(bad)
