"""The custody ledger: signed-note interop, statements and enrolment, proofs, several writers, and
`kiosk ledger verify` naming every tampered row or checkpoint."""

from __future__ import annotations

import base64
import random
import shutil
import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiosk.cli import main as kiosk_main
from kiosk.custody import merkle
from kiosk.custody.checkpoint import (
    CheckpointError,
    VerifierKey,
    open_note,
    parse_checkpoint,
    sign_note,
    verify_checkpoint,
)
from kiosk.custody.keys import Signer, kiosk_signer
from kiosk.custody.ledger import Ledger
from kiosk.custody.proofs import BundleError, verify_bundle
from kiosk.custody.statement import make_statement
from kiosk.custody.verify import all_ok, failures, verify_ledger
from kiosk.errors import LedgerConflict

ORIGIN = "testimony-kiosk/ledger"

# golang.org/x/mod/sumdb/note reference vector (note_test.go / package docs)
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"


def test_signed_notes_match_the_go_reference_byte_for_byte():
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    signer = Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))
    assert str(VerifierKey.parse(GO_VKEY)) == GO_VKEY
    assert sign_note(GO_TEXT, "PeterNeumann", signer) == GO_NOTE
    assert open_note(GO_NOTE, [VerifierKey.parse(GO_VKEY)]) == (GO_TEXT, ["PeterNeumann"])
    with pytest.raises(CheckpointError):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), [VerifierKey.parse(GO_VKEY)])


@pytest.fixture
def ledger(tmp_path):
    led = Ledger.open(tmp_path / "data", ORIGIN)
    yield led
    led.close()


@pytest.fixture
def kiosk(tmp_path, ledger):
    signer = kiosk_signer(tmp_path / "data", "kiosk-demo")
    ledger.enroll(signer.actor, signer.public_b64)
    return signer


def test_checkpoint_is_a_c2sp_tlog_checkpoint(ledger, kiosk):
    for i in range(5):
        ledger.append(make_statement(kiosk, "accessed", {"n": i}))
    note = ledger.checkpoint()
    lines = note.split("\n")
    assert lines[0] == ORIGIN and lines[1] == "6" and lines[3] == ""
    assert base64.b64decode(lines[2]) == ledger.root()
    assert lines[4].startswith("\u2014 " + ORIGIN + " ")
    assert verify_checkpoint(note, [ledger.verifier_key], ORIGIN).size == 6
    assert ledger.checkpoint() == note  # not re-signed while the tree has not grown


def test_append_is_idempotent_per_subject_and_refuses_a_different_claim(ledger, kiosk):
    body = {"subject": "s1/seg-000001", "plaintext_sha256": "aa"}
    first = ledger.append(make_statement(kiosk, "segment-sealed", body))
    again = ledger.append(make_statement(kiosk, "segment-sealed", body))
    assert again.existing and again.index == first.index and ledger.size() == 2
    with pytest.raises(LedgerConflict, match="already holds a different"):
        ledger.append(make_statement(kiosk, "segment-sealed", {**body, "plaintext_sha256": "bb"}))
    assert ledger.find("segment-sealed:s1/seg-000001").index == first.index
    assert ledger.size() == 2


def test_only_enrolled_keys_with_valid_signatures_may_append(tmp_path, ledger, kiosk):
    stranger = Signer("kiosk:stranger", Ed25519PrivateKey.generate())
    with pytest.raises(LedgerConflict, match="not enrolled"):
        ledger.append(make_statement(stranger, "segment-sealed", {"subject": "x"}))
    # an enrolment signed by anyone but the ledger does not count
    with pytest.raises(LedgerConflict, match="not enrolled"):
        ledger.append(make_statement(stranger, "key-enrolled", {"subject": "y", "actor": stranger.actor,
                                                                 "key": stranger.public_b64}))
    forged = make_statement(kiosk, "accessed", {"by": "clerk"})
    forged["body"]["by"] = "someone else"
    with pytest.raises(LedgerConflict, match="does not verify"):
        ledger.append(forged)
    assert ledger.size() == 1  # only the kiosk's enrolment


def test_proofs_match_an_independent_tree_and_verify(ledger, kiosk):
    stmts = [make_statement(kiosk, "accessed", {"n": i}) for i in range(300)]
    ledger.append_many(stmts[:150])
    first = parse_checkpoint(ledger.checkpoint())
    for s in stmts[150:]:
        ledger.append(s)
    second = parse_checkpoint(ledger.checkpoint())
    leaves = [ledger.entry(i).leaf_hash for i in range(ledger.size())]
    tree = merkle.MemoryTree(leaves)
    assert tree.root() == second.root
    for i in random.Random(1).sample(range(second.size), 40):
        proof = ledger.inclusion_proof(i, second.size)
        assert proof == tree.inclusion_proof(i)
        merkle.verify_inclusion(i, second.size, leaves[i], proof, second.root)
    merkle.verify_consistency(first.size, second.size, first.root, second.root,
                              ledger.consistency_proof(first.size, second.size))
    bundle = ledger.bundle(7)
    assert verify_bundle(bundle, [ledger.verifier_key]).index == 7
    bundle["leaf_index"] = 8
    with pytest.raises(BundleError, match="inclusion"):
        verify_bundle(bundle, [ledger.verifier_key])


def test_two_writers_on_one_file_keep_one_consistent_tree(tmp_path, ledger, kiosk):
    other = Ledger.open(tmp_path / "data", ORIGIN)
    for i in range(30):
        (ledger if i % 3 else other).append(make_statement(kiosk, "accessed", {"n": i}))
        if i % 7 == 0:
            (other if i % 2 else ledger).checkpoint()
    other.close()
    reopened = Ledger.open(tmp_path / "data", ORIGIN)
    reopened.append(make_statement(kiosk, "accessed", {"n": "after reopen"}))
    reopened.checkpoint()
    checks = verify_ledger(reopened.path, [reopened.verifier_key], ORIGIN)
    reopened.close()
    assert all_ok(checks), failures(checks)


@pytest.fixture(scope="module")
def base_ledger(tmp_path_factory):
    """A closed ledger file with entries and several checkpoints, copied afresh for every tamper trial."""
    data = tmp_path_factory.mktemp("ledger") / "data"
    with Ledger.open(data, ORIGIN) as led:
        signer = kiosk_signer(data, "kiosk-demo")
        led.enroll(signer.actor, signer.public_b64)
        for i in range(40):
            led.append(make_statement(signer, "segment-sealed", {"subject": f"s/{i}", "n": i}))
            if i % 9 == 0:
                led.checkpoint()
        led.checkpoint()
        vkey = led.verifier_key
        path = led.path
    return path, vkey


def _flip(db_path, table: str, column: str, rng: random.Random) -> str:
    db = sqlite3.connect(db_path)
    key_cols = {"entries": "idx", "nodes": "level, idx", "checkpoints": "size"}[table]
    rows = db.execute(f"SELECT {key_cols}, CAST({column} AS BLOB) FROM {table} WHERE {column} IS NOT NULL").fetchall()
    *key, value = rng.choice(rows)
    data = bytearray(value)
    pos = rng.randrange(len(data))
    data[pos] ^= rng.randrange(1, 256)
    where = " AND ".join(f"{k.strip()}=?" for k in key_cols.split(","))
    db.execute(f"UPDATE {table} SET {column}=? WHERE {where}", (bytes(data), *key))
    db.commit()
    db.close()
    return f"{table}.{column} {key} byte {pos}"


def test_ledger_verify_passes_on_an_untouched_ledger(base_ledger):
    path, vkey = base_ledger
    checks = verify_ledger(path, [vkey], ORIGIN)
    assert all_ok(checks), failures(checks)
    assert sum(c.item.startswith("checkpoint ") for c in checks) == 6


@pytest.mark.parametrize("table,column,names", [
    ("entries", "leaf", "ledger entry {key}"),
    ("entries", "dedupe", "ledger entry {key}"),
    ("nodes", "hash", "tree nodes"),
    ("checkpoints", "note", "checkpoint {key}"),
])
def test_tamper_campaign_on_ledger_rows_is_always_caught_and_named(tmp_path, base_ledger, table, column, names):
    path, vkey = base_ledger
    rng = random.Random(f"{table}.{column}")
    for trial in range(25):
        copy = tmp_path / f"t{trial}.sqlite"
        shutil.copy(path, copy)
        what = _flip(copy, table, column, rng)
        key = what.split("[")[1].split("]")[0].split(",")[0]
        checks = verify_ledger(copy, [vkey], ORIGIN)
        failed = [c.item for c in checks if not c.ok]
        assert failed, f"tampering went unnoticed: {what}"
        assert names.format(key=key) in failed, f"{what}: failing items {failed}"
        copy.unlink()


def test_kiosk_ledger_verify_cli_exit_codes(tmp_path, capsys):
    data = tmp_path / "data"
    with Ledger.open(data, ORIGIN) as led:
        signer = kiosk_signer(data, "kiosk-demo")
        led.enroll(signer.actor, signer.public_b64)
        led.append(make_statement(signer, "accessed", {"n": 1}))
        led.checkpoint()
        path = led.path
    assert kiosk_main(["ledger", "verify", "--data-dir", str(data)]) == 0
    _flip(path, "entries", "leaf", random.Random(3))
    assert kiosk_main(["ledger", "verify", "--data-dir", str(data), "--json"]) == 1
    out = capsys.readouterr().out
    assert '"ok": false' in out and "ledger entry" in out
