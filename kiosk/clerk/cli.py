"""`kiosk clerk ...`: the court side on the command line (list, show, verify, retrieve, export, delete,
add-clerk, serve). Acting commands name the clerk (--clerk) and check the clerk's password
($KIOSK_CLERK_PASSWORD, --password-file, or a prompt): the ledger statement is signed with that
clerk's own key."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from ..config import load_settings
from ..errors import KioskError, clear_errors

PASSWORD_ENV = "KIOSK_CLERK_PASSWORD"


def _court(args):
    from .court import Court

    settings = load_settings(args.config)
    if args.data_dir:
        settings.storage.data_dir = Path(args.data_dir)
    if getattr(args, "store", None):
        settings.clerk.store_dir = Path(args.store)
    return Court(settings, identity_file=Path(args.identity) if getattr(args, "identity", None) else None)




def _secret_from(file: str | None, env: str, prompt: str, required: bool = True):
    if file:
        return Path(file).read_text().rstrip("\n")
    if os.environ.get(env):
        return os.environ[env]
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    if required:
        raise KioskError(f"no {prompt.strip(': ').lower()} given (use the file option or ${env})")
    return None


def _signed_in(court, args):
    password = _secret_from(args.password_file, PASSWORD_ENV, f"Password of clerk {args.clerk}: ")
    if not court.accounts.verify(args.clerk, password):
        raise KioskError(f"clerk {args.clerk!r}: name or password not recognised")
    return court.clerk(args.clerk)


def _passphrase(args):
    from .identity import PASSPHRASE_ENV

    if args.passphrase_file:
        text = Path(args.passphrase_file).read_text().rstrip("\n")
        return text
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    if sys.stdin.isatty():
        return lambda: getpass.getpass("Passphrase of the court identity: ")
    return None


def register(sub: argparse._SubParsersAction) -> None:
    clerk = sub.add_parser("clerk", help="court side: find, verify, retrieve, export and delete sealed recordings")
    csub = clerk.add_subparsers(dest="clerk_command", metavar="ACTION", required=True)

    def common(p, identity: bool = False):
        p.add_argument("--data-dir", help="court data dir: ledger, clerk accounts, exports (default: storage.data_dir)")
        p.add_argument("--store", help="sealed store: folder of session folders (default: clerk.store_dir)")
        if identity:
            p.add_argument("--identity", help="court age identity file (default: clerk.identity_file)")
            p.add_argument("--passphrase-file", help="passphrase of a protected identity "
                           "(else $KIOSK_COURT_PASSPHRASE or a prompt)")

    def acting(p):
        p.add_argument("--clerk", required=True, help="clerk account name (signs the ledger statement)")
        p.add_argument("--password-file", help=f"clerk's password (else ${PASSWORD_ENV} or a prompt)")

    p = csub.add_parser("list", help="sealed sessions, newest first, with their state")
    common(p)
    p.add_argument("--case", default="", help="case reference: part of it or a pattern (CP-2027-*)")
    p.add_argument("--date", default="", help="recording date YYYY-MM-DD (or YYYY-MM)")
    p.add_argument("--from", dest="date_from", default="", help="recorded on or after YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", default="", help="recorded on or before YYYY-MM-DD")
    p.add_argument("--room", default="")
    p.add_argument("--state", default="", help="sealed | transcript-pending | exported | deleted-by-order")
    p.add_argument("--due", action="store_true", help="only sessions whose retention period has ended")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=clear_errors(_list))

    p = csub.add_parser("show", help="one session: facts, segments, clerk history, retention")
    common(p)
    p.add_argument("session")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=clear_errors(_show))

    p = csub.add_parser("verify", help="the full `kiosk verify` of a session against the court's keys")
    common(p)
    p.add_argument("session")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=clear_errors(_verify))

    p = csub.add_parser("retrieve", help="ledger the access, then decrypt into one MP4")
    common(p, identity=True)
    acting(p)
    p.add_argument("session")
    p.add_argument("--purpose", required=True, help="why the recording is needed (goes on the ledger)")
    p.add_argument("--order", required=True, help="court order or reference authorising it")
    p.add_argument("--out", help="MP4 to write (default: <exports>/retrieved/<session>-<n>.mp4)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=clear_errors(_retrieve))

    p = csub.add_parser("export", help="retrieve and package for a third party (directory and .zip)")
    common(p, identity=True)
    acting(p)
    p.add_argument("session")
    p.add_argument("--purpose", required=True)
    p.add_argument("--order", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=clear_errors(_export))

    p = csub.add_parser("delete", help="delete a session's recording by court order (ledgered forever)")
    common(p)
    acting(p)
    p.add_argument("session")
    p.add_argument("--order", required=True, help="reference of the court order")
    p.add_argument("--date", help="date of the order, YYYY-MM-DD (default: today)")
    p.add_argument("--note", default="")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=clear_errors(_delete))

    p = csub.add_parser("add-clerk", help="create a clerk account and enrol its signing key at the ledger")
    common(p)
    p.add_argument("name")
    p.add_argument("--password-file", help=f"read the password from a file (else ${PASSWORD_ENV} or a prompt)")
    p.add_argument("--replace", action="store_true", help="set a new password for an existing clerk")
    p.set_defaults(func=clear_errors(_add_clerk))

    p = csub.add_parser("serve", help="the clerk portal (court side web app)")
    common(p, identity=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8470)
    p.set_defaults(func=clear_errors(_serve))


# ---------------------------------------------------------------- commands


def _list(args) -> int:
    with _court(args) as court:
        found = court.search(case=args.case, date=args.date, date_from=args.date_from, date_to=args.date_to,
                             room=args.room, state=args.state)
        if args.due:
            found = [s for s in found if s.retention.get("due")]
        if args.json:
            print(json.dumps([s.as_dict() for s in found], indent=2))
            return 0
        if not found:
            print("no sealed sessions match")
            return 0
        print(f"{'SESSION':36} {'CASE':16} {'ROOM':10} {'DATE':10} {'SEGS':>4} {'MIN':>6}  STATE")
        for s in found:
            print(f"{s.id:36} {s.case_reference[:16]:16} {s.room[:10]:10} {s.date:10} {s.segments:>4} "
                  f"{s.duration_s / 60:6.1f}  {', '.join(x.replace('-', ' ') for x in s.states)}")
    return 0


def _show(args) -> int:
    from .store import read_manifest

    with _court(args) as court:
        s = court.summary(args.session)
        manifest = read_manifest(s.dir)
        history = court.history(args.session)
        if args.json:
            print(json.dumps({"session": s.as_dict(), "segments": manifest["segments"], "history": history,
                              "kiosk": manifest["kiosk"], "recipients": manifest.get("recipients"),
                              "ledger": manifest.get("ledger")}, indent=2))
            return 0
        print(f"session     {s.id}\ncase        {s.case_reference}\nroom        {s.room}\nrecorded    {s.created_wall}")
        print(f"interviewee {s.pseudonym} (pseudonym)\nlanguage    {s.language}\nstate       {', '.join(s.states)}")
        print(f"transcript  {s.transcript}\nretention   {s.retention.get('text')}")
        if s.deleted:
            print(f"deleted     by order {s.deleted['order']} on {s.deleted['date']} ({s.deleted['by']})")
        print(f"kiosk       {manifest['kiosk']['id']}\nsegments    {s.segments}, {s.duration_s:.1f} s")
        for seg in manifest["segments"]:
            print(f"  {seg['index']:>4}  {seg['start']:9.3f}-{seg['end']:9.3f} s  {seg['plaintext_size']:>10} bytes  "
                  f"{seg['ciphertext_sha256'][:16]}...")
        for h in history:
            what = h["purpose"] or h["package"] or ""
            print(f"  ledger {h['index']:>5}  {h['time']}  {h['type']:16} {h['actor']}  order {h['order']}  {what}")
    return 0


def _verify(args) -> int:
    from ..custody.verify import all_ok

    with _court(args) as court:
        checks = court.verify(args.session)
    ok = all_ok(checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        for c in checks:
            mark = "ok  " if c.ok else "FAIL"
            print(f"{mark} {c.item}: {c.detail}")
        print("verified" if ok else f"NOT verified: {sum(not c.ok for c in checks)} failing item(s)")
    return 0 if ok else 1


def _retrieve(args) -> int:
    from .retrieve import retrieve

    with _court(args) as court:
        signer = _signed_in(court, args)
        result = retrieve(court, signer, args.session, purpose=args.purpose, order=args.order,
                          out=Path(args.out) if args.out else None, passphrase=_passphrase(args))
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"access ledgered as entry {result.accessed_index} ({result.accessed_subject}) before decryption")
        print(f"{result.path}: {result.segments} segment(s), {result.duration_s:.1f} s, sha256 {result.sha256}")
    return 0


def _export(args) -> int:
    from .export import export_session

    with _court(args) as court:
        signer = _signed_in(court, args)
        result = export_session(court, signer, args.session, purpose=args.purpose, order=args.order,
                                passphrase=_passphrase(args))
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"access ledgered as entry {result.retrieval.accessed_index}; export as entry {result.exported_index}")
        print(f"package: {result.dir}\nzip:     {result.zip} (sha256 {result.zip_sha256})")
        for note in result.notes:
            print(f"note: {note}")
    return 0


def _delete(args) -> int:
    from .retention import delete_by_order

    with _court(args) as court:
        summary = court.summary(args.session)
        if not args.yes:
            if not sys.stdin.isatty():
                raise KioskError("deletion needs --yes when not run from a terminal")
            print(f"Delete the recording of {summary.id} (case {summary.case_reference}) by order {args.order}?")
            print("The ciphertexts, transcript and court copies go for good; the ledger keeps the deletion.")
            if input("Type the session id to confirm: ").strip() != summary.id:
                print("not confirmed; nothing deleted")
                return 1
        signer = _signed_in(court, args)
        result = delete_by_order(court, signer, args.session, order=args.order, date=args.date, note=args.note)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"deleted by order {result.order} on {result.date}: {len(result.removed)} file(s) removed; "
              f"ledger entries {result.entries[0]}..{result.entries[-1]}")
    return 0


def _add_clerk(args) -> int:
    from .court import Court

    settings = load_settings(args.config)
    if args.data_dir:
        settings.storage.data_dir = Path(args.data_dir)
    password = _secret_from(args.password_file, PASSWORD_ENV, f"New password for clerk {args.name}: ")
    with Court(settings) as court:
        signer = court.add_clerk(args.name, password, replace=args.replace)
    print(f"clerk {args.name} added; signing key {signer.openssh_public()} enrolled at the ledger")
    return 0


def _serve(args) -> int:
    from .portal import serve

    court = _court(args)
    try:
        serve(court, args.host, args.port)
    finally:
        court.close()
    return 0
