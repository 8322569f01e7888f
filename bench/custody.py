"""Custody benchmarks, printed as one JSON object.

- seal throughput: the sealer's one streaming pass (SHA-256 of plaintext, age X25519 encryption, SHA-256 of
  ciphertext, fsync) and a full `seal_segment` (plus ledger entry and seal record), against the stock
  tools on the same file: `sha256sum` + `age -r` (what the issue names), and the same work done by the
  tools (`sha256sum` plain, `age`, `sha256sum` ciphertext, `sync` ciphertext). Ratio = tools time / ours
  (target >= 0.8).
- ledger appends/s: batched (one durable commit per batch) and one durable commit per statement,
  signature verification by the ledger included; signing by the actor reported apart.
- proof generation: inclusion proof and full offline bundle, in a ledger of --entries leaves.
- full verify: `verify_ledger` (recompute the tree, compare every node, every signature, every
  checkpoint and the consistency between them) over --entries leaves.

    .venv/bin/python bench/custody.py [--size-mb 500] [--entries 100000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kiosk.custody.keys import demo_court_identity, kiosk_signer  # noqa: E402
from kiosk.custody.ledger import Ledger  # noqa: E402
from kiosk.custody.seal import encrypt_and_hash, seal_segment  # noqa: E402
from kiosk.custody.statement import make_statement  # noqa: E402
from kiosk.custody.verify import all_ok, verify_ledger  # noqa: E402
from kiosk.media import segments  # noqa: E402

ORIGIN = "testimony-kiosk/ledger"


def _write_random(path: Path, size: int) -> None:
    chunk = os.urandom(1 << 20)
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(left, len(chunk))
            fh.write(chunk[:n] if n < len(chunk) else os.urandom(n))
            left -= n
        fh.flush()
        os.fsync(fh.fileno())


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def bench_seal(work: Path, size_mb: int, repeats: int = 2) -> dict:
    data = work / "data"
    identity, recipient = demo_court_identity(data)
    plain = work / "plain.bin"
    size = size_mb * 2**20
    _write_random(plain, size)
    ours_out = work / "ours.age"
    tools_out = work / "tools.age"

    ours = min(_timed(lambda: encrypt_and_hash(plain, ours_out, [recipient])) for _ in range(repeats))
    tools_named = min(_timed(lambda: (_sh("sha256sum", str(plain)),
                                      _sh("age", "-r", recipient, "-o", str(tools_out), str(plain))))
                      for _ in range(repeats))
    tools_same_work = min(_timed(lambda: (_sh("sha256sum", str(plain)),
                                          _sh("age", "-r", recipient, "-o", str(tools_out), str(plain)),
                                          _sh("sha256sum", str(tools_out)), _sh("sync", str(tools_out))))
                          for _ in range(repeats))

    # a full seal_segment: streaming pass + ledger entry + seal record (the plaintext is held so it stays)
    session_dir = work / "session"
    segments.segments_dir(session_dir).mkdir(parents=True)
    (session_dir / "session.json").write_text(json.dumps({"id": "bench-session"}))
    media = segments.media_path(session_dir, 1)
    os.link(plain, media)
    segments.hold(media, "bench")
    seg = segments.SegmentIndex(index=1, file=media.name, start=0.0, end=600.0, closed=True)
    with Ledger.open(data, ORIGIN) as ledger:
        signer = kiosk_signer(data, "bench")
        ledger.enroll(signer.actor, signer.public_b64)
        full = _timed(lambda: seal_segment(session_dir, seg, [recipient], ledger, signer))
    for p in (ours_out, tools_out, plain, media):
        p.unlink(missing_ok=True)
    shutil.rmtree(session_dir)
    mb = size / 2**20
    return {
        "size_mb": size_mb,
        "seal_pass_s": round(ours, 3), "seal_pass_mb_s": round(mb / ours, 1),
        "seal_segment_s": round(full, 3), "seal_segment_mb_s": round(mb / full, 1),
        "sha256sum_plus_age_s": round(tools_named, 3), "sha256sum_plus_age_mb_s": round(mb / tools_named, 1),
        "tools_same_work_s": round(tools_same_work, 3),
        "ratio_vs_sha256sum_plus_age": round(tools_named / ours, 2),
        "ratio_vs_tools_same_work": round(tools_same_work / ours, 2),
        "target_ratio": 0.8,
    }


def bench_ledger(work: Path, entries: int) -> dict:
    data = work / "ledger-data"
    out: dict = {}
    with Ledger.open(data, ORIGIN) as ledger:
        signer = kiosk_signer(data, "bench")
        ledger.enroll(signer.actor, signer.public_b64)

        def statement(i: int) -> dict:
            return make_statement(signer, "segment-sealed", {
                "subject": f"bench-session-{i // 1000}/seg-{i % 1000:06d}", "session": f"bench-session-{i // 1000}",
                "index": i % 1000, "start": (i % 1000) * 10.0, "end": (i % 1000 + 1) * 10.0,
                "plaintext_sha256": f"{i:064x}", "plaintext_size": 12_500_000,
                "ciphertext_sha256": f"{i + 1:064x}", "ciphertext_size": 12_503_000,
                "file": f"sealed/seg-{i % 1000:06d}.mp4.age", "recipients": ["age1..."]})

        t = time.perf_counter()
        stmts = [statement(i) for i in range(entries)]
        sign_s = time.perf_counter() - t
        out["sign_statements_per_s"] = round(entries / sign_s)

        t = time.perf_counter()
        for start in range(0, entries, 1000):
            ledger.append_many(stmts[start:start + 1000])
            if (start // 1000) % 10 == 9:
                ledger.checkpoint()
        batch_s = time.perf_counter() - t
        ledger.checkpoint()
        out["appends_per_s_batched_1000"] = round(entries / batch_s)

        singles = [make_statement(signer, "accessed", {"n": i}) for i in range(500)]
        t = time.perf_counter()
        for s in singles:
            ledger.append(s)
        out["appends_per_s_one_commit_each"] = round(len(singles) / (time.perf_counter() - t))
        out["append_target_per_s"] = 5000
        note = ledger.checkpoint()
        size = ledger.size()

        rng = random.Random(1)
        picks = [rng.randrange(size) for _ in range(300)]
        t = time.perf_counter()
        for i in picks:
            ledger.inclusion_proof(i, size)
        out["inclusion_proof_ms"] = round((time.perf_counter() - t) / len(picks) * 1000, 3)
        t = time.perf_counter()
        for i in picks[:100]:
            ledger.bundle(i, note)
        out["proof_bundle_ms"] = round((time.perf_counter() - t) / 100 * 1000, 3)
        t = time.perf_counter()
        for _ in range(100):
            a = rng.randrange(1, size)
            ledger.consistency_proof(a, size)
        out["consistency_proof_ms"] = round((time.perf_counter() - t) / 100 * 1000, 3)
        out["ledger_entries"] = size
        out["ledger_file_mb"] = round(ledger.path.stat().st_size / 2**20, 1)
        key = ledger.verifier_key
        path = ledger.path

    t = time.perf_counter()
    checks = verify_ledger(path, [key], ORIGIN, workers=os.cpu_count() or 1)
    out["full_verify_s"] = round(time.perf_counter() - t, 2)
    out["full_verify_ok"] = all_ok(checks)
    out["full_verify_entries"] = size
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500, help="size of the segment file to seal (MiB)")
    parser.add_argument("--entries", type=int, default=100_000, help="ledger entries for append/proof/verify")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="custody-bench-", dir=args.dir))
    try:
        result = {"cpu_count": os.cpu_count(), "seal": bench_seal(work, args.size_mb),
                  "ledger": bench_ledger(work, args.entries)}
        lat = result["ledger"]
        result["summary"] = {
            "seal_ratio_vs_sha256sum_plus_age": result["seal"]["ratio_vs_sha256sum_plus_age"],
            "ledger_appends_per_s_batched": lat["appends_per_s_batched_1000"],
            # one fsync'd commit per statement: bounded by the disk's flush latency, not by the ledger
            "ledger_appends_per_s_one_commit_each": lat["appends_per_s_one_commit_each"],
            "inclusion_proof_ms": lat["inclusion_proof_ms"],
            "full_verify_s": lat["full_verify_s"],
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
