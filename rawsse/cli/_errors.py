"""The one error the command line's subcommands raise: a message for a person, and an exit status.

Contract: ``CommandError(status, message)``: ``rawsse.cli._main`` prints ``<prog>: <message>`` as
one line on stderr and exits with ``status``: 2 for a usage error (a bad option, an APP that is
not one), 1 for a runtime failure (a port in use, a missing optional package).
"""

from __future__ import annotations

__all__ = ["RUNTIME", "USAGE", "CommandError"]

USAGE = 2
RUNTIME = 1


class CommandError(Exception):
    """A reason the command cannot run, said in one line, with its exit status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
