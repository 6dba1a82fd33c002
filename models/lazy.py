"""PEP 562 lazy package names: a package's public names, each imported from its module on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_getattr(package: str, home: dict[str, str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``package`` that imports ``name`` from ``home[name]``."""

    def __getattr__(name: str) -> object:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home[name]), name)

    return __getattr__
