"""Offline proof bundles: one ledger entry, its inclusion proof and the signed checkpoint it is proved
against. A bundle plus the ledger's verifier key is all a court needs to check an entry, years later,
with no network."""

from __future__ import annotations

from dataclasses import dataclass

from . import merkle
from .canonical import EncodingError, b64d
from .checkpoint import Checkpoint, CheckpointError, VerifierKey, verify_checkpoint
from .ledger import BUNDLE_FORMAT
from .statement import StatementError, leaf_bytes, verify_statement

BUNDLE_FIELDS = {"format", "origin", "statement", "leaf_index", "tree_size", "inclusion", "checkpoint", "vkey"}


class BundleError(ValueError):
    """The bundle does not prove its entry (says which part fails)."""


@dataclass(frozen=True)
class ProvenEntry:
    statement: dict
    index: int
    checkpoint: Checkpoint


def verify_bundle(bundle: object, trusted: list[VerifierKey] | None = None) -> ProvenEntry:
    """Check statement signature, inclusion and checkpoint signature. `trusted` pins the ledger keys;
    without it the bundle's own `vkey` is used (self-consistent, but not anchored)."""
    if not isinstance(bundle, dict) or set(bundle) != BUNDLE_FIELDS or bundle["format"] != BUNDLE_FORMAT:
        raise BundleError("not a proof bundle (unknown format or fields)")
    try:
        own = VerifierKey.parse(bundle["vkey"])
    except (CheckpointError, ValueError, AttributeError) as exc:
        raise BundleError(f"bundle's ledger key: {exc}") from None
    keys = trusted if trusted is not None else [own]
    if str(own) not in {str(k) for k in keys}:
        raise BundleError("bundle names a ledger key that is not trusted")
    try:
        cp = verify_checkpoint(bundle["checkpoint"], keys, origin=bundle["origin"])
    except CheckpointError as exc:
        raise BundleError(f"checkpoint: {exc}") from None
    if own.name != cp.origin:
        raise BundleError("ledger key name differs from the checkpoint origin")
    try:
        stmt = verify_statement(bundle["statement"])
    except StatementError as exc:
        raise BundleError(f"statement: {exc}") from None
    index, size = bundle["leaf_index"], bundle["tree_size"]
    if type(index) is not int or type(size) is not int or size != cp.size:
        raise BundleError("leaf index / tree size do not match the checkpoint")
    inclusion = bundle["inclusion"]
    if not isinstance(inclusion, list):
        raise BundleError("inclusion proof must be a list")
    try:
        proof = [b64d(p, "inclusion proof node", 32) for p in inclusion]
        merkle.verify_inclusion(index, size, merkle.leaf_hash(leaf_bytes(stmt)), proof, cp.root)
    except (EncodingError, merkle.ProofError) as exc:
        raise BundleError(f"inclusion: {exc}") from None
    return ProvenEntry(stmt, index, cp)
