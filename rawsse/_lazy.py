"""Lazy re-exports for package ``__init__`` modules (PEP 562 module ``__getattr__``).

Contract: ``lazy_exports(package, {module: names})`` returns the ``__getattr__`` and ``__dir__``
a package assigns, so ``import rawsse`` imports nothing else and ``rawsse.App`` imports only
``rawsse.app`` (and what it needs) on first use; the value is then cached in the package's
namespace, so later lookups are plain attribute reads. Packages also import the same names
under ``TYPE_CHECKING`` for type checkers; a test checks the two lists agree.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package``, resolving each name from its module."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(module_of))

    return __getattr__, __dir__
