"""Option types the subcommands share: argparse ``type=`` callables that check ranges.

Contract: ``port(text)`` is 0 to 65535; ``number(kind, minimum, above=False)`` makes a type for
an ``int`` or ``float`` at least ``minimum`` (or above it), finite. A bad value raises
``argparse.ArgumentTypeError`` with a message that fits the one-line usage error
(``rawsse serve: argument --port: a port is 0 to 65535 (0 = a free one), got 70000``).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["number", "port"]


def port(text: str) -> int:
    """A TCP port number, 0 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0 = a free one), got {value}")
    return value


def number(kind: type[int] | type[float], minimum: float, above: bool = False) -> Any:
    """An argparse type: a ``kind`` at least ``minimum`` (or above it, when ``above``)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
        if value < minimum or (above and value == minimum):
            bound = f"above {minimum:g}" if above else f"at least {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__  # what argparse names in "invalid int value"
    return parse
