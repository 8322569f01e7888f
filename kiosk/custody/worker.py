"""A separate, lower-priority process for the hash+encrypt pass of sealing.

Why a process: pyrage and the hashing wrappers need the GIL for every few kilobytes, so sealing a large
segment in the kiosk process would make the capture and encode threads wait. This worker is spoken to
over stdin/stdout, one JSON request and one JSON reply per line; it exits when its parent goes away
(stdin closes), and it runs at a lower CPU priority so live capture always wins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from ..errors import SealError
from .seal import encrypt_and_hash

NICE = 10


class EncryptWorker:
    """Callable with the signature of `encrypt_and_hash`, run in the worker process (restarted if it dies)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "kiosk.custody.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, bufsize=1)

    def __call__(self, src, dst, recipients: list[str]) -> dict:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            request = json.dumps({"src": str(src), "dst": str(dst), "recipients": recipients})
            try:
                self._proc.stdin.write(request + "\n")
                self._proc.stdin.flush()
                line = self._proc.stdout.readline()
            except (BrokenPipeError, OSError) as exc:
                self._proc = None
                raise SealError(f"seal worker died: {exc}") from None
            if not line:
                self._proc = None
                raise SealError("seal worker exited while encrypting")
            reply = json.loads(line)
            if not reply.pop("ok"):
                raise SealError(f"seal worker: {reply['error']}")
            return reply

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.stdin.close()
                try:
                    self._proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            self._proc = None


def main() -> None:
    try:
        os.nice(NICE)
    except OSError:
        pass
    for line in sys.stdin:
        req = json.loads(line)
        try:
            reply = {"ok": True, **encrypt_and_hash(req["src"], req["dst"], req["recipients"])}
        except Exception as exc:  # reported to the sealer, which keeps the plaintext and retries later
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
