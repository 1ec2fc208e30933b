"""The public API: every exported name exists, is exported once, sorted, and documented."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = ["rawsse", "rawsse.chat", "rawsse.lab"]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted_unique_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    names = list(module.__all__)
    assert len(names) == len(set(names)), "a name is exported twice"

    # isort style, as ruff's RUF022 sorts: CONSTANTS, then Classes, then functions.
    def style(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert names == sorted(names, key=style), "__all__ is not sorted"
    for name in names:
        assert hasattr(module, name), f"{package}.{name} is in __all__ but missing"


@pytest.mark.parametrize("package", PACKAGES)
def test_public_classes_and_functions_have_docstrings(package: str) -> None:
    module = importlib.import_module(package)
    missing = []
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            if not inspect.getdoc(value):
                missing.append(name)
            if inspect.isclass(value):
                for attr, member in vars(value).items():
                    if attr.startswith("_") or not callable(member):
                        continue
                    if not inspect.getdoc(member):
                        missing.append(f"{name}.{attr}")
    assert not missing, f"undocumented public names: {missing}"


def test_init_only_reexports() -> None:
    import rawsse

    source = inspect.getsource(rawsse)
    for line in source.splitlines():
        stripped = line.strip()
        assert not stripped.startswith(("def ", "class ", "async def ")), line
