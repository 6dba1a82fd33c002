"""Redis session store: API replicas share sessions; idle expiry is a Redis key TTL.

Layout, under a key prefix (default ``hushtype``):

- ``{prefix}:session:{id}``: a hash with ``token_hash``, ``created``, ``last_used``, ``model_version``,
  ``eval_keys`` and ``personalization``; its TTL is the idle TTL, restarted by ``touch``.
- ``{prefix}:sessions``: a sorted set of live session ids scored by ``last_used``. It makes ``count``
  one ``ZCARD`` and the cap exact: ``create`` drops expired ids, checks the cap and writes the session
  in one Lua script, so replicas creating sessions at once cannot overshoot it. It also gives the least
  recently used sessions for ``evict_least_recently_used``.
- ``{prefix}:unused``: a sorted set of the ids never used for a prediction, scored by ``created``
  (``create`` adds, the first ``touch`` removes): ``purge_never_used`` and the never-used-first order
  of ``evict_least_recently_used`` read it without scanning every session.

Users (durable, no TTL): ``{prefix}:user:{id}`` is a hash with ``token_hash``, ``created``,
``model_version``, ``key_id``, ``eval_keys``, ``statistics``, ``revision``, ``adapter`` and
``adapter_revision``; ``{prefix}:user:{id}:sessions`` is the set of the sessions bound to it (a bound
session's hash has ``user_id``). The compare-and-set writes and the user's deletion (with its sessions)
are scripts.

Writes that must not revive an expired or deleted session (``touch``, ``set_personalization``) are
scripts too: they check the hash exists in the same atomic step. Run Redis with
``maxmemory-policy noeviction`` (``deploy/redis.conf``): Redis' own eviction would drop sessions the
cap promised to keep. The scripts name keys they build from the prefix, so they need one Redis
instance (or Sentinel failover), not Redis Cluster.
"""

from __future__ import annotations

import time

import redis

from server.api.store import (
    SessionRecord,
    SessionStore,
    StoreFull,
    UserRecord,
    describe_store,
    hash_token,
    new_credentials,
)

__all__ = ["RedisSessionStore"]

# Shared head of the scripts below. KEYS[1] index, KEYS[2] never-used set; ARGV[1] cutoff ("" = no
# expiry), ARGV[2] prefix. ``drop`` deletes one session everywhere (1 if its hash existed); the head then
# deletes the sessions last used before the cutoff.
_PURGE_EXPIRED = """
local function drop(id)
  local existed = redis.call('DEL', ARGV[2] .. ':session:' .. id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  return existed
end
local removed = 0
if ARGV[1] ~= '' then
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
  for _, id in ipairs(ids) do drop(id) end
  removed = #ids
end
"""

# Returns how many sessions were purged.
_PURGE = _PURGE_EXPIRED + "return removed\n"

# KEYS[3] session, KEYS[4] the bound user's session set; ARGV[3..10]: max (0 = none), ttl_ms (0 = none),
# now, id, token_hash, model_version, eval_keys, user id ("" = none). Returns 0 at the cap, 1 once stored.
_CREATE = (
    _PURGE_EXPIRED
    + """
if tonumber(ARGV[3]) > 0 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[3], 'token_hash', ARGV[7], 'created', ARGV[5], 'last_used', ARGV[5],
           'model_version', ARGV[8], 'eval_keys', ARGV[9])
if ARGV[10] ~= '' then
  redis.call('HSET', KEYS[3], 'user_id', ARGV[10])
  redis.call('SADD', KEYS[4], ARGV[6])
end
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
return 1
"""
)

# ARGV[3]: created before this (exclusive). Live never-used sessions that old; returns how many.
_PURGE_NEVER_USED = (
    _PURGE_EXPIRED
    + """
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])) do n = n + drop(id) end
return n
"""
)

# ARGV[3]: last used at or before this; ARGV[4]: at most this many. Never-used first (oldest first),
# then the least recently used; returns how many.
_EVICT = (
    _PURGE_EXPIRED
    + """
local limit, n = tonumber(ARGV[4]), 0
for _, set in ipairs({KEYS[2], KEYS[1]}) do
  if n >= limit then break end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', ARGV[3], 'LIMIT', 0, limit - n)) do
    n = n + drop(id)
  end
end
return n
"""
)

# KEYS[1] index, KEYS[2] never-used set, KEYS[3] session; ARGV: now, ttl_ms (0 = none), id. Only an
# existing session; it is no longer never-used.
_TOUCH = """
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
redis.call('HSET', KEYS[3], 'last_used', ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""

# KEYS[1] session; ARGV[1] blob. Only an existing session; keeps its TTL.
_SET_PERSONALIZATION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'personalization', ARGV[1])
return 1
"""

# KEYS[1] user; ARGV[1] blob, ARGV[2] expected revision. Compare-and-set; returns 1 if stored.
_REPLACE_STATISTICS = """
local rev = redis.call('HGET', KEYS[1], 'revision')
if not rev or rev ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'statistics', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'revision', 1)
return 1
"""

# KEYS[1] user; ARGV[1] blob, ARGV[2] the statistics revision it was derived from (must be current).
_SET_ADAPTER = """
local rev = redis.call('HGET', KEYS[1], 'revision')
if not rev or rev ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'adapter', ARGV[1], 'adapter_revision', ARGV[2])
return 1
"""

# KEYS[1] index, KEYS[2] never-used set, KEYS[3] user, KEYS[4] its session set; ARGV[1] prefix.
_DELETE_USER = """
for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('DEL', ARGV[1] .. ':session:' .. id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
redis.call('DEL', KEYS[4])
return redis.call('DEL', KEYS[3])
"""

_FIELDS = ("token_hash", "created", "last_used", "model_version")
_USER_FIELDS = ("token_hash", "created", "model_version", "key_id", "statistics", "revision", "adapter")


class RedisSessionStore(SessionStore):
    """Sessions in one Redis, shared by every replica (see the module docstring for the layout).

    Parameters
    ----------
    url : str
        ``redis://[:password@]host:port/db``, ``rediss://`` (TLS) or ``unix:///path.sock?db=0``.
    idle_ttl_seconds, max_sessions
        As in ``SessionStore``.
    prefix : str
        Key prefix, so several deployments can share one Redis (default: ``hushtype``).
    """

    def __init__(
        self,
        url: str,
        idle_ttl_seconds: float | None = None,
        max_sessions: int | None = None,
        prefix: str = "hushtype",
    ) -> None:
        super().__init__(idle_ttl_seconds, max_sessions)
        self.url, self.prefix = url, prefix
        self._r = redis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=5.0)
        try:
            self._r.ping()
        except redis.RedisError as exc:
            raise RuntimeError(
                f"cannot reach the Redis session store at {describe_store(url)}: {exc}"
            ) from None
        self._sets = [f"{prefix}:sessions", f"{prefix}:unused"]  # the index, the never-used set
        self._create = self._r.register_script(_CREATE)
        self._purge = self._r.register_script(_PURGE)
        self._purge_never_used = self._r.register_script(_PURGE_NEVER_USED)
        self._evict = self._r.register_script(_EVICT)
        self._touch = self._r.register_script(_TOUCH)
        self._set_personalization = self._r.register_script(_SET_PERSONALIZATION)
        self._replace_statistics = self._r.register_script(_REPLACE_STATISTICS)
        self._set_adapter = self._r.register_script(_SET_ADAPTER)
        self._delete_user = self._r.register_script(_DELETE_USER)

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    def _user_key(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}"

    def _ttl_ms(self) -> int:
        return int(self.idle_ttl_seconds * 1000) if self.idle_ttl_seconds else 0

    def _head(self, now: float) -> list:
        """ARGV[1..2] of every script that purges expired sessions first."""
        return [repr(self._cutoff(now)) if self.idle_ttl_seconds else "", self.prefix]

    def create(self, eval_keys: bytes, model_version: str, user_id: str | None = None) -> tuple[str, str]:
        session_id, token = new_credentials()
        now = time.time()
        args = [*self._head(now), self.max_sessions or 0, self._ttl_ms(), repr(now)]
        args += [session_id, hash_token(token, session_id), model_version, eval_keys, user_id or ""]
        bound = f"{self._user_key(user_id or '-')}:sessions"
        if not self._create(keys=[*self._sets, self._key(session_id), bound], args=args):
            raise StoreFull(f"the store holds its maximum of {self.max_sessions} sessions")
        return session_id, token

    def get(self, session_id: str, *, load_eval_keys: bool = True) -> SessionRecord | None:
        fields = [*_FIELDS, "personalization", "user_id"] + (["eval_keys"] if load_eval_keys else [])
        values = self._r.hmget(self._key(session_id), fields)
        if values[0] is None:
            return None
        token_hash, created, last_used, model_version, personalization, user_id = values[:6]
        return SessionRecord(
            id=session_id,
            token_hash=token_hash.decode(),
            created=float(created),
            last_used=float(last_used),
            model_version=model_version.decode(),
            eval_keys=values[6] if load_eval_keys else None,
            personalization=personalization,
            user_id=user_id.decode() if user_id else None,
        )

    def get_personalization(self, session_id: str) -> bytes | None:
        return self._r.hget(self._key(session_id), "personalization")

    def set_personalization(self, session_id: str, blob: bytes) -> None:
        self._set_personalization(keys=[self._key(session_id)], args=[blob])

    def touch(self, session_id: str) -> None:
        self._touch(
            keys=[*self._sets, self._key(session_id)], args=[repr(time.time()), self._ttl_ms(), session_id]
        )

    def purge_idle(self, idle_seconds: float) -> int:
        return int(self._purge(keys=self._sets, args=[repr(time.time() - idle_seconds), self.prefix]))

    def purge_never_used(self, unused_seconds: float) -> int:
        now = time.time()
        return int(
            self._purge_never_used(keys=self._sets, args=[*self._head(now), repr(now - unused_seconds)])
        )

    def evict_least_recently_used(self, n: int, *, idle_seconds: float) -> int:
        if n <= 0:
            return 0
        now = time.time()
        return int(self._evict(keys=self._sets, args=[*self._head(now), repr(now - idle_seconds), n]))

    def delete(self, session_id: str) -> bool:
        with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(session_id))
            for name in self._sets:
                pipe.zrem(name, session_id)
            deleted, *_ = pipe.execute()
        return deleted > 0

    def count(self) -> int:
        with self._r.pipeline(transaction=False) as pipe:  # the purge script is atomic; ZCARD right after
            self._purge(keys=self._sets, args=self._head(time.time()), client=pipe)
            pipe.zcard(self._sets[0])
            _, live = pipe.execute()
        return int(live)

    def create_user(self, eval_keys: bytes, key_id: bytes, model_version: str) -> tuple[str, str]:
        user_id, token = new_credentials()
        mapping = {
            "token_hash": hash_token(token, user_id),
            "created": repr(time.time()),
            "model_version": model_version,
            "key_id": key_id,
            "eval_keys": eval_keys,
            "revision": 0,
            "adapter_revision": 0,
        }
        self._r.hset(self._user_key(user_id), mapping=mapping)
        return user_id, token

    def get_user(self, user_id: str, *, load_eval_keys: bool = True) -> UserRecord | None:
        fields = [*_USER_FIELDS, "adapter_revision"] + (["eval_keys"] if load_eval_keys else [])
        values = self._r.hmget(self._user_key(user_id), fields)
        if values[0] is None:
            return None
        token_hash, created, model_version, key_id, statistics, revision, adapter, adapter_revision = values[
            :8
        ]
        return UserRecord(
            id=user_id,
            token_hash=token_hash.decode(),
            created=float(created),
            model_version=model_version.decode(),
            key_id=bytes(key_id),
            eval_keys=values[8] if load_eval_keys else None,
            statistics=statistics,
            revision=int(revision),
            adapter=adapter,
            adapter_revision=int(adapter_revision),
        )

    def replace_statistics(self, user_id: str, blob: bytes, expected_revision: int) -> bool:
        return bool(self._replace_statistics(keys=[self._user_key(user_id)], args=[blob, expected_revision]))

    def set_adapter(self, user_id: str, blob: bytes, revision: int) -> bool:
        return bool(self._set_adapter(keys=[self._user_key(user_id)], args=[blob, revision]))

    def delete_user(self, user_id: str) -> bool:
        user = self._user_key(user_id)
        deleted = self._delete_user(keys=[*self._sets, user, f"{user}:sessions"], args=[self.prefix])
        return bool(deleted)

    def close(self) -> None:
        self._r.close()
