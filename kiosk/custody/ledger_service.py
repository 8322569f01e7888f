"""The ledger as an HTTP service (`kiosk ledger serve`), so one court ledger can serve many rooms, and
`LedgerClient`, which gives a kiosk the same interface as the in-process `Ledger`.

Routes and who may use them (anything not listed is denied; bearer tokens come from files the server
creates 0600 on first start under DATA/ledger/):

    GET  /v1/vkey                    public    ledger origin and verifier key
    GET  /v1/checkpoint              public    latest signed checkpoint (signs one if the tree grew)
    GET  /v1/proof/inclusion         public    ?index=&size=  hashes only
    GET  /v1/proof/consistency       public    ?first=&second=
    GET  /v1/enrolled                public    ?actor=&key=  is this key enrolled?
    GET  /v1/entries/{index}         client    one statement (client or admin token)
    GET  /v1/lookup                  client    ?key=type:subject
    POST /v1/statements              client    append signed statements; the signing key must be enrolled
    POST /v1/enrol                   admin     enrol an actor's key (admin token)

The client checks what the server says: every checkpoint's signature against the pinned (or first
seen) ledger key, consistency of each new checkpoint with the last one it saw, and every inclusion
proof it turns into an offline bundle.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
from pathlib import Path

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from ..errors import KioskError, LedgerConflict
from . import merkle
from .canonical import EncodingError, b64d, b64e
from .checkpoint import Checkpoint, CheckpointError, VerifierKey, parse_checkpoint, verify_checkpoint
from .keys import write_secret_file
from .ledger import LEDGER_DIR, Entry, Ledger, make_bundle

log = logging.getLogger("kiosk.custody.ledger_service")

CLIENT_TOKENS = "client-tokens"
ADMIN_TOKENS = "admin-tokens"
MAX_BATCH = 10_000

ROUTE_ROLES = {
    ("GET", "/v1/vkey"): "public",
    ("GET", "/v1/checkpoint"): "public",
    ("GET", "/v1/proof/inclusion"): "public",
    ("GET", "/v1/proof/consistency"): "public",
    ("GET", "/v1/enrolled"): "public",
    ("GET", "/v1/entries/{index}"): "client",
    ("GET", "/v1/lookup"): "client",
    ("POST", "/v1/statements"): "client",
    ("POST", "/v1/enrol"): "admin",
}


def ensure_tokens(data_dir: Path) -> tuple[Path, Path]:
    """Create one client and one admin token on first start (0600 files); return their paths."""
    folder = Path(data_dir) / LEDGER_DIR
    paths = folder / CLIENT_TOKENS, folder / ADMIN_TOKENS
    for path in paths:
        if not path.exists():
            try:
                write_secret_file(path, (secrets.token_urlsafe(32) + "\n").encode())
            except FileExistsError:
                pass
    return paths


def _read_tokens(path: Path) -> list[str]:
    return [t.strip() for t in path.read_text().splitlines() if t.strip() and not t.startswith("#")]


def create_app(ledger: Ledger, client_tokens: list[str], admin_tokens: list[str]) -> FastAPI:
    app = FastAPI(title="testimony-kiosk ledger", docs_url=None, redoc_url=None, openapi_url=None)

    def bearer(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else ""

    def _match(token: str, tokens: list[str]) -> bool:
        return any(hmac.compare_digest(token.encode(), t.encode()) for t in tokens) if token else False

    def require(role: str):
        def check(request: Request) -> str:
            token = bearer(request)
            if role == "public":
                return "public"
            if _match(token, admin_tokens):
                return "admin"
            if role == "client" and _match(token, client_tokens):
                return "client"
            if not token:
                raise HTTPException(401, f"this route needs a {role} bearer token",
                                    headers={"WWW-Authenticate": "Bearer"})
            raise HTTPException(403, f"token does not grant the {role} role")
        return Depends(check)

    @app.exception_handler(KioskError)
    async def kiosk_error(_request: Request, exc: KioskError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    @app.exception_handler(merkle.ProofError)
    async def proof_error(_request: Request, exc: merkle.ProofError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/v1/vkey", dependencies=[require("public")])
    def get_vkey() -> dict:
        return {"origin": ledger.origin, "vkey": ledger.vkey}

    @app.get("/v1/checkpoint", dependencies=[require("public")])
    def get_checkpoint() -> dict:
        return {"checkpoint": ledger.checkpoint()}

    @app.get("/v1/proof/inclusion", dependencies=[require("public")])
    def get_inclusion(index: int, size: int) -> dict:
        return {"index": index, "size": size, "proof": [b64e(p) for p in ledger.inclusion_proof(index, size)]}

    @app.get("/v1/proof/consistency", dependencies=[require("public")])
    def get_consistency(first: int, second: int) -> dict:
        return {"first": first, "second": second,
                "proof": [b64e(p) for p in ledger.consistency_proof(first, second)]}

    @app.get("/v1/enrolled", dependencies=[require("public")])
    def get_enrolled(actor: str, key: str) -> dict:
        return {"enrolled": ledger.is_enrolled(actor, key)}

    @app.get("/v1/entries/{index}", dependencies=[require("client")])
    def get_entry(index: int) -> dict:
        try:
            return ledger.entry(index).to_json()
        except KeyError:
            raise HTTPException(404, f"no ledger entry {index}") from None

    @app.get("/v1/lookup", dependencies=[require("client")])
    def get_lookup(key: str) -> dict:
        entry = ledger.find(key)
        if entry is None:
            raise HTTPException(404, f"no entry for {key}")
        return entry.to_json()

    @app.post("/v1/statements", status_code=201, dependencies=[require("client")])
    def post_statements(payload: dict) -> dict:
        stmts = payload.get("statements")
        if not isinstance(stmts, list) or not stmts or len(stmts) > MAX_BATCH:
            raise HTTPException(400, f"body must be {{'statements': [1..{MAX_BATCH} signed statements]}}")
        if not all(isinstance(s, dict) for s in stmts):
            raise HTTPException(400, "each statement must be a JSON object")
        return {"entries": [e.to_json() for e in ledger.append_many(stmts)]}

    @app.post("/v1/enrol", status_code=201, dependencies=[require("admin")])
    def post_enrol(payload: dict) -> dict:
        actor, key, role = payload.get("actor"), payload.get("key"), payload.get("role", "kiosk")
        if not all(isinstance(v, str) and v for v in (actor, key, role)):
            raise HTTPException(400, "body must hold actor, key (base64 Ed25519) and role strings")
        try:
            b64d(key, "key", 32)
        except EncodingError as exc:
            raise HTTPException(400, str(exc)) from None
        return ledger.enroll(actor, key, role).to_json()

    app.state.route_roles = ROUTE_ROLES
    return app


def serve(data_dir: Path, origin: str, host: str = "127.0.0.1", port: int = 8490) -> None:
    import uvicorn

    client_path, admin_path = ensure_tokens(data_dir)
    ledger = Ledger.open(data_dir, origin)
    app = create_app(ledger, _read_tokens(client_path), _read_tokens(admin_path))
    print(f"ledger {origin} on http://{host}:{port}  vkey {ledger.vkey}")
    print(f"client token file: {client_path}  admin token file: {admin_path}")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        ledger.close()


# ---------------------------------------------------------------- client


class LedgerClient:
    """`LedgerAPI` over HTTP. Trusts nothing it cannot check: checkpoints are verified against the
    pinned (or first seen) ledger key and must stay consistent with every earlier one it saw."""

    def __init__(self, url: str, token: str | None = None, expect_vkey: str | None = None,
                 timeout: float = 15.0, transport: httpx.BaseTransport | None = None,
                 enrol_token: str | None = None) -> None:
        """`token`: the ledger's client token (append, look up). `enrol_token`: its admin token, sent only
        with an enrolment, so that every other request carries no more power than it needs."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._enrol_headers = {"authorization": f"Bearer {enrol_token}"} if enrol_token else None
        self.url = url
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)
        self._lock = threading.Lock()
        self._expect = expect_vkey
        self._vkey: str | None = None
        self._key: VerifierKey | None = None
        self._last: Checkpoint | None = None
        if expect_vkey:  # pinned: usable (and checkable) before the ledger is ever reached
            self._key = VerifierKey.parse(expect_vkey)
            self._vkey = expect_vkey

    def _identity(self) -> VerifierKey:
        """The ledger's key: the pinned one, checked against the server once; else the first one seen."""
        with self._lock:
            if self._key is not None and (self._expect is None or self._vkey_checked):
                return self._key
        info = self._get("/v1/vkey")
        with self._lock:
            if self._expect and info["vkey"] != self._expect:
                raise LedgerConflict(f"ledger at {self.url} has key {info['vkey']}, not the pinned {self._expect}")
            if self._key is None:
                self._vkey = info["vkey"]
                self._key = VerifierKey.parse(self._vkey)
            self._vkey_checked = True
            return self._key

    _vkey_checked = False

    @property
    def origin(self) -> str:
        return self._identity().name

    @property
    def vkey(self) -> str:
        self._identity()
        return self._vkey

    def close(self) -> None:
        self._http.close()

    def _check(self, r: httpx.Response) -> dict:
        if r.status_code == 404:
            raise KeyError(r.json().get("detail", "not found"))
        if r.status_code in (400, 409, 422):
            raise LedgerConflict(f"ledger refused: {r.json().get('detail', r.text)}")
        if r.status_code in (401, 403):
            raise LedgerConflict(f"ledger denied access: {r.json().get('detail', r.text)}")
        r.raise_for_status()
        return r.json()

    def _get(self, path: str, **params) -> dict:
        return self._check(self._http.get(path, params=params))

    def _post(self, path: str, body: dict, headers: dict | None = None) -> dict:
        return self._check(self._http.post(path, json=body, headers=headers))

    @staticmethod
    def _entry(data: dict) -> Entry:
        try:
            stmt = data["statement"]
            leaf_hash = b64d(data["leaf_hash"], "leaf hash", 32)
        except (KeyError, EncodingError) as exc:
            raise LedgerConflict(f"malformed entry from ledger: {exc}") from None
        from .statement import leaf_bytes

        if merkle.leaf_hash(leaf_bytes(stmt)) != leaf_hash:
            raise LedgerConflict("ledger sent an entry whose leaf hash does not match its statement")
        return Entry(int(data["index"]), stmt, leaf_hash, bool(data.get("existing")))

    # -- LedgerAPI
    def append(self, stmt: dict) -> Entry:
        return self.append_many([stmt])[0]

    def append_many(self, stmts: list[dict]) -> list[Entry]:
        return [self._entry(e) for e in self._post("/v1/statements", {"statements": stmts})["entries"]]

    def find(self, key: str) -> Entry | None:
        try:
            return self._entry(self._get("/v1/lookup", key=key))
        except KeyError:
            return None

    def entry(self, index: int) -> Entry:
        return self._entry(self._get(f"/v1/entries/{index}"))

    def size(self) -> int:
        return parse_checkpoint(self.checkpoint()).size

    def checkpoint(self) -> str:
        note = self._get("/v1/checkpoint")["checkpoint"]
        try:
            cp = verify_checkpoint(note, [self._identity()], self.origin)
        except CheckpointError as exc:
            raise LedgerConflict(f"ledger checkpoint does not verify: {exc}") from None
        with self._lock:
            last = self._last
            if last is not None and last.size > 0:
                if cp.size < last.size:
                    raise LedgerConflict(f"ledger shrank from {last.size} to {cp.size}")
                proof = self.consistency_proof(last.size, cp.size) if cp.size > last.size else []
                try:
                    merkle.verify_consistency(last.size, cp.size, last.root, cp.root, proof)
                except merkle.ProofError as exc:
                    raise LedgerConflict(f"ledger checkpoint {cp.size} is inconsistent with {last.size}: {exc}") from None
            self._last = cp
        return note

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        data = self._get("/v1/proof/inclusion", index=index, size=size)
        return [b64d(p, "proof node", 32) for p in data["proof"]]

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        data = self._get("/v1/proof/consistency", first=size1, second=size2)
        return [b64d(p, "proof node", 32) for p in data["proof"]]

    def bundle(self, index: int, checkpoint: str | None = None) -> dict:
        note = checkpoint or self.checkpoint()
        cp = verify_checkpoint(note, [self._identity()], self.origin)
        entry = self.entry(index)
        proof = self.inclusion_proof(index, cp.size)
        try:
            merkle.verify_inclusion(index, cp.size, entry.leaf_hash, proof, cp.root)
        except merkle.ProofError as exc:
            raise LedgerConflict(f"ledger's inclusion proof for entry {index} does not verify: {exc}") from None
        return make_bundle(entry, proof, note, cp.size, self.origin, self.vkey)

    def enroll(self, actor: str, public_b64: str, role: str = "kiosk") -> Entry:
        return self._entry(self._post("/v1/enrol", {"actor": actor, "key": public_b64, "role": role},
                                      headers=self._enrol_headers))

    def is_enrolled(self, actor: str, public_b64: str) -> bool:
        return bool(self._get("/v1/enrolled", actor=actor, key=public_b64)["enrolled"])

