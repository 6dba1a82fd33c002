"""Session store: SQLite by default (embedded, survives restarts).

A session row holds only public material: the device's evaluation keys (public), its encrypted
personalization (ciphertext under the device's own key), a salted hash of its bearer token, and
bookkeeping. Nothing stored here lets the server read a query, a suggestion or an adapter.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SessionRecord", "SessionStore", "hash_token"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    model_version TEXT NOT NULL,
    eval_keys BLOB NOT NULL,
    personalization BLOB
)
"""


def hash_token(token: str, session_id: str) -> str:
    """sha256 of the token, salted with the session id (tokens are never stored)."""
    return hashlib.sha256(f"{session_id}:{token}".encode()).hexdigest()


@dataclass
class SessionRecord:
    """One session's public material."""

    id: str
    token_hash: str
    created: float
    last_used: float
    model_version: str
    eval_keys: bytes | None  # None when loaded without keys (``SessionStore.get(load_eval_keys=False)``)
    personalization: bytes | None

    def token_matches(self, token: str) -> bool:
        """Constant-time check of a bearer token against the stored hash."""
        return hmac.compare_digest(self.token_hash, hash_token(token, self.id))


class SessionStore:
    """SQLite-backed sessions; safe to share between the API's threads and worker processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)

    def create(self, eval_keys: bytes, model_version: str) -> tuple[str, str]:
        """Store a new session; returns (session id, bearer token). The token is shown only once."""
        session_id = uuid.uuid4().hex
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (session_id, hash_token(token, session_id), now, now, model_version, eval_keys),
            )
        return session_id, token

    def get(self, session_id: str, *, load_eval_keys: bool = True) -> SessionRecord | None:
        """The session, or None if unknown; ``load_eval_keys=False`` skips the MB-sized key blob
        (``eval_keys`` is then None), which is all an auth check needs."""
        keys_column = "eval_keys" if load_eval_keys else "NULL"
        with self._lock:
            row = self._conn.execute(
                f"SELECT id, token_hash, created, last_used, model_version, {keys_column}, personalization "
                "FROM sessions WHERE id = ?",
                (session_id,),
            ).fetchone()
        return SessionRecord(*row) if row else None

    def get_personalization(self, session_id: str) -> bytes | None:
        """Only the session's encrypted personalization (None if unset or the session is unknown)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT personalization FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        return row[0] if row else None

    def set_personalization(self, session_id: str, blob: bytes) -> None:
        """Replace the session's encrypted personalization."""
        with self._lock:
            self._conn.execute("UPDATE sessions SET personalization = ? WHERE id = ?", (blob, session_id))

    def touch(self, session_id: str) -> None:
        """Record a use of the session."""
        with self._lock:
            self._conn.execute("UPDATE sessions SET last_used = ? WHERE id = ?", (time.time(), session_id))

    def purge_idle(self, idle_seconds: float) -> int:
        """Delete sessions unused for more than ``idle_seconds``; returns how many."""
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM sessions WHERE last_used < ?", (time.time() - idle_seconds,)
            )
        return cur.rowcount

    def purge_never_used(self, unused_seconds: float) -> int:
        """Delete sessions never used for a prediction (``touch``) and older than ``unused_seconds``."""
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM sessions WHERE last_used <= created AND created < ?",
                (time.time() - unused_seconds,),
            )
        return cur.rowcount

    def evict_least_recently_used(self, n: int, *, idle_seconds: float) -> int:
        """Delete up to ``n`` sessions idle for at least ``idle_seconds``: never-used ones first, then the
        least recently used. Returns how many."""
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE last_used <= ? "
                "ORDER BY last_used > created, last_used LIMIT ?)",
                (time.time() - idle_seconds, max(0, n)),
            )
        return cur.rowcount

    def delete(self, session_id: str) -> bool:
        """Remove the session and everything it holds; False if it did not exist."""
        with self._lock:
            cur = self._conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return cur.rowcount > 0

    def count(self) -> int:
        """Number of live sessions."""
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()
