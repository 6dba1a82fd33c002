"""The package layering, checked by parsing every module's imports (no module is executed).

Data flows one way::

    models, federation  <-  keyboard_sim  <-  hushtype (the CLI and the simulation runner)
    models, federation  <-  server        <-  hushtype
    ckks    <-  keyboard_sim, server, hushtype

``models`` (what is learned) and ``ckks`` (the shared CKKS package) import no other project package;
the device package ``keyboard_sim`` and the aggregator ``server`` never reach into each other (the config
they share lives in ``federation``, the runner that joins them in ``hushtype``); no library package
imports the CLI package ``hushtype``. Imports inside
functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "federation", "keyboard_sim", "server", "ckks", "hushtype")

FORBIDDEN: dict[str, set[str]] = {
    "models": {"keyboard_sim", "server", "ckks", "hushtype"},
    "keyboard_sim": {"server", "hushtype"},
    "ckks": {"models", "keyboard_sim", "server", "hushtype"},
    "server": {"keyboard_sim", "hushtype"},
    "federation": {"models", "keyboard_sim", "server", "ckks", "hushtype"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) for every absolute import in ``path``, lazy ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
        elif (  # __import__("pkg.mod") and importlib.import_module("pkg.mod") with a literal name
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            found.add((node.args[0].value.split(".")[0], node.lineno))
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_every_package_is_scanned() -> None:
    for package in PACKAGES:
        assert _modules(package), f"no modules found under {ROOT / package}"


def test_imported_packages_sees_lazy_and_dynamic_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import os.path\nfrom server.simulation import x\n"
        "def f():\n    from keyboard_sim import y\n    __import__('ckks.codec')\n"
        "    import importlib\n    importlib.import_module('models.nplm')\nfrom . import z\n",
        encoding="utf-8",
    )
    names = {name for name, _ in imported_packages(module)}
    assert names == {"os", "server", "keyboard_sim", "ckks", "importlib", "models"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layering(package: str) -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _modules(package)
        for name, line in sorted(imported_packages(path))
        if name in FORBIDDEN[package]
    ]
    forbidden = sorted(FORBIDDEN[package])
    assert not violations, f"{package} must not import {forbidden}:\n" + "\n".join(violations)
