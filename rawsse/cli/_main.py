"""The ``rawsse`` command line: ``serve``, ``bench`` and ``trace``.

Contract: this module only builds the argument parser and dispatches. Each subcommand lives in
its own module exposing ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status), and
is imported lazily so ``rawsse serve`` never pays for the load generator's imports.

What every subcommand gets from here: a usage error is one line on stderr and exit status 2
(argparse would print the whole usage first), and so is a ``CommandError`` a subcommand raises
(with its own status); every option's help shows its default; and when
stdout or stderr is a pipe whose reader left (``rawsse trace URL | head``), the command stops
quietly with status 141 (128 + SIGPIPE, what ``cat`` or ``yes`` report there), never a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from rawsse._version import __version__
from rawsse.cli._errors import CommandError

__all__ = ["CommandParser", "main"]

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
# The exit status of a command whose output pipe was closed by its reader: 128 + SIGPIPE.
BROKEN_PIPE_STATUS = 141


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default in ([], "")
            or default is argparse.SUPPRESS
            or action.nargs == 0  # a flag: its default is "off"
        ):
            return text
        return f"{text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``rawsse serve: <what is wrong>``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # The subcommands' parsers, by name (only on the top-level parser).
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem (and where help is) and exit with status 2."""
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser(command: str | None = None) -> CommandParser:
    """Return the top-level parser; only ``command``'s module is imported for its options."""
    parser = CommandParser(
        prog="rawsse",
        description="rawsse: a low-level Server-Sent Events server, load generator and inspector.",
    )
    parser.add_argument("--version", action="version", version=f"rawsse {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.commands[name] = sub
        if name == command:
            importlib.import_module(module_name).add_arguments(sub)
        sub.set_defaults(_module=module_name)
    return parser


def _is_broken_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``BrokenPipeError``, or a group of nothing else (a task group's)."""
    if isinstance(exc, BrokenPipeError):
        return True
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
    return bool(inner) and all(_is_broken_pipe(e) for e in inner)


def _silence_stdio() -> None:
    """Point stdout and stderr at /dev/null: the interpreter's final flush must not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a stream without a descriptor
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


# The shell's status for a command ended by SIGINT (128 + 2).
INTERRUPTED_STATUS = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in arguments if not arg.startswith("-")), None)
    try:
        try:
            parser = build_parser(command)
            args, unknown = parser.parse_known_args(arguments)
            if unknown:  # said by the subcommand, which they were given to
                parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
            module = importlib.import_module(args._module)
            try:
                status: int = module.run(args)
            except CommandError as exc:
                print(f"rawsse {args.command}: {exc}", file=sys.stderr, flush=True)
                return exc.status
            except KeyboardInterrupt:
                # Ctrl-C before a command's own handling took over (bench starting its
                # server, say): quiet, with the shell's status for SIGINT, like other tools.
                print(f"rawsse {args.command}: interrupted", file=sys.stderr, flush=True)
                return INTERRUPTED_STATUS
        finally:
            sys.stdout.flush()  # here, not at exit, where a broken pipe could not be caught
    except BaseException as exc:
        if not _is_broken_pipe(exc):
            raise
        _silence_stdio()
        return BROKEN_PIPE_STATUS
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
