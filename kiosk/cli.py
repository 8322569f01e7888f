"""The `kiosk` command. Each capability registers its own subcommands (one module per concept).

A module listed in COMMAND_MODULES exposes `register(subparsers)`; each subcommand sets `func`, which gets
the parsed args and returns an exit code. Domain errors become one clear line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import KioskError

COMMAND_MODULES = [
    "kiosk.demo",
    "kiosk.media.recovery",
    "kiosk.web.serve",
    "kiosk.custody.cli",
    "transcripts.cli",
    "kiosk.clerk.cli",
    "kiosk.examination.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk", description="Testimony capture kiosk")
    parser.add_argument("--version", action="version", version=f"kiosk {__version__}")
    parser.add_argument("--config", help="kiosk settings file (default: config/kiosk.toml or $KIOSK_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # capability not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .logs import setup_logging

    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KioskError as exc:
        print(f"kiosk: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
