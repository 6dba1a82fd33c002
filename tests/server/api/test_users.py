"""Users: a key shared by a user's devices, encrypted increments added by the server, one adapter."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ckks.session_keys import KIND_STATISTICS
from keyboard_sim.api_client import APIError, PredictionClient
from keyboard_sim.personalize import adapter_from_statistics
from server.api.main import create_app
from server.api.store import SQLiteSessionStore
from tests.server.api.conftest import make_settings

OCTETS = {"Content-Type": "application/octet-stream"}
PHONE = ["w5 w6 w7 w8 w40. w40 w9 w40"] * 6
LAPTOP = ["w3 w4 w41 w41. w12 w41 w13"] * 6


def _device(api: TestClient) -> PredictionClient:
    return PredictionClient("http://testserver", http=api)


def _top3(device: PredictionClient, text: str = "w5 w6 w7") -> list[str]:
    return [s.word for s in device.suggest(text)]


def test_two_devices_share_one_adapter(api: TestClient) -> None:
    # Prepare: the phone creates the user; the laptop imports only the exported bytes
    phone = _device(api).create_user().open()
    laptop = _device(api).import_user(phone.export_user()).open()
    before = _top3(laptop)
    # Execute: each device contributes its own text as an encrypted increment
    phone.contribute(PHONE)
    laptop.contribute(LAPTOP)
    # Assert: the statistics are the sum of both devices' (within CKKS error) ...
    counts, expected, revision = laptop.user_statistics()
    words = phone.vocab.words
    assert revision == 2
    assert round(counts[words.index("w40")]) == 18 and round(counts[words.index("w41")]) == 18
    assert abs(counts.sum() - 6 * 8 - 6 * 7) < 0.1  # CKKS error ~1e-3 per slot
    assert 0.5 * counts.sum() < expected.sum() < counts.sum()  # the model's mass on <unk>/<s> is left out
    # ... the adapter equals the one built from all the text on one device ...
    one = _device(api).create_user().open()
    c1, e1, _ = one._history_statistics(PHONE + LAPTOP, 128)
    np.testing.assert_allclose(
        laptop.user_adapter(), adapter_from_statistics(c1, e1, one.adapter_config), atol=1e-3
    )
    # ... and a fresh device with only the exported user gets the same personalized top-3 at once
    fresh = _device(api).import_user(phone.export_user()).open()
    assert _top3(fresh) == _top3(phone) == _top3(laptop) != before
    adapter = fresh.user_adapter()
    assert adapter[words.index("w40")] > 0.5 and adapter[words.index("w41")] > 0.5  # what this user types


def test_the_server_never_holds_the_user_key(api: TestClient, api_db: Path) -> None:
    phone = _device(api).create_user().open()
    phone.contribute(PHONE)
    secret = phone.user_key.to_bytes()[-4096:]  # a slice of the SEAL secret key bytes
    with sqlite3.connect(api_db) as db:
        row = db.execute(
            "SELECT eval_keys, statistics, adapter, token_hash FROM users WHERE id = ?", (phone.user_id,)
        ).fetchone()
    assert row[0][:4] == b"HTEK" and row[1][:4] == b"HTCT" and row[2][:4] == b"HTCT"
    assert phone.user_token not in row[3]
    assert secret not in api_db.read_bytes() and all(secret not in bytes(col) for col in row[:3])
    # the container's own headers carry the key's fingerprint, nothing more
    assert row[1][14:30] == phone.user_key.key_id


def test_refused_increments_say_why(api: TestClient) -> None:
    phone = _device(api).create_user().open()
    stranger = _device(api).create_user().open()
    url = f"/v1/users/{phone.user_id}/increments"
    auth = phone._user_auth()
    foreign = stranger.statistics_increment(PHONE)
    r = api.post(url, content=foreign, headers=auth)
    assert r.status_code == 400 and "another session's key" in r.json()["detail"]
    slots = np.ones(64)
    wrong_scale = phone.secret.encrypt_bias(slots, phone.he["output_scale"], kind=KIND_STATISTICS)
    r = api.post(url, content=wrong_scale, headers=auth)
    assert r.status_code == 400 and "scale" in r.json()["detail"]
    top = phone.secret.tail_context.first_parms_id()
    wrong_level = phone.secret.encrypt_bias(slots, phone.he["statistics_scale"], top, kind=KIND_STATISTICS)
    r = api.post(url, content=wrong_level, headers=auth)
    assert r.status_code == 400 and "level" in r.json()["detail"]
    bias = phone.secret.encrypt_bias(slots, phone.he["statistics_scale"])  # a bias, not statistics
    assert api.post(url, content=bias, headers=auth).status_code == 400
    r = api.post("/v1/users/nobody/increments", content=foreign, headers=auth)
    assert r.status_code == 401 and "unknown user" in r.json()["detail"]
    r = api.post(url, content=b"x" * (3 * 2**20), headers=auth)
    assert r.status_code == 413
    assert api.get(f"/v1/users/{phone.user_id}/statistics", headers=auth).status_code == 404
    r = api.put(f"/v1/users/{phone.user_id}/adapter", content=bias, headers=auth)
    assert r.status_code == 428 and "If-Match" in r.json()["detail"]
    for odd in ("9" * 40, "abc", "-1"):  # beyond SQLite's integers, no digits, negative
        r = api.put(f"/v1/users/{phone.user_id}/adapter", content=bias, headers={**auth, "If-Match": odd})
        assert r.status_code == 428
    with pytest.raises(APIError, match="another session's key"):  # a stranger's statistics
        stranger.user_id, stranger.user_token = phone.user_id, phone.user_token
        stranger.contribute(PHONE)


def test_stale_model_version_is_refused(api: TestClient, api_db: Path) -> None:
    phone = _device(api).create_user()
    with sqlite3.connect(api_db) as db:
        db.execute("UPDATE users SET model_version = 'old' WHERE id = ?", (phone.user_id,))
    r = api.post(f"/v1/users/{phone.user_id}/sessions", headers=phone._user_auth())
    assert r.status_code == 409 and "model old" in r.json()["detail"]


def test_concurrent_increments_are_all_added(api: TestClient) -> None:
    phone = _device(api).create_user().open()
    blob = phone.statistics_increment(["w40 w41"])
    codes: list[int] = []

    def send() -> None:
        for _ in range(3):
            r = api.post(f"/v1/users/{phone.user_id}/increments", content=blob, headers=phone._user_auth())
            codes.append(r.status_code)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts, _, revision = phone.user_statistics()
    assert codes == [200] * 9 and revision == 9
    assert round(counts[phone.vocab.words.index("w41")]) == 9


def test_restart_keeps_users_and_adapters_and_delete_forgets_them(
    small_release: Path, tmp_path: Path
) -> None:
    db = tmp_path / "users.db"
    with TestClient(create_app(make_settings(small_release, db))) as app:
        phone = _device(app).create_user().open()
        phone.contribute(PHONE)
        exported, top3 = phone.export_user(), _top3(phone)
    with TestClient(create_app(make_settings(small_release, db))) as app:  # the server restarted
        watch = _device(app).import_user(exported).open()
        assert _top3(watch) == top3
        watch.delete_user()
        assert SQLiteSessionStore(db).get_user(phone.user_id) is None
        with pytest.raises(APIError, match="401"):
            _device(app).import_user(exported).open()
