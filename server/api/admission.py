"""Admission control for ``POST /v1/sessions``: each session holds ~1.8 MB of keys, so creating one is
the expensive, abusable call.

Three layers, each configurable (``server.api.config.Settings``):

1. **Per-client rate limit** (``RateLimiter``): a token bucket per client address,
   ``session_create_burst`` sessions at once, refilled at ``session_create_per_minute``. Over it: 429 +
   Retry-After. Behind a reverse proxy the address is the one the proxy forwards (uvicorn's proxy headers,
   ``FORWARDED_ALLOW_IPS``); limits are per API replica.
2. **Optional app credential** (``app_key``): when set, creating a session needs ``X-App-Key``; the
   other session calls need only the session's own bearer token.
3. **Store policy** (``make_room``): a session never used for a prediction expires after
   ``unused_session_ttl_seconds`` (default 15 min, vs 7 days for a used one); when the store is full,
   sessions idle for at least ``evict_idle_after_seconds`` are evicted, never-used ones first, then least
   recently used. Only when none qualifies is a new device refused (503 + Retry-After), so a flood of
   unused sessions cannot lock out new devices for days.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from server.api.config import Settings
from server.api.store import SessionStore

__all__ = ["RateLimiter", "app_key_matches", "make_room"]


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets per client key: ``burst`` at once, ``per_minute`` sustained.

    At most ``max_clients`` buckets are kept (least recently seen dropped first: a dropped client starts
    with a full bucket, which errs on the side of admitting).
    """

    def __init__(self, per_minute: float, burst: int, max_clients: int = 100_000) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError(f"need per_minute > 0 and burst >= 1, got {per_minute} and {burst}")
        self.rate, self.burst, self.max_clients = per_minute / 60.0, float(burst), max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def acquire(self, client: str, now: float | None = None) -> float:
        """Take one token for ``client``: 0.0 if admitted, else the seconds until a token is back."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.pop(client, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        self._buckets[client] = bucket
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


def retry_after_header(seconds: float) -> str:
    """An HTTP Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def app_key_matches(settings: Settings, given: str | None) -> bool:
    """True if no app key is configured, or ``given`` is it (constant-time comparison)."""
    if settings.app_key is None:
        return True
    expected = settings.app_key.get_secret_value().encode()
    return given is not None and hmac.compare_digest(given.encode(), expected)


def make_room(store: SessionStore, settings: Settings) -> bool:
    """Apply the store policy; True if a new session fits (blocking: run it off the event loop)."""
    store.purge_idle(settings.session_idle_ttl_seconds)
    store.purge_never_used(settings.unused_session_ttl_seconds)
    excess = store.count() - settings.max_sessions + 1
    if excess > 0:
        store.evict_least_recently_used(excess, idle_seconds=settings.evict_idle_after_seconds)
    return store.count() < settings.max_sessions
