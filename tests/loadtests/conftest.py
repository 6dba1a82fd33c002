"""A small release on disk and the helpers of ``loadtests/run_load.py`` for real-server tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from models.nplm import NPLM, export_weights
from models.release import save_release
from models.vocab import Vocabulary
from tests.server.api.conftest import SMALL, WORDS

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
    """V=64, k*d=32, H=32, logits spread like a trained model's (same recipe as the API tests' release)."""
    out = tmp_path_factory.mktemp("http-release")
    torch.manual_seed(0)
    weights = export_weights(NPLM(SMALL))
    rng = np.random.default_rng(0)
    weights["embedding"] = rng.normal(0, 0.5, weights["embedding"].shape).astype(np.float32)
    weights["w1"] = rng.normal(0, 0.6 / np.sqrt(32), weights["w1"].shape).astype(np.float32)
    weights["w2"] = rng.normal(0, 1.5 / np.sqrt(32), weights["w2"].shape).astype(np.float32)
    save_release(out, weights, SMALL, Vocabulary(WORDS), {"trained": "test fixture", "epsilon": None})
    return out
