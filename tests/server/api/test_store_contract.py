"""One contract, every session store: SQLite (file) and Redis (a real ``redis-server`` on loopback).

Idle expiry, the cap, the admission policy's purge and eviction (``make_room``), and sharing between
handles (two API replicas) must behave the same whichever store ``HUSHTYPE_STORE`` picks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydantic
import pytest
import redis

from hushtype.serve_process import stop_server
from hushtype.stack import missing_services, start_redis
from server.api.admission import make_room
from server.api.config import Settings
from server.api.store import SessionStore, SQLiteSessionStore, StoreFull, hash_token, open_store
from server.api.store_redis import RedisSessionStore

KEYS = b"\x01public-eval-keys" * 1000


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this test module's own, on a free loopback port."""
    missing = missing_services("redis")
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed and scripts/install-services could not install it")
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop_server(proc, grace=5.0)


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SessionStore]]:
    """``make_store(**kw)`` opens a handle on this test's store; every handle sees the same sessions."""
    if request.param == "redis":
        location = request.getfixturevalue("redis_url")
        redis.Redis.from_url(location).flushdb()
    else:
        location = str(tmp_path / "sessions.db")
    opened: list[SessionStore] = []

    def make(**kw) -> SessionStore:
        opened.append(open_store(location, **kw))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


def test_a_session_round_trips(make_store) -> None:
    store = make_store()
    sid, token = store.create(KEYS, "v1")
    record = store.get(sid)
    assert record is not None and record.eval_keys == KEYS and record.model_version == "v1"
    assert record.token_hash == hash_token(token, sid) and record.token_matches(token)
    assert not record.token_matches(token + "x")
    assert record.created == record.last_used and abs(record.created - time.time()) < 5
    assert record.personalization is None
    light = store.get(sid, load_eval_keys=False)
    assert light.eval_keys is None and light.token_hash == record.token_hash
    assert store.get("nope") is None and store.count() == 1


def test_personalization_replaces_and_never_creates(make_store) -> None:
    store = make_store()
    sid, _ = store.create(KEYS, "v1")
    store.set_personalization(sid, b"adapter-1")
    store.set_personalization(sid, b"adapter-2")
    assert store.get_personalization(sid) == b"adapter-2" == store.get(sid).personalization
    store.set_personalization("ghost", b"x")
    assert store.get_personalization("ghost") is None and store.get("ghost") is None
    store.touch("ghost")
    assert store.get("ghost") is None and store.count() == 1


def test_delete_forgets_everything(make_store) -> None:
    store = make_store()
    sid, _ = store.create(KEYS, "v1")
    store.set_personalization(sid, b"adapter")
    assert store.delete(sid) is True and store.delete(sid) is False
    assert store.get(sid) is None and store.get_personalization(sid) is None and store.count() == 0


def test_the_cap_refuses_and_never_evicts_a_live_session(make_store) -> None:
    store = make_store(max_sessions=2, idle_ttl_seconds=3600)
    first, _ = store.create(KEYS, "v1")
    store.create(KEYS, "v1")
    with pytest.raises(StoreFull, match="maximum of 2"):
        store.create(KEYS, "v1")
    assert store.get(first) is not None and store.count() == 2
    store.delete(first)
    store.create(KEYS, "v1")
    assert store.count() == 2


def test_idle_sessions_expire_and_a_touch_keeps_one_alive(make_store) -> None:
    store = make_store(idle_ttl_seconds=1.5)
    kept, _ = store.create(KEYS, "v1")
    idle, _ = store.create(KEYS, "v1")
    time.sleep(1.0)
    store.touch(kept)
    time.sleep(0.6)  # idle: >= 1.6 s unused; kept: 0.6 s since its touch (0.9 s of slack for a busy machine)
    assert store.get(idle) is None and store.get_personalization(idle) is None
    assert store.get(kept) is not None and store.count() == 1
    store.touch(idle)
    store.set_personalization(idle, b"late")
    assert store.get(idle) is None and store.count() == 1  # writes do not bring an expired session back


def test_an_expired_session_frees_its_slot(make_store) -> None:
    store = make_store(max_sessions=1, idle_ttl_seconds=0.4)
    store.create(KEYS, "v1")
    with pytest.raises(StoreFull):
        store.create(KEYS, "v1")
    time.sleep(0.5)
    sid, _ = store.create(KEYS, "v1")
    assert store.get(sid) is not None and store.count() == 1


def test_purge_idle_deletes_only_the_idle(make_store) -> None:
    store = make_store()
    old, _ = store.create(KEYS, "v1")
    time.sleep(0.3)
    new, _ = store.create(KEYS, "v1")
    assert store.purge_idle(0.2) == 1
    assert store.get(old) is None and store.get(new) is not None and store.count() == 1


def test_purge_never_used_deletes_only_old_sessions_never_used(make_store) -> None:
    store = make_store()
    old_unused, _ = store.create(KEYS, "v1")
    old_used, _ = store.create(KEYS, "v1")
    store.touch(old_used)
    time.sleep(0.3)
    new_unused, _ = store.create(KEYS, "v1")
    assert store.purge_never_used(0.2) == 1
    assert store.get(old_unused) is None
    assert store.get(old_used) is not None and store.get(new_unused) is not None and store.count() == 2
    assert store.purge_never_used(0.2) == 0


def test_eviction_takes_never_used_first_then_least_recently_used(make_store) -> None:
    store = make_store()
    lru, _ = store.create(KEYS, "v1")
    store.touch(lru)
    time.sleep(0.1)
    used, _ = store.create(KEYS, "v1")
    store.touch(used)
    time.sleep(0.1)
    unused, _ = store.create(KEYS, "v1")  # the newest of the three, yet never used: evicted first
    time.sleep(0.35)
    fresh, _ = store.create(KEYS, "v1")
    store.touch(fresh)
    assert store.evict_least_recently_used(0, idle_seconds=0.3) == 0
    assert store.evict_least_recently_used(1, idle_seconds=0.3) == 1
    assert store.get(unused) is None and store.count() == 3
    assert store.evict_least_recently_used(1, idle_seconds=0.3) == 1
    assert store.get(lru) is None and store.get(used) is not None
    store.touch(fresh)
    assert store.evict_least_recently_used(5, idle_seconds=0.3) == 1  # not idle long enough: kept
    assert store.get(used) is None and store.get(fresh) is not None and store.count() == 1


def test_purge_and_eviction_count_only_live_sessions(make_store) -> None:
    store = make_store(idle_ttl_seconds=0.3)
    store.create(KEYS, "v1")
    store.create(KEYS, "v1")
    time.sleep(0.4)  # both expired
    assert store.purge_never_used(0.1) == 0
    assert store.evict_least_recently_used(5, idle_seconds=0.0) == 0 and store.count() == 0


def test_make_room_evicts_an_idle_session_and_the_cap_stays_atomic(make_store) -> None:
    settings = Settings(
        max_sessions=2,
        session_idle_ttl_seconds=3600,
        unused_session_ttl_seconds=3600,
        evict_idle_after_seconds=0.3,
    )
    store = make_store(max_sessions=2, idle_ttl_seconds=3600)
    used, _ = store.create(KEYS, "v1")
    store.touch(used)
    unused, _ = store.create(KEYS, "v1")
    assert make_room(store, settings) is False  # both active: nothing may be evicted
    with pytest.raises(StoreFull):
        store.create(KEYS, "v1")
    time.sleep(0.4)
    assert make_room(store, settings) is True
    assert store.get(unused) is None and store.get(used) is not None
    third, _ = store.create(KEYS, "v1")
    assert store.count() == 2 and make_room(store, settings) is True  # the used one is idle too
    assert store.get(used) is None and store.get(third) is not None


def test_handles_share_sessions_and_the_cap_holds_under_concurrent_creates(make_store) -> None:
    """Two handles = two replicas (or the API and a worker): one cap, no overshoot, shared state."""
    a, b = make_store(max_sessions=5), make_store(max_sessions=5)
    sid, token = a.create(KEYS, "v1")
    b.set_personalization(sid, b"from-b")
    assert b.get(sid).token_matches(token) and a.get_personalization(sid) == b"from-b"
    created, refused = [], []

    def worker(store: SessionStore) -> None:
        for _ in range(6):
            try:
                created.append(store.create(KEYS, "v1")[0])
            except StoreFull:
                refused.append(1)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(created) == 4 and len(refused) == 8 and a.count() == b.count() == 5


def test_redis_idle_expiry_is_a_key_ttl_restarted_by_touch(redis_url: str) -> None:
    store = RedisSessionStore(redis_url, idle_ttl_seconds=30, prefix="ttl-test")
    raw = redis.Redis.from_url(redis_url)
    try:
        sid, _ = store.create(KEYS, "v1")
        key = f"ttl-test:session:{sid}"
        assert 29_000 < raw.pttl(key) <= 30_000
        raw.pexpire(key, 5_000)
        store.touch(sid)
        assert raw.pttl(key) > 29_000
        store.set_personalization(sid, b"adapter")  # not a use: the TTL is kept
        assert 0 < raw.pttl(key) <= 30_000
    finally:
        store.close()


def test_redis_never_used_set_follows_the_sessions(redis_url: str) -> None:
    store = RedisSessionStore(redis_url, idle_ttl_seconds=30, prefix="unused-test")
    raw = redis.Redis.from_url(redis_url)
    try:
        a, _ = store.create(KEYS, "v1")
        b, _ = store.create(KEYS, "v1")
        c, _ = store.create(KEYS, "v1")
        assert {m.decode() for m in raw.zrange("unused-test:unused", 0, -1)} == {a, b, c}
        store.touch(a)  # used: no longer in the never-used set, still in the index
        store.delete(b)
        assert [m.decode() for m in raw.zrange("unused-test:unused", 0, -1)] == [c]
        assert {m.decode() for m in raw.zrange("unused-test:sessions", 0, -1)} == {a, c}
        assert store.evict_least_recently_used(2, idle_seconds=0.0) == 2
        assert raw.zcard("unused-test:unused") == raw.zcard("unused-test:sessions") == 0
        assert raw.keys("unused-test:session:*") == []
    finally:
        store.close()


def test_open_store_reads_the_location(tmp_path: Path, redis_url: str) -> None:
    sqlite_store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    redis_store = open_store(redis_url, idle_ttl_seconds=10, max_sessions=3)
    try:
        assert isinstance(sqlite_store, SQLiteSessionStore) and sqlite_store.path == str(tmp_path / "a.db")
        assert isinstance(redis_store, RedisSessionStore) and redis_store.max_sessions == 3
    finally:
        sqlite_store.close()
        redis_store.close()
    with pytest.raises(ValueError, match="use redis://"):
        open_store("http://example.org/sessions")
    with pytest.raises(pydantic.ValidationError, match="store"):
        Settings(store="postgres://db/sessions")
    assert Settings(db_path="x.db").store_location() == "x.db"
    assert Settings(store=redis_url).store_location() == redis_url


def test_an_unreachable_redis_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(
        RuntimeError, match=r"cannot reach the Redis session store at redis://\*\*\*@127.0.0.1:1/0"
    ):
        open_store("redis://:s3cret@127.0.0.1:1/0")


# -- users -------------------------------------------------------------------------------------------


def test_a_user_round_trips_and_keeps_no_secret(make_store) -> None:
    store = make_store()
    user_id, token = store.create_user(KEYS, b"k" * 16, "v1")
    user = store.get_user(user_id)
    assert user is not None and user.eval_keys == KEYS and user.key_id == b"k" * 16
    assert (user.statistics, user.revision, user.adapter, user.adapter_revision) == (None, 0, None, 0)
    assert user.token_hash == hash_token(token, user_id) and token not in user.token_hash
    assert store.get_user(user_id, load_eval_keys=False).eval_keys is None
    assert store.get_user("nobody") is None
    assert make_store().get_user(user_id).revision == 0  # another handle (a replica, a restart) sees it


def test_user_writes_are_compare_and_set_on_the_revision(make_store) -> None:
    store = make_store()
    user_id, _ = store.create_user(KEYS, b"k" * 16, "v1")
    assert store.replace_statistics(user_id, b"S1", 0)
    assert not store.replace_statistics(user_id, b"lost", 0)  # another device got there first
    assert not store.set_adapter(user_id, b"U0", 0)  # derived from revision 0: stale
    assert store.set_adapter(user_id, b"U1", 1)
    user = store.get_user(user_id)
    assert (user.statistics, user.revision, user.adapter, user.adapter_revision) == (b"S1", 1, b"U1", 1)
    assert not store.replace_statistics("nobody", b"x", 0) and not store.set_adapter("nobody", b"x", 0)


def test_concurrent_increments_lose_nothing(make_store) -> None:
    # Four "replicas" each add 10 increments with the server's compare-and-set loop: all 40 land.
    make_store()
    user_id, _ = make_store().create_user(KEYS, b"k" * 16, "v1")

    def device() -> None:
        store = make_store()
        for _ in range(10):
            while True:
                user = store.get_user(user_id, load_eval_keys=False)
                total = int(user.statistics or b"0") + 1
                if store.replace_statistics(user_id, str(total).encode(), user.revision):
                    break

    threads = [threading.Thread(target=device) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    user = make_store().get_user(user_id)
    assert user.revision == 40 and user.statistics == b"40"


def test_deleting_a_user_deletes_its_sessions(make_store) -> None:
    store = make_store()
    user_id, _ = store.create_user(KEYS, b"k" * 16, "v1")
    bound, _ = store.create(b"", "v1", user_id)
    other, _ = store.create(KEYS, "v1")
    assert store.get(bound).user_id == user_id and store.get(other).user_id is None
    assert store.delete_user(user_id) and not store.delete_user(user_id)
    assert store.get_user(user_id) is None and store.get(bound) is None and store.get(other) is not None
