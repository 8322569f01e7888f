"""RFC 6962 / RFC 9162 conformance: the transparency-dev vectors accept every happy path, reject every
broken variant, and our own proof generation reproduces the reference proofs."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from kiosk.custody import merkle

# ../shared beside the checkout, or wherever KIOSK_RFC6962_VECTORS points (a clone elsewhere)
VECTORS = Path(os.environ.get("KIOSK_RFC6962_VECTORS")
               or Path(__file__).resolve().parent.parent / ".." / "shared" / "vectors" / "rfc6962-merkle" / "testdata")
REFERENCE_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]

pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"RFC 6962 vectors absent at {VECTORS}")


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _files(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).rglob("*.json")) if VECTORS.is_dir() else []


def _id(p: Path) -> str:
    return str(p.relative_to(VECTORS))


@pytest.mark.parametrize("path", _files("inclusion"), ids=_id)
def test_inclusion_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b64(p) for p in (v["proof"] or [])]
    check = lambda: merkle.verify_inclusion(v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), proof, _b64(v["root"]))  # noqa: E731
    if v["wantErr"]:
        with pytest.raises(merkle.ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("path", _files("consistency"), ids=_id)
def test_consistency_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b64(p) for p in (v["proof"] or [])]
    check = lambda: merkle.verify_consistency(v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), proof)  # noqa: E731
    if v["wantErr"]:
        with pytest.raises(merkle.ProofError):
            check()
    else:
        check()


def test_reference_tree_root_matches_rfc() -> None:
    tree = merkle.MemoryTree(merkle.leaf_hash(d) for d in REFERENCE_LEAVES)
    assert base64.b64encode(tree.root()).decode() == "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="
    assert tree.frontier.root() == tree.root()


def test_generated_proofs_equal_every_happy_path_vector() -> None:
    tree = merkle.MemoryTree(merkle.leaf_hash(d) for d in REFERENCE_LEAVES)
    checked = 0
    for path in _files("inclusion"):
        v = json.loads(path.read_text())
        if v["wantErr"] or path.parent.name == "single-entry":
            continue
        assert [base64.b64encode(p).decode() for p in tree.inclusion_proof(v["leafIdx"], v["treeSize"])] == (v["proof"] or [])
        assert tree.root(v["treeSize"]) == _b64(v["root"])
        checked += 1
    for path in _files("consistency"):
        v = json.loads(path.read_text())
        if v["wantErr"] or path.parent.name == "additional":
            continue
        assert [base64.b64encode(p).decode() for p in tree.consistency_proof(v["size1"], v["size2"])] == (v["proof"] or [])
        checked += 1
    assert checked >= 8


def test_every_generated_proof_verifies_for_trees_up_to_40_leaves() -> None:
    tree = merkle.MemoryTree()
    for n in range(1, 41):
        tree.append(merkle.leaf_hash(n.to_bytes(4, "big")))
        root = tree.root()
        for i in range(n):
            merkle.verify_inclusion(i, n, tree.node(0, i), tree.inclusion_proof(i), root)
        for m in range(1, n + 1):
            merkle.verify_consistency(m, n, tree.root(m), root, tree.consistency_proof(m))
        # a wrong leaf never verifies
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(0, n, merkle.leaf_hash(b"forged"), tree.inclusion_proof(0), root)
