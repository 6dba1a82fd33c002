"""A small released model and a running API (real worker processes, real CKKS) for the API tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.api.config import Settings
from server.api.main import create_app

# small_release, SMALL and WORDS live in tests/conftest.py (shared with the load tests)


def make_settings(release: Path, db: Path, **overrides) -> Settings:
    """Settings for a test app: one worker, small limits where a test needs them.

    The fixture release is not DP-trained (``allow_non_private``), and every test client shares one
    address, so the per-client creation limit is lifted unless a test sets it.
    """
    defaults = {"workers": 1, "allow_non_private": True, "session_create_burst": 10_000}
    return Settings(release_dir=str(release), db_path=str(db), **{**defaults, **overrides})


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
