"""`kiosk keys ...`, `kiosk ledger ...`, `kiosk verify PATH` and `kiosk seal recover`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..config import load_settings
from ..errors import KioskError, clear_errors


def _settings(args):
    settings = load_settings(args.config)
    if getattr(args, "data_dir", None):
        settings.storage.data_dir = Path(args.data_dir)
    return settings




def register(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="kiosk signing key, court recipients, demo court identity")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    for name, fn, text in (("init", _keys_init, "create the kiosk and ledger signing keys (0600) if missing"),
                           ("show", _keys_show, "print public keys, ledger verifier key and court recipients"),
                           ("demo-court", _keys_demo, "create the labelled DEMO court identity beside the data dir")):
        p = ksub.add_parser(name, help=text)
        p.add_argument("--data-dir", help="kiosk data dir (default: storage.data_dir)")
        p.set_defaults(func=clear_errors(fn))

    ledger = sub.add_parser("ledger", help="custody ledger: serve, verify, checkpoint, enrol")
    lsub = ledger.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    p = lsub.add_parser("serve", help="run the ledger as an HTTP service for many rooms")
    p.add_argument("--data-dir", help="ledger data dir (default: storage.data_dir)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8490)
    p.set_defaults(func=clear_errors(_ledger_serve))
    p = lsub.add_parser("verify", help="recompute the whole tree; check every checkpoint and signature")
    p.add_argument("--data-dir", help="ledger data dir (default: storage.data_dir)")
    p.add_argument("--ledger-key", action="append", default=[], help="verifier key (or file) to trust; "
                   "default: this data dir's ledger key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=clear_errors(_ledger_verify))
    p = lsub.add_parser("checkpoint", help="sign (if the tree grew) and print the latest checkpoint")
    p.add_argument("--data-dir")
    p.set_defaults(func=clear_errors(_ledger_checkpoint))
    p = lsub.add_parser("show", help="origin, size and verifier key of the ledger")
    p.add_argument("--data-dir")
    p.set_defaults(func=clear_errors(_ledger_show))
    p = lsub.add_parser("enrol", help="let an actor's Ed25519 key append statements")
    p.add_argument("--data-dir")
    p.add_argument("--actor", required=True, help="e.g. kiosk:room-3")
    p.add_argument("--key", required=True, help="OpenSSH public key file or line (ssh-ed25519 ...)")
    p.add_argument("--role", default="kiosk")
    p.set_defaults(func=clear_errors(_ledger_enrol))

    p = sub.add_parser("verify", help="check a sealed session offline (hashes, order, signatures, proofs)")
    p.add_argument("path", help="session directory")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--kiosk-key", action="append", default=[], help="pin: kiosk OpenSSH public key (file or line)")
    p.add_argument("--ledger-key", action="append", default=[], help="pin: ledger verifier key (file or string)")
    p.add_argument("--local-keys", action="store_true", help="pin this kiosk's own keys from its data dir")
    p.add_argument("--data-dir")
    p.set_defaults(func=clear_errors(_verify))

    seal = sub.add_parser("seal", help="sealing maintenance")
    ssub = seal.add_subparsers(dest="seal_command", metavar="ACTION", required=True)
    p = ssub.add_parser("recover", help="finish half-done seals and manifests after a crash")
    p.add_argument("--data-dir")
    p.set_defaults(func=clear_errors(_seal_recover))


# ---------------------------------------------------------------- keys


def _keys_init(args) -> int:
    from .keys import kiosk_signer, ledger_signer

    s = _settings(args)
    k = kiosk_signer(s.storage.data_dir, s.custody.kiosk_id)
    ledger_signer(s.storage.data_dir, s.custody.ledger_origin)
    print(k.openssh_public())
    return 0


def _keys_show(args) -> int:
    from .checkpoint import vkey
    from .keys import kiosk_key_path, kiosk_signer, ledger_signer

    s = _settings(args)
    existed = kiosk_key_path(s.storage.data_dir).exists()
    k = kiosk_signer(s.storage.data_dir, s.custody.kiosk_id)
    led = ledger_signer(s.storage.data_dir, s.custody.ledger_origin)
    print(f"kiosk key:   {k.openssh_public()}{'' if existed else '  (created now)'}")
    print(f"ledger vkey: {vkey(s.custody.ledger_origin, led.public_raw)}")
    for r in s.custody.recipients:
        print(f"recipient:   {r.name} {r.recipient}")
    if not s.custody.recipients:
        print("recipients:  none configured (custody.recipients); `kiosk demo` uses the demo court")
    return 0


def _keys_demo(args) -> int:
    from .keys import demo_court_identity

    s = _settings(args)
    path, recipient = demo_court_identity(s.storage.data_dir)
    print(f"DEMO court identity (not for real cases): {path}")
    print(f"recipient: {recipient}")
    return 0


# ---------------------------------------------------------------- ledger


def _ledger_serve(args) -> int:
    from .ledger_service import serve

    s = _settings(args)
    serve(Path(s.storage.data_dir), s.custody.ledger_origin, args.host, args.port)
    return 0


def _open_local(s):
    from .ledger import Ledger

    return Ledger.open(Path(s.storage.data_dir), s.custody.ledger_origin)


def _ledger_verify(args) -> int:
    from .ledger import LEDGER_DIR, LEDGER_FILE
    from .verify import all_ok, parse_vkeys, verify_ledger

    s = _settings(args)
    db = Path(s.storage.data_dir) / LEDGER_DIR / LEDGER_FILE
    if not db.exists():
        raise KioskError(f"no ledger at {db}")
    if args.ledger_key:
        keys = parse_vkeys(args.ledger_key)
    else:
        from .checkpoint import VerifierKey, vkey
        from .keys import ledger_key_path, load_private_key, public_raw

        path = ledger_key_path(s.storage.data_dir)
        keys = [VerifierKey.parse(vkey(s.custody.ledger_origin, public_raw(load_private_key(path).public_key())))]
    checks = verify_ledger(db, keys, s.custody.ledger_origin, workers=os.cpu_count() or 1)
    return _report(checks, args.json, all_ok(checks))


def _ledger_checkpoint(args) -> int:
    with _open_local(_settings(args)) as ledger:
        sys.stdout.write(ledger.checkpoint())
    return 0


def _ledger_show(args) -> int:
    with _open_local(_settings(args)) as ledger:
        print(json.dumps({"origin": ledger.origin, "size": ledger.size(), "vkey": ledger.vkey,
                          "path": str(ledger.path)}, indent=2))
    return 0


def _ledger_enrol(args) -> int:
    from .keys import parse_openssh_public, public_raw

    p = Path(args.key)
    line = p.read_text() if p.exists() else args.key
    key = parse_openssh_public(line)
    import base64

    b64 = base64.b64encode(public_raw(key)).decode()
    with _open_local(_settings(args)) as ledger:
        entry = ledger.enroll(args.actor, b64, args.role)
    print(f"{args.actor} enrolled (ledger entry {entry.index}{', already' if entry.existing else ''})")
    return 0


# ---------------------------------------------------------------- verify and recover


def _verify(args) -> int:
    from .checkpoint import VerifierKey, vkey
    from .keys import kiosk_key_path, ledger_key_path, load_private_key, parse_openssh_public, public_raw
    from .verify import all_ok, parse_vkeys, verify_session

    path = Path(args.path)
    if not path.is_dir() or not any((path / name).is_file() for name in ("session.json", "manifest.json")):
        raise KioskError(f"{path} is not a session directory (no session.json or manifest.json)")
    kiosk_keys = ledger_keys = None
    if args.kiosk_key:
        kiosk_keys = []
        for item in args.kiosk_key:
            p = Path(item)
            kiosk_keys.append(public_raw(parse_openssh_public(p.read_text() if p.exists() else item)))
    if args.ledger_key:
        ledger_keys = parse_vkeys(args.ledger_key)
    if args.local_keys:
        s = _settings(args)
        kiosk_keys = (kiosk_keys or []) + [public_raw(load_private_key(kiosk_key_path(s.storage.data_dir)).public_key())]
        led = public_raw(load_private_key(ledger_key_path(s.storage.data_dir)).public_key())
        ledger_keys = (ledger_keys or []) + [VerifierKey.parse(vkey(s.custody.ledger_origin, led))]
    checks = verify_session(path, kiosk_keys=kiosk_keys, ledger_keys=ledger_keys)
    return _report(checks, args.json, all_ok(checks))


def _report(checks, as_json: bool, ok: bool) -> int:
    if as_json:
        print(json.dumps({"ok": ok, "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        for c in checks:
            mark = "ok  " if c.ok else "FAIL"
            print(f"{mark} {c.item}: {c.detail}")
        failed = [c.item for c in checks if not c.ok]
        print("verified" if ok else f"NOT verified: {len(failed)} failing item(s): {', '.join(failed)}")
    return 0 if ok else 1


def _seal_recover(args) -> int:
    from .sealer import Sealer

    s = _settings(args)
    sealer = Sealer(s, Path(s.storage.data_dir), isolate=False)
    try:
        reports = sealer.recover()
    finally:
        sealer.close()
    for r in reports:
        print(json.dumps({"session": r.session, "sealed": r.sealed, "already": r.already, "open": r.open,
                          "failed": r.failed}))
    return 1 if any(r.failed for r in reports) else 0
