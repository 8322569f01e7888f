"""Merkle tree hashing, proofs and proof checks exactly as RFC 9162 (same trees as RFC 6962).

Why hand-written: the algorithms are a few dozen lines, the RFC spells them out step by step, and the
conformance vectors in ../shared/vectors/rfc6962-merkle pin them down. Everything here works on raw
32-byte hashes; where the hashes live (memory, SQLite) is the caller's business, reached through a
`NodeSource`: the hash of the perfect subtree at (level, index), i.e. leaves
[index * 2**level, (index + 1) * 2**level).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeSource = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof does not prove what it claims (or is malformed)."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k (n > 1): where RFC 9162 splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


# ---------------------------------------------------------------- tree hashes from stored perfect subtrees


def subtree_root(nodes: NodeSource, lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) where lo is aligned to the subtrees the RFC recursion produces (always true for
    the ranges used by roots and proofs): fold the perfect subtrees of the range right to left."""
    if hi <= lo:
        raise ValueError("empty range has no subtree root")
    parts: list[bytes] = []
    start = lo
    remaining = hi - lo
    while remaining:
        size = 1 << (remaining.bit_length() - 1)
        level = size.bit_length() - 1
        parts.append(nodes(level, start >> level))
        start += size
        remaining -= size
    acc = parts[-1]
    for part in reversed(parts[:-1]):
        acc = node_hash(part, acc)
    return acc


def root_hash(nodes: NodeSource, size: int) -> bytes:
    return EMPTY_ROOT if size == 0 else subtree_root(nodes, 0, size)


def inclusion_proof(nodes: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 2.1.3.1, ordered from the leaf upwards."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _largest_power_of_two_below(hi - lo)
        if m < k:
            path.append(subtree_root(nodes, lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree_root(nodes, lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def consistency_proof(nodes: NodeSource, size1: int, size2: int) -> list[bytes]:
    """PROOF(size1, D[0:size2]) of RFC 9162 2.1.4.1, ordered from the bottom upwards."""
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to {size2}")
    proof: list[bytes] = []
    lo, hi, m, complete = 0, size2, size1, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                proof.append(subtree_root(nodes, lo, hi))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            proof.append(subtree_root(nodes, lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree_root(nodes, lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    proof.reverse()
    return proof


# ---------------------------------------------------------------- verification (RFC 9162 2.1.3.2 / 2.1.4.2)


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(f"{name} must be a {HASH_SIZE}-byte hash")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    _check_hash("leaf hash", leaf)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside tree of size {size}")
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    fn, sn, r = index, size - 1, bytes(leaf)
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof has too many nodes")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof has too few nodes")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes] | None, root: bytes) -> None:
    """Raise ProofError unless `leaf` is at `index` in the tree of `size` leaves with `root`."""
    _check_hash("root", root)
    computed = root_from_inclusion(index, size, leaf, proof or [])
    if computed != root:
        raise ProofError("inclusion proof leads to a different root")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes] | None) -> None:
    """Raise ProofError unless the tree (size2, root2) extends the tree (size1, root1).

    A consistency check from the empty tree proves nothing, so size1 == 0 is refused (as the
    conformance vectors require).
    """
    proof = list(proof or [])
    if size1 <= 0:
        raise ProofError("consistency from an empty tree proves nothing")
    if size2 < size1:
        raise ProofError(f"tree shrank from {size1} to {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if root1 != root2:
            raise ProofError("same size, different roots")
        return
    _check_hash("first root", root1)
    _check_hash("second root", root2)
    if not proof:
        raise ProofError("empty consistency proof")
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is the first node
        proof = [root1, *proof]
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError("consistency proof has too many nodes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof has too few nodes")
    if fr != root1:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != root2:
        raise ProofError("consistency proof does not lead to the second root")


# ---------------------------------------------------------------- building trees


class Frontier:
    """The right edge of a growing tree: one pending left subtree per level (a "compact range").

    `append` returns the new nodes it completes, as (level, index, hash), so a store can persist
    exactly those; an append costs O(1) amortised hashes, never a whole-tree recomputation.
    """

    def __init__(self, size: int = 0, pending: dict[int, bytes] | None = None) -> None:
        self.size = size
        self.pending = dict(pending or {})  # level -> hash of the rightmost complete subtree awaiting a sibling

    @classmethod
    def load(cls, size: int, nodes: NodeSource) -> Frontier:
        pending = {}
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                pending[level] = nodes(level, start >> level)
                start += 1 << level
        return cls(size, pending)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        index = self.size
        created = [(0, index, leaf)]
        h, level, idx = leaf, 0, index
        while idx & 1:
            h = node_hash(self.pending.pop(level), h)
            level += 1
            idx >>= 1
            created.append((level, idx, h))
        self.pending[level] = h
        self.size += 1
        return created

    def root(self) -> bytes:
        if self.size == 0:
            return EMPTY_ROOT
        acc = None
        for level in sorted(self.pending):
            acc = self.pending[level] if acc is None else node_hash(self.pending[level], acc)
        return acc


class MemoryTree:
    """All perfect-subtree hashes of a tree in memory: for tests, verifiers and full recomputation."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        self.frontier = Frontier()
        for leaf in leaves:
            self.append(leaf)

    def append(self, leaf: bytes) -> None:
        for level, idx, h in self.frontier.append(leaf):
            if level == len(self.levels):
                self.levels.append([])
            assert len(self.levels[level]) == idx
            self.levels[level].append(h)

    @property
    def size(self) -> int:
        return self.frontier.size

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return root_hash(self.node, self.size if size is None else size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(self.node, index, self.size if size is None else size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(self.node, size1, self.size if size2 is None else size2)
