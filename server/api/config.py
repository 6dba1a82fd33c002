"""Settings of the prediction API: one typed object, read from env (``HUSHTYPE_*``) or ``.env``.

Precedence: a value passed to ``Settings(...)`` (``hushtype serve`` passes only the flags given on
its command line) > environment variable ``HUSHTYPE_<FIELD>`` > ``.env`` > the default here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "DEFAULT_RELEASE"]

DEFAULT_RELEASE = "runs/demo/federated/release"  # the DP (user-level) release `hushtype demo` writes

_STORE_SCHEMES = ("redis://", "rediss://", "unix://", "sqlite:///")


class Settings(BaseSettings):
    """Where the release and the sessions live, size limits, the HE worker pool, admission control."""

    model_config = SettingsConfigDict(env_prefix="HUSHTYPE_", env_file=".env", extra="ignore")

    release_dir: str = DEFAULT_RELEASE  # the released model the API serves
    # A release without a user-level DP guarantee (no finite user_epsilon in its card) is refused unless
    # this is set (`hushtype serve --allow-non-private`); /v1/model reports it either way.
    allow_non_private: bool = False
    db_path: str = "runs/api/sessions.db"  # SQLite session store; survives restarts
    # HUSHTYPE_STORE: where sessions live. "" (default): SQLite at db_path. redis://host:port/db (also
    # rediss://, unix://): one Redis shared by several API replicas behind a proxy (deploy/).
    store: str = ""
    # "h" (default): the device computes h with the public released encoder (any model kind) and sends
    # it encrypted (server depth 2: 39 ms, 123 KB queries, 1.8 MB keys); "x" (NPLM releases only): the
    # device sends encrypted embeddings and the server also computes W1 (depth 3: 68 ms, 160 KB queries,
    # 6.4 MB keys).
    he_mode: Literal["h", "x"] = "h"
    workers: int = Field(2, ge=1)  # HE worker processes (TenSEAL holds the GIL: processes, not threads)
    # A worker still busy after this long is killed and replaced (its request gets 503 + Retry-After).
    he_request_timeout_seconds: float = Field(30.0, gt=0)
    he_queue_timeout_seconds: float = Field(10.0, gt=0)  # wait for an idle worker at most this long, then 503
    max_eval_key_bytes: int = 16 * 2**20  # a session's evaluation keys (relin + needed Galois keys)
    max_query_bytes: int = 512 * 2**10  # one encrypted context
    max_personalization_bytes: int = 2 * 2**20  # one encrypted adapter
    # A session unused this long is deleted (its keys and adapter too); the device opens a new one.
    session_idle_ttl_seconds: float = 7 * 24 * 3600.0
    # A session never used for a prediction is deleted after this long (a flood of unused sessions
    # cannot hold the store for days).
    unused_session_ttl_seconds: float = 15 * 60.0
    # When the store is full, sessions idle at least this long may be evicted (never-used first, then
    # least recently used) to admit a new device.
    evict_idle_after_seconds: float = 10 * 60.0
    max_sessions: int = Field(2000, ge=1)  # ~1.8 MB of keys each: the store's disk use is bounded by this
    # Per client address: this many sessions at once, refilled at session_create_per_minute (429 above).
    session_create_burst: int = Field(5, ge=1)
    session_create_per_minute: float = Field(6.0, gt=0)
    # If set, POST /v1/sessions needs the header X-App-Key with this value (an app credential).
    app_key: SecretStr | None = None
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
