"""A small released model and a running API (real worker processes, real CKKS) for the API tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from models.nplm import NPLM, ModelConfig, export_weights
from models.release import save_release
from models.vocab import BOS, UNK, Vocabulary
from server.api.config import Settings
from server.api.main import create_app

WORDS = [UNK, BOS] + [f"w{i}" for i in range(62)]
SMALL = ModelConfig(vocab_size=64, context=4, embed_dim=8, hidden=32, dropout=0.0)  # k*d = 32: powers of two


@pytest.fixture(scope="session")
def small_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release whose logits are spread like a trained model's (std ~1), so top-k is meaningful."""
    out = tmp_path_factory.mktemp("release")
    torch.manual_seed(0)
    model = NPLM(SMALL)
    weights = export_weights(model)
    rng = np.random.default_rng(0)
    weights["embedding"] = rng.normal(0, 0.5, weights["embedding"].shape).astype(np.float32)
    weights["w1"] = rng.normal(0, 0.6 / np.sqrt(32), weights["w1"].shape).astype(np.float32)
    weights["w2"] = rng.normal(0, 1.5 / np.sqrt(32), weights["w2"].shape).astype(np.float32)
    save_release(out, weights, SMALL, Vocabulary(WORDS), {"trained": "test fixture", "epsilon": None})
    return out


def make_settings(release: Path, db: Path, **overrides) -> Settings:
    """Settings for a test app: one worker, small limits where a test needs them."""
    return Settings(release_dir=str(release), db_path=str(db), workers=1, **overrides)


@pytest.fixture(scope="session")
def api_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session database shared by the module's app (and a restarted app)."""
    return tmp_path_factory.mktemp("db") / "sessions.db"


@pytest.fixture(scope="session")
def api(small_release: Path, api_db: Path) -> Iterator[TestClient]:
    """A running app (lifespan started: worker process up, circuit pre-encoded)."""
    app = create_app(make_settings(small_release, api_db))
    with TestClient(app) as client:
        yield client
