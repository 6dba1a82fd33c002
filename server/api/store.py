"""Session stores: the contract every store keeps, the SQLite store (embedded default), ``open_store``.

A session holds only public material: the device's evaluation keys (public), its encrypted
personalization (ciphertext under the device's own key), a salted hash of its bearer token, and
bookkeeping. Nothing stored here lets the server read a query, a suggestion or an adapter.

A **user** (``UserRecord``) is durable (no idle expiry, outside the session cap): the public evaluation
keys of the user's key (uploaded once), the key's fingerprint, and the user's encrypted state: the
adapter statistics the devices' increments are added to, ``revision`` (how many increments were
added), and the adapter a device derived from the statistics of revision ``adapter_revision``.
Sessions may be bound to a user (``SessionRecord.user_id``); deleting the user deletes them too.
Both user writes are compare-and-set on ``revision`` (``replace_statistics``, ``set_adapter``), so
two devices adding increments at once lose nothing: the loser re-reads and adds again.

The contract (``tests/server/api/test_store_contract.py`` runs one suite against every store):

- **idle expiry**: a session not used (created or touched) for ``idle_ttl_seconds`` is gone: ``get``
  returns None, ``count`` leaves it out, ``touch``/``set_personalization`` do not bring it back.
  SQLite filters by ``last_used``; Redis lets a key TTL delete it (``server.api.store_redis``).
- **cap**: ``create`` raises ``StoreFull`` when ``max_sessions`` live sessions exist. Expired sessions
  are purged first; ``create`` itself never evicts a live session (the client gets a 503 and retries).
  The check and the insert are one atomic step, so replicas sharing a store cannot overshoot the cap.
- **admission policy** (``server.api.admission.make_room`` calls these before ``create``):
  ``purge_never_used`` deletes sessions never used for a prediction (never ``touch``-ed) older than a
  bound; ``evict_least_recently_used`` deletes up to n live sessions idle at least a bound, never-used
  ones first (oldest first), then the least recently used. Both count only live sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SessionRecord",
    "SessionStore",
    "UserRecord",
    "SQLiteSessionStore",
    "StoreFull",
    "hash_token",
    "new_credentials",
    "open_store",
    "describe_store",
]

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

_USER_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    created REAL NOT NULL,
    model_version TEXT NOT NULL,
    key_id BLOB NOT NULL,
    eval_keys BLOB NOT NULL,
    statistics BLOB,
    revision INTEGER NOT NULL DEFAULT 0,
    adapter BLOB,
    adapter_revision INTEGER NOT NULL DEFAULT 0
)
"""
_USER_COLUMNS = (
    "id, token_hash, created, model_version, key_id, {keys}, statistics, revision, adapter, adapter_revision"
)

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
SQLITE_SCHEME = "sqlite:///"


class StoreFull(RuntimeError):
    """``create`` refused: the store already holds ``max_sessions`` live sessions."""


def hash_token(token: str, session_id: str) -> str:
    """sha256 of the token, salted with the session id (tokens are never stored)."""
    return hashlib.sha256(f"{session_id}:{token}".encode()).hexdigest()


def new_credentials() -> tuple[str, str]:
    """A fresh (session id, bearer token)."""
    return uuid.uuid4().hex, secrets.token_urlsafe(32)


@dataclass
class SessionRecord:
    """One session's public material."""

    id: str
    token_hash: str
    created: float
    last_used: float
    model_version: str
    eval_keys: bytes | None  # None when loaded without keys (``get(load_eval_keys=False)``)
    personalization: bytes | None
    user_id: str | None = None  # the user the session is bound to (its adapter and keys are the user's)

    def token_matches(self, token: str) -> bool:
        """Constant-time check of a bearer token against the stored hash."""
        return hmac.compare_digest(self.token_hash, hash_token(token, self.id))


@dataclass
class UserRecord:
    """One user's public material and encrypted state (see the module docstring)."""

    id: str
    token_hash: str
    created: float
    model_version: str
    key_id: bytes
    eval_keys: bytes | None  # None when loaded without keys
    statistics: bytes | None  # encrypted sum of the increments (None before the first)
    revision: int  # increments added so far
    adapter: bytes | None  # encrypted adapter a device derived from the statistics
    adapter_revision: int  # the statistics revision the adapter was derived from


class SessionStore(ABC):
    """Where sessions live; see the module docstring for the contract every store keeps.

    Parameters
    ----------
    idle_ttl_seconds : float | None
        A session unused this long is gone (default: None, sessions never expire).
    max_sessions : int | None
        Live sessions ``create`` accepts before raising ``StoreFull`` (default: None, no cap).
    """

    def __init__(self, idle_ttl_seconds: float | None = None, max_sessions: int | None = None) -> None:
        if idle_ttl_seconds is not None and idle_ttl_seconds <= 0:
            raise ValueError(f"idle_ttl_seconds must be > 0, got {idle_ttl_seconds}")
        if max_sessions is not None and max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.idle_ttl_seconds = idle_ttl_seconds
        self.max_sessions = max_sessions

    def _cutoff(self, now: float) -> float:
        """Sessions last used before this instant have expired."""
        return now - self.idle_ttl_seconds if self.idle_ttl_seconds else -math.inf

    @abstractmethod
    def create(self, eval_keys: bytes, model_version: str, user_id: str | None = None) -> tuple[str, str]:
        """Store a new session (bound to ``user_id`` if given: then ``eval_keys`` may be empty, the
        user's are used); returns (session id, bearer token), the token shown only once.
        Raises ``StoreFull`` at the cap."""

    @abstractmethod
    def get(self, session_id: str, *, load_eval_keys: bool = True) -> SessionRecord | None:
        """The live session, or None; ``load_eval_keys=False`` skips the MB-sized key blob
        (``eval_keys`` is then None), which is all an auth check needs."""

    @abstractmethod
    def get_personalization(self, session_id: str) -> bytes | None:
        """Only the encrypted personalization (None if unset or the session is unknown)."""

    @abstractmethod
    def set_personalization(self, session_id: str, blob: bytes) -> None:
        """Replace the encrypted personalization of a live session (no-op otherwise)."""

    @abstractmethod
    def touch(self, session_id: str) -> None:
        """Record a use of a live session: its idle clock restarts (no-op otherwise)."""

    @abstractmethod
    def purge_idle(self, idle_seconds: float) -> int:
        """Delete sessions unused for more than ``idle_seconds``; returns how many."""

    @abstractmethod
    def purge_never_used(self, unused_seconds: float) -> int:
        """Delete live sessions never used for a prediction (``touch``) and older than ``unused_seconds``;
        returns how many."""

    @abstractmethod
    def evict_least_recently_used(self, n: int, *, idle_seconds: float) -> int:
        """Delete up to ``n`` live sessions idle for at least ``idle_seconds``: never-used ones first,
        then the least recently used. Returns how many."""

    @abstractmethod
    def delete(self, session_id: str) -> bool:
        """Remove the session and everything it holds; False if it did not exist."""

    @abstractmethod
    def count(self) -> int:
        """Number of live sessions."""

    # -- users -----------------------------------------------------------------------------------
    @abstractmethod
    def create_user(self, eval_keys: bytes, key_id: bytes, model_version: str) -> tuple[str, str]:
        """Store a new user; returns (user id, bearer token), the token shown only once."""

    @abstractmethod
    def get_user(self, user_id: str, *, load_eval_keys: bool = True) -> UserRecord | None:
        """The user, or None."""

    @abstractmethod
    def replace_statistics(self, user_id: str, blob: bytes, expected_revision: int) -> bool:
        """Store ``blob`` as the statistics and bump ``revision``, only if it is still
        ``expected_revision`` (compare-and-set); False otherwise (or if the user is gone)."""

    @abstractmethod
    def set_adapter(self, user_id: str, blob: bytes, revision: int) -> bool:
        """Store the adapter derived from statistics ``revision``, only if that is still the current
        revision; False otherwise."""

    @abstractmethod
    def delete_user(self, user_id: str) -> bool:
        """Remove the user, its encrypted state and every session bound to it; False if it did not exist."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""


class SQLiteSessionStore(SessionStore):
    """SQLite-backed sessions; safe to share between the API's threads and worker processes."""

    def __init__(
        self, path: str | Path, idle_ttl_seconds: float | None = None, max_sessions: int | None = None
    ) -> None:
        super().__init__(idle_ttl_seconds, max_sessions)
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)
        self._conn.execute(_USER_SCHEMA)
        columns = [row[1] for row in self._conn.execute("PRAGMA table_info(sessions)")]
        if "user_id" not in columns:  # a store written before users existed
            self._conn.execute("ALTER TABLE sessions ADD COLUMN user_id TEXT")

    def create(self, eval_keys: bytes, model_version: str, user_id: str | None = None) -> tuple[str, str]:
        session_id, token = new_credentials()
        now = time.time()
        with self._transaction():  # cap check + insert: one write transaction
            self._conn.execute("DELETE FROM sessions WHERE last_used < ?", (self._cutoff(now),))
            live = self._conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
            if self.max_sessions is not None and live >= self.max_sessions:
                raise StoreFull(f"the store holds its maximum of {self.max_sessions} sessions")
            self._conn.execute(
                "INSERT INTO sessions (id, token_hash, created, last_used, model_version, eval_keys, "
                "personalization, user_id) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                (session_id, hash_token(token, session_id), now, now, model_version, eval_keys, user_id),
            )
        return session_id, token

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction under the lock: committed if the block returns, rolled back if it raises."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def get(self, session_id: str, *, load_eval_keys: bool = True) -> SessionRecord | None:
        keys_column = "eval_keys" if load_eval_keys else "NULL"
        with self._lock:
            row = self._conn.execute(
                f"SELECT id, token_hash, created, last_used, model_version, {keys_column}, personalization, "
                "user_id FROM sessions WHERE id = ? AND last_used >= ?",
                (session_id, self._cutoff(time.time())),
            ).fetchone()
        return SessionRecord(*row) if row else None

    def get_personalization(self, session_id: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT personalization FROM sessions WHERE id = ? AND last_used >= ?",
                (session_id, self._cutoff(time.time())),
            ).fetchone()
        return row[0] if row else None

    def set_personalization(self, session_id: str, blob: bytes) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE sessions SET personalization = ? WHERE id = ? AND last_used >= ?",
                (blob, session_id, self._cutoff(time.time())),
            )

    def touch(self, session_id: str) -> None:
        now = time.time()
        with self._lock:
            self._conn.execute(
                "UPDATE sessions SET last_used = ? WHERE id = ? AND last_used >= ?",
                (now, session_id, self._cutoff(now)),
            )

    def purge_idle(self, idle_seconds: float) -> int:
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM sessions WHERE last_used < ?", (time.time() - idle_seconds,)
            )
        return cur.rowcount

    def purge_never_used(self, unused_seconds: float) -> int:
        now = time.time()
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM sessions WHERE last_used <= created AND created < ? AND last_used >= ?",
                (now - unused_seconds, self._cutoff(now)),
            )
        return cur.rowcount

    def evict_least_recently_used(self, n: int, *, idle_seconds: float) -> int:
        now = time.time()
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE last_used <= ? "
                "AND last_used >= ? ORDER BY last_used > created, last_used LIMIT ?)",
                (now - idle_seconds, self._cutoff(now), max(0, n)),
            )
        return cur.rowcount

    def delete(self, session_id: str) -> bool:
        with self._lock:
            cur = self._conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return cur.rowcount > 0

    def count(self) -> int:
        with self._lock:
            return self._conn.execute(
                "SELECT COUNT(*) FROM sessions WHERE last_used >= ?", (self._cutoff(time.time()),)
            ).fetchone()[0]

    def create_user(self, eval_keys: bytes, key_id: bytes, model_version: str) -> tuple[str, str]:
        user_id, token = new_credentials()
        with self._lock:
            self._conn.execute(
                "INSERT INTO users (id, token_hash, created, model_version, key_id, eval_keys) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, hash_token(token, user_id), time.time(), model_version, key_id, eval_keys),
            )
        return user_id, token

    def get_user(self, user_id: str, *, load_eval_keys: bool = True) -> UserRecord | None:
        columns = _USER_COLUMNS.format(keys="eval_keys" if load_eval_keys else "NULL")
        with self._lock:
            row = self._conn.execute(f"SELECT {columns} FROM users WHERE id = ?", (user_id,)).fetchone()
        return UserRecord(*row) if row else None

    def replace_statistics(self, user_id: str, blob: bytes, expected_revision: int) -> bool:
        with self._lock:
            cur = self._conn.execute(
                "UPDATE users SET statistics = ?, revision = revision + 1 WHERE id = ? AND revision = ?",
                (blob, user_id, expected_revision),
            )
        return cur.rowcount == 1

    def set_adapter(self, user_id: str, blob: bytes, revision: int) -> bool:
        with self._lock:
            cur = self._conn.execute(
                "UPDATE users SET adapter = ?, adapter_revision = ? WHERE id = ? AND revision = ?",
                (blob, revision, user_id, revision),
            )
        return cur.rowcount == 1

    def delete_user(self, user_id: str) -> bool:
        with self._transaction():
            self._conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
            cur = self._conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
        return cur.rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def describe_store(location: str) -> str:
    """``location`` for logs and errors, with any password in a Redis URL masked."""
    if location.startswith(REDIS_SCHEMES) and "@" in location:
        scheme, rest = location.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return location


def open_store(
    location: str, *, idle_ttl_seconds: float | None = None, max_sessions: int | None = None
) -> SessionStore:
    """The store at ``location``: ``redis://host:port/db`` (also ``rediss://``, ``unix://``) for
    replicas sharing sessions; ``sqlite:///path`` or a plain file path for the embedded default."""
    if location.startswith(REDIS_SCHEMES):
        from server.api.store_redis import RedisSessionStore

        return RedisSessionStore(location, idle_ttl_seconds=idle_ttl_seconds, max_sessions=max_sessions)
    if location.startswith(SQLITE_SCHEME):
        location = location[len(SQLITE_SCHEME) :]
    elif "://" in location:
        raise ValueError(
            f"session store {describe_store(location)!r}: use redis://host:port/db, sqlite:///path "
            "or a file path"
        )
    if not location:
        raise ValueError("session store: empty SQLite path")
    return SQLiteSessionStore(location, idle_ttl_seconds=idle_ttl_seconds, max_sessions=max_sessions)
