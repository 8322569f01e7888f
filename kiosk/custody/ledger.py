"""The custody ledger: an append-only Merkle log of signed statements in SQLite.

Why this shape: a court must be able to check, years later and offline, that a recording's custody
record was neither changed nor quietly dropped. Each statement is a leaf (RFC 9162 hashing); the ledger
signs checkpoints (C2SP tlog-checkpoint) and hands out inclusion and consistency proofs, so anyone
holding one checkpoint can hold the ledger to it.

Storage: `entries` (leaf bytes, dedupe key), `nodes` (every perfect-subtree hash, written as leaves are
appended, so an append costs O(1) hashes and a proof O(log^2 n) lookups), `checkpoints` (signed notes).
WAL journal with synchronous=FULL: a statement the caller was told about survives power loss. Several
processes may share the file: each append re-reads the tree size inside its write transaction.

Only enrolled keys may append: a `key-enrolled` statement signed by the ledger's own key comes first.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import LedgerConflict
from ..logs import event as log_event
from . import merkle
from .canonical import b64e
from .checkpoint import Checkpoint, VerifierKey, sign_checkpoint, vkey
from .keys import Signer, ledger_signer
from .statement import (
    KEY_ENROLLED,
    StatementError,
    dedupe_key,
    make_statement,
    parse_leaf,
    verify_statement_leaf,
)

log = logging.getLogger("kiosk.custody.ledger")

LEDGER_DIR = "ledger"
LEDGER_FILE = "ledger.sqlite"
BUNDLE_FORMAT = "testimony-kiosk/proof-bundle/v1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries(idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL, dedupe TEXT UNIQUE);
CREATE TABLE IF NOT EXISTS nodes(level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
                                 PRIMARY KEY(level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints(size INTEGER PRIMARY KEY, note TEXT NOT NULL);
"""


@dataclass
class Entry:
    index: int
    statement: dict
    leaf_hash: bytes
    existing: bool = False  # append found this earlier entry for the same subject instead of adding one

    def to_json(self) -> dict:
        return {"index": self.index, "statement": self.statement, "leaf_hash": b64e(self.leaf_hash),
                "existing": self.existing}


class LedgerAPI(Protocol):
    """What the sealer, verifier and clerk need; the in-process `Ledger` and the HTTP `LedgerClient`
    both provide it."""

    origin: str

    @property
    def vkey(self) -> str: ...
    def append(self, stmt: dict) -> Entry: ...
    def append_many(self, stmts: list[dict]) -> list[Entry]: ...
    def find(self, key: str) -> Entry | None: ...
    def entry(self, index: int) -> Entry: ...
    def size(self) -> int: ...
    def checkpoint(self) -> str: ...
    def inclusion_proof(self, index: int, size: int) -> list[bytes]: ...
    def consistency_proof(self, size1: int, size2: int) -> list[bytes]: ...
    def bundle(self, index: int, checkpoint: str | None = None) -> dict: ...
    def enroll(self, actor: str, public_b64: str, role: str) -> Entry: ...
    def is_enrolled(self, actor: str, public_b64: str) -> bool: ...


def enrolment_subject(actor: str, public_b64: str) -> str:
    return f"{actor}/{public_b64}"


class Ledger:
    """In-process ledger over one SQLite file. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path, signer: Signer, origin: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.signer = signer
        self.origin = origin
        self._vkey = vkey(origin, signer.public_raw)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT v FROM meta WHERE k='origin'").fetchone()
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES('origin', ?)", (origin,))
        elif row[0] != origin:
            raise LedgerConflict(f"{self.path} is the ledger of origin {row[0]!r}, not {origin!r}")
        self._frontier: merkle.Frontier | None = None
        self._enrolled: set[tuple[str, str]] = set()

    @classmethod
    def open(cls, data_dir: Path, origin: str) -> Ledger:
        """The kiosk's (or ledger host's) ledger at DATA/ledger/ledger.sqlite, keyed by DATA/keys/ledger_ed25519."""
        return cls(Path(data_dir) / LEDGER_DIR / LEDGER_FILE, ledger_signer(data_dir, origin), origin)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def vkey(self) -> str:
        return self._vkey

    @property
    def verifier_key(self) -> VerifierKey:
        return VerifierKey.parse(self._vkey)

    # ------------------------------------------------------------ reading

    def _node(self, level: int, index: int) -> bytes:
        row = self._db.execute("SELECT hash FROM nodes WHERE level=? AND idx=?", (level, index)).fetchone()
        if row is None:
            raise LedgerConflict(f"ledger is missing tree node ({level}, {index})")
        return row[0]

    def _size(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()[0]

    def size(self) -> int:
        with self._lock:
            return self._size()

    def root(self, size: int | None = None) -> bytes:
        with self._lock:
            return merkle.root_hash(self._node, self._size() if size is None else size)

    def _entry_from_row(self, index: int, leaf: bytes) -> Entry:
        return Entry(index, parse_leaf(leaf), merkle.leaf_hash(leaf))

    def entry(self, index: int) -> Entry:
        with self._lock:
            row = self._db.execute("SELECT leaf FROM entries WHERE idx=?", (index,)).fetchone()
        if row is None:
            raise KeyError(f"no ledger entry {index}")
        return self._entry_from_row(index, row[0])

    def find(self, key: str) -> Entry | None:
        """The entry for a dedupe key (`type:subject`), if any."""
        with self._lock:
            row = self._db.execute("SELECT idx, leaf FROM entries WHERE dedupe=?", (key,)).fetchone()
        return None if row is None else self._entry_from_row(row[0], row[1])

    def iter_entries(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        with self._lock:
            rows = self._db.execute("SELECT idx, leaf FROM entries WHERE idx >= ? ORDER BY idx", (start,)).fetchall()
        yield from rows

    # ------------------------------------------------------------ enrolment

    def _enrolled_locked(self, actor: str, public_b64: str) -> bool:
        if (actor, public_b64) in self._enrolled:
            return True
        key = f"{KEY_ENROLLED}:{enrolment_subject(actor, public_b64)}"
        if self._db.execute("SELECT 1 FROM entries WHERE dedupe=?", (key,)).fetchone():
            self._enrolled.add((actor, public_b64))
            return True
        return False

    def is_enrolled(self, actor: str, public_b64: str) -> bool:
        with self._lock:
            return self._enrolled_locked(actor, public_b64)

    def enroll(self, actor: str, public_b64: str, role: str = "kiosk") -> Entry:
        """Let `actor` append statements signed by this key (idempotent)."""
        body = {"subject": enrolment_subject(actor, public_b64), "actor": actor, "key": public_b64, "role": role}
        return self.append(make_statement(self.signer, KEY_ENROLLED, body))

    # ------------------------------------------------------------ appending

    def _admit(self, stmt: dict) -> tuple[dict, bytes]:
        """Check one statement before it may enter (signature, enrolment); return it with its leaf bytes."""
        try:
            return stmt, verify_statement_leaf(stmt)
        except StatementError as exc:
            raise LedgerConflict(f"refused statement: {exc}") from None

    def _admit_all(self, stmts: list[dict]) -> list[tuple[dict, bytes]]:
        return [self._admit(s) for s in stmts]

    def _may_append(self, stmt: dict, pending: set[tuple[str, str]]) -> bool:
        if stmt["type"] == KEY_ENROLLED and stmt["key"] == self.signer.public_b64:
            body = stmt["body"]
            if not isinstance(body.get("actor"), str) or not isinstance(body.get("key"), str):
                raise LedgerConflict("key-enrolled statement needs body.actor and body.key")
            pending.add((body["actor"], body["key"]))
            return True
        return (stmt["actor"], stmt["key"]) in pending or self._enrolled_locked(stmt["actor"], stmt["key"])

    def append(self, stmt: dict) -> Entry:
        return self.append_many([stmt])[0]

    def append_many(self, stmts: list[dict]) -> list[Entry]:
        """Append statements in one durable transaction. A statement whose subject is already in the
        ledger with the same body returns the earlier entry (`existing=True`); a different body for the
        same subject is a LedgerConflict, and nothing from the batch is written."""
        admitted = self._admit_all(stmts)  # outside the lock: readers need not wait for signature checks
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                size = self._size()
                if self._frontier is None or self._frontier.size != size:
                    self._frontier = merkle.Frontier.load(size, self._node)
                frontier = merkle.Frontier(self._frontier.size, self._frontier.pending)
                pending: set[tuple[str, str]] = set()
                seen: dict[str, Entry] = {}
                out: list[Entry] = []
                entries, nodes = [], []
                for stmt, leaf in admitted:
                    if not self._may_append(stmt, pending):
                        raise LedgerConflict(f"key of {stmt['actor']} is not enrolled at ledger {self.origin}")
                    key = dedupe_key(stmt)
                    if key is not None:
                        earlier = seen.get(key) or self._find_locked(key)
                        if earlier is not None:
                            if earlier.statement["body"] != stmt["body"]:
                                raise LedgerConflict(f"ledger already holds a different {key}")
                            out.append(Entry(earlier.index, earlier.statement, earlier.leaf_hash, True))
                            continue
                    lh = merkle.leaf_hash(leaf)
                    index = frontier.size
                    nodes.extend(frontier.append(lh))
                    entries.append((index, leaf, key))
                    entry = Entry(index, stmt, lh)
                    if key is not None:
                        seen[key] = entry
                    out.append(entry)
                db.executemany("INSERT INTO entries VALUES(?, ?, ?)", entries)
                db.executemany("INSERT INTO nodes VALUES(?, ?, ?)", nodes)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._frontier = None
                raise
            self._frontier = frontier
            self._enrolled |= pending
        return out

    def _find_locked(self, key: str) -> Entry | None:
        row = self._db.execute("SELECT idx, leaf FROM entries WHERE dedupe=?", (key,)).fetchone()
        return None if row is None else self._entry_from_row(row[0], row[1])

    # ------------------------------------------------------------ checkpoints and proofs

    def checkpoint(self) -> str:
        """A signed checkpoint of the current tree (re-used if the tree has not grown)."""
        with self._lock:
            size = self._size()
            row = self._db.execute("SELECT note FROM checkpoints WHERE size=?", (size,)).fetchone()
            if row:
                return row[0]
            cp = sign_checkpoint(self.origin, size, merkle.root_hash(self._node, size), self.signer)
            self._db.execute("INSERT INTO checkpoints VALUES(?, ?)", (size, cp.note))
        log_event(log, "checkpoint signed", origin=self.origin, size=size)
        return cp.note

    def checkpoints(self) -> list[tuple[int, str]]:
        with self._lock:
            return self._db.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        with self._lock:
            if size > self._size():
                raise merkle.ProofError(f"tree size {size} is beyond the ledger's {self._size()}")
            return merkle.inclusion_proof(self._node, index, size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        with self._lock:
            if size2 > self._size():
                raise merkle.ProofError(f"tree size {size2} is beyond the ledger's {self._size()}")
            return merkle.consistency_proof(self._node, size1, size2)

    def bundle(self, index: int, checkpoint: str | None = None) -> dict:
        """Everything needed to check entry `index` offline: statement, proof, signed checkpoint, vkey."""
        from .checkpoint import parse_checkpoint

        note = checkpoint or self.checkpoint()
        cp: Checkpoint = parse_checkpoint(note)
        entry = self.entry(index)
        return make_bundle(entry, self.inclusion_proof(index, cp.size), note, cp.size, self.origin, self.vkey)


def make_bundle(entry: Entry, proof: list[bytes], note: str, size: int, origin: str, ledger_vkey: str) -> dict:
    return {"format": BUNDLE_FORMAT, "origin": origin, "statement": entry.statement, "leaf_index": entry.index,
            "tree_size": size, "inclusion": [b64e(p) for p in proof], "checkpoint": note, "vkey": ledger_vkey}


def batched(items: Iterable, n: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
