"""The ``rawsse`` command line: ``serve``, ``bench`` and ``trace``.

Contract: this module only builds the argument parser and dispatches. Each subcommand lives in
its own module exposing ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status), and
is imported lazily so ``rawsse serve`` never pays for the load generator's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("rawsse.cli._serve", "serve an App (or the built-in demo app)"),
    "bench": (
        "rawsse.bench._command",
        "load generator: many concurrent SSE streams, latency percentiles",
    ),
    "trace": (
        "rawsse.trace._command",
        "wire inspector: every read, chunk and event of one request",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Return the top-level parser; only ``command``'s module is imported for its options."""
    parser = argparse.ArgumentParser(
        prog="rawsse",
        description="rawsse: a low-level Server-Sent Events server, load generator and inspector.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).add_arguments(sub)
        sub.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in arguments if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(arguments)
    module = importlib.import_module(args._module)
    status: int = module.run(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
