"""A small release on disk and the helpers of ``loadtests/run_load.py`` for real-server tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import build_small_release

RUN_LOAD = Path(__file__).resolve().parents[2] / "loadtests" / "run_load.py"


@pytest.fixture(scope="session")
def run_load() -> ModuleType:
    """``loadtests/run_load.py`` as a module (``loadtests/`` is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("hushtype_run_load", RUN_LOAD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def http_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared small release (V=64, k*d=32, H=32), in its own directory for the real-server tests."""
    return build_small_release(tmp_path_factory.mktemp("http-release"))
