"""``python -m workbench``: a thin command-line view over the core library.

Each module in this package defines ``register(subparsers)``, adding its commands with
``set_defaults(func=run)`` where ``run(args, settings) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench", description="The RAG workbench.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: (m.name != "core", m.name)):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code. WorkbenchErrors print as one line (exit 1)."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        configure_logging(settings)
        logging.getLogger("workbench").addHandler(_stderr_warnings())
        return int(args.func(args, settings) or 0)
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # pydantic ValidationError for bad settings
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _stderr_warnings() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    return handler
