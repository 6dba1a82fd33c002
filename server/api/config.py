"""Settings of the prediction API: one typed object, read from env (``HUSHTYPE_*``) or ``.env``."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

_STORE_SCHEMES = ("redis://", "rediss://", "unix://", "sqlite:///")


class Settings(BaseSettings):
    """Where the release and the sessions live, size limits, and the HE worker pool."""

    model_config = SettingsConfigDict(env_prefix="HUSHTYPE_", env_file=".env", extra="ignore")

    release_dir: str = "runs/demo/central"  # the released model the API serves
    db_path: str = "runs/api/sessions.db"  # SQLite session store; survives restarts
    # HUSHTYPE_STORE: where sessions live. "" (default): SQLite at db_path. redis://host:port/db (also
    # rediss://, unix://): one Redis shared by several API replicas behind a proxy (deploy/).
    store: str = ""
    # "h" (default): the device computes h = W1 x + b1 with the public released weights and sends it
    # encrypted (server depth 2: 39 ms, 123 KB queries, 1.8 MB keys); "x": the device sends encrypted
    # embeddings and the server also computes W1 (depth 3: 68 ms, 160 KB queries, 6.4 MB keys).
    he_mode: str = "h"
    workers: int = 2  # HE worker processes (TenSEAL holds the GIL: processes, not threads)
    max_eval_key_bytes: int = 16 * 2**20  # a session's evaluation keys (relin + needed Galois keys)
    max_query_bytes: int = 512 * 2**10  # one encrypted context
    max_personalization_bytes: int = 2 * 2**20  # one encrypted adapter
    # A session unused this long is deleted (its keys and adapter too); the device opens a new one.
    session_idle_ttl_seconds: float = 7 * 24 * 3600.0
    max_sessions: int = 2000  # ~1.8 MB of keys each: the store's disk use is bounded by this
    # Measuring only: POST /v1/baseline/predict serves the same model on PLAINTEXT features (the
    # load test's baseline). Off by default: a client using it hands its typed context to the server.
    plaintext_baseline: bool = False

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value and "://" in value and not value.startswith(_STORE_SCHEMES):
            raise ValueError("use redis://host:port/db, rediss://, unix://, sqlite:///path or a file path")
        return value

    def store_location(self) -> str:
        """The session store ``server.api.store.open_store`` opens: ``store``, else SQLite at ``db_path``."""
        return self.store or self.db_path
