"""Settings of the prediction API: one typed object, read from env (``HUSHTYPE_*``) or ``.env``."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Where the release and the sessions live, size limits, and the HE worker pool."""

    model_config = SettingsConfigDict(env_prefix="HUSHTYPE_", env_file=".env", extra="ignore")

    release_dir: str = "runs/demo/central"  # the released model the API serves
    db_path: str = "runs/api/sessions.db"  # SQLite session store; survives restarts
    he_mode: str = "x"  # "x": device sends encrypted x (depth 3); "h": device sends encrypted W1 x + b1
    workers: int = 2  # HE worker processes (TenSEAL holds the GIL: processes, not threads)
    max_eval_key_bytes: int = 16 * 2**20  # a session's evaluation keys (relin + needed Galois keys)
    max_query_bytes: int = 512 * 2**10  # one encrypted context
    max_personalization_bytes: int = 2 * 2**20  # one encrypted adapter
