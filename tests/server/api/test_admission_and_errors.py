"""Admission control, the private-release rule, JSON errors with request ids, settings precedence."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from hushtype.cli import build_parser, serve_settings
from keyboard_sim.api_client import PredictionClient
from models.head import head_logits
from models.release import load_release, save_release
from server.api.admission import RateLimiter
from server.api.main import create_app
from server.api.release_policy import NonPrivateRelease
from server.api.store import SQLiteSessionStore
from tests.server.api.conftest import make_settings

OCTETS = {"Content-Type": "application/octet-stream"}


def _keys(api: TestClient) -> bytes:
    return PredictionClient("http://testserver", http=api).eval_keys


def test_rate_limiter_admits_a_burst_then_the_sustained_rate() -> None:
    limiter = RateLimiter(per_minute=6.0, burst=2)
    assert [limiter.acquire("a", now=0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a", now=0.0) == pytest.approx(10.0)  # one token per 10 s
    assert limiter.acquire("b", now=0.0) == 0.0  # another client has its own bucket
    assert limiter.acquire("a", now=10.0) == 0.0  # refilled
    with pytest.raises(ValueError, match="per_minute"):
        RateLimiter(per_minute=0, burst=1)


def test_session_creation_rate_limit_and_app_key(small_release: Path, tmp_path: Path) -> None:
    settings = make_settings(small_release, tmp_path / "s.db", session_create_burst=2, app_key="app-secret")
    with TestClient(create_app(settings)) as api:
        keys = _keys(api)
        r = api.post("/v1/sessions", content=keys, headers=OCTETS)
        assert r.status_code == 401 and "X-App-Key" in r.json()["detail"]
        ok = {**OCTETS, "X-App-Key": "app-secret"}
        assert [api.post("/v1/sessions", content=keys, headers=ok).status_code for _ in range(2)] == [201] * 2
        r = api.post("/v1/sessions", content=keys, headers=ok)
        assert r.status_code == 429 and r.headers["retry-after"] == "10"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        assert "hushtype_sessions_rate_limited_total 1.0" in api.get("/metrics").text
        spec = api.get("/openapi.json").json()
        assert spec["paths"]["/v1/sessions"]["post"]["security"] == [{"appKey": []}]


def test_full_store_evicts_never_used_then_least_recently_used(small_release: Path, tmp_path: Path) -> None:
    db = tmp_path / "full.db"
    settings = make_settings(
        small_release, db, max_sessions=2, evict_idle_after_seconds=600, unused_session_ttl_seconds=3600
    )
    with TestClient(create_app(settings)) as api:
        used = PredictionClient("http://testserver", http=api).open()
        used.logits(np.array([2, 3, 4, 5]))  # used once
        unused = PredictionClient("http://testserver", http=api).open()
        # both active: a third device is refused, with a reason and Retry-After
        r = api.post("/v1/sessions", content=used.eval_keys, headers=OCTETS)
        assert r.status_code == 503 and r.headers["retry-after"] == "60"
        # both idle for 20 min: the never-used one goes first, though the used one is older
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE sessions SET created = created - 1200, last_used = last_used - 1200")
        third = PredictionClient("http://testserver", http=api).open()
        store = SQLiteSessionStore(db)
        assert store.get(unused.session_id) is None and store.get(used.session_id) is not None
        # the idle used session makes room next; the fresh third one is not idle long enough
        fourth = PredictionClient("http://testserver", http=api).open()
        assert store.get(used.session_id) is None and store.get(third.session_id) is not None
        assert fourth.logits(np.array([2, 3, 4, 5])).shape == (64,)
        store.close()


def test_never_used_sessions_expire_early(api: TestClient, api_db: Path) -> None:
    idle = PredictionClient("http://testserver", http=api).open()
    with sqlite3.connect(api_db) as conn:  # 20 min old, never used (the default expiry is 15 min)
        conn.execute(
            "UPDATE sessions SET created = created - 1200, last_used = last_used - 1200 WHERE id = ?",
            (idle.session_id,),
        )
    PredictionClient("http://testserver", http=api).open()  # creation applies the store policy
    assert SQLiteSessionStore(api_db).get(idle.session_id) is None


def _private_copy(small_release: Path, out: Path) -> Path:
    release = load_release(small_release)
    card = {"trained": "federated DP-FedAvg (test)", "user_epsilon": 3.5, "user_delta": 1e-5}
    save_release(out, release.weights, release.config, release.vocab, card)
    return out


def test_only_a_dp_release_is_served_unless_allowed(
    api: TestClient, small_release: Path, tmp_path: Path
) -> None:
    refused = make_settings(small_release, tmp_path / "a.db", allow_non_private=False)
    with pytest.raises(NonPrivateRelease, match="--allow-non-private"):
        with TestClient(create_app(refused)):
            pass
    assert api.get("/v1/model").json()["privacy"] == {  # the fixture app allows it, and says so
        "user_level_dp": False,
        "user_epsilon": None,
        "user_delta": None,
        "trained": "test fixture",
        "non_private_allowed": True,
    }
    private = _private_copy(small_release, tmp_path / "dp")
    dp_settings = make_settings(private, tmp_path / "c.db", allow_non_private=False)
    with TestClient(create_app(dp_settings)) as api:
        privacy = api.get("/v1/model").json()["privacy"]
        assert privacy["user_level_dp"] and privacy["user_epsilon"] == 3.5
        assert not privacy["non_private_allowed"]
    # the CLI refuses before starting anything, naming the flag
    cmd = [sys.executable, "-m", "hushtype.cli", "serve", "--release", str(small_release), "--port", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--allow-non-private" in out.stderr and "no user-level DP" in out.stderr


def test_serve_settings_flag_over_env_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    parse = build_parser().parse_args
    for name in ("RELEASE_DIR", "DB_PATH", "WORKERS", "HE_MODE", "ALLOW_NON_PRIVATE"):
        monkeypatch.delenv(f"HUSHTYPE_{name}", raising=False)
    defaults = serve_settings(parse(["serve"]))
    assert defaults.release_dir == "runs/demo/federated/release"
    assert (defaults.workers, defaults.he_mode) == (2, "h")
    assert defaults.allow_non_private is False
    monkeypatch.setenv("HUSHTYPE_RELEASE_DIR", "env/release")
    monkeypatch.setenv("HUSHTYPE_DB_PATH", "env.db")
    monkeypatch.setenv("HUSHTYPE_WORKERS", "3")
    monkeypatch.setenv("HUSHTYPE_HE_MODE", "x")
    monkeypatch.setenv("HUSHTYPE_ALLOW_NON_PRIVATE", "1")
    env = serve_settings(parse(["serve"]))
    assert (env.release_dir, env.db_path, env.workers, env.he_mode) == ("env/release", "env.db", 3, "x")
    assert env.allow_non_private is True
    argv = ["serve", "--release", "flag/r", "--db", "f.db", "--workers", "1", "--mode", "h"]
    flags = serve_settings(parse(argv))
    assert (flags.release_dir, flags.db_path, flags.workers, flags.he_mode) == ("flag/r", "f.db", 1, "h")
    monkeypatch.setenv("HUSHTYPE_WORKERS", "many")
    out = subprocess.run(
        [sys.executable, "-m", "hushtype.cli", "serve"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "workers" in out.stderr
    monkeypatch.delenv("HUSHTYPE_WORKERS")
    with pytest.raises(ValueError, match="workers"):
        serve_settings(parse(["serve", "--workers", "0"]))


def test_every_error_is_json_with_a_request_id(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> dict:
        raise RuntimeError("a bug")

    api.app.add_api_route("/boom", boom, include_in_schema=False)  # the running app, a route with a bug
    raw = TestClient(api.app, raise_server_exceptions=False)  # the app is already started
    try:
        r = raw.get("/boom")
        assert r.status_code == 500 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert "internal error" in body["detail"] and "a bug" not in body["detail"]
        assert body["request_id"] == r.headers["x-request-id"]
        logged = [rec for rec in caplog.records if rec.name == "hushtype.api" and rec.levelname == "ERROR"]
        assert logged and body["request_id"] in logged[-1].getMessage() and logged[-1].exc_info
        r = api.get("/no/such/path", headers={"X-Request-ID": "my-id-42"})
        assert r.status_code == 404 and r.json() == {"detail": "Not Found", "request_id": "my-id-42"}
        r = api.post("/v1/sessions", content=b"x", headers={"X-Request-ID": "bad id!"})
        assert r.status_code == 415 and len(r.json()["request_id"]) == 32  # not echoed: fresh id
        ready = api.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ok"
    finally:
        raw.close()


def test_405_allows_every_method_of_the_path(api: TestClient) -> None:
    # Arrange: GET and PUT on the adapter are two routes; Starlette's 405 names only the first one's
    # Act
    r = api.request("OPTIONS", "/v1/users/u1/adapter")
    # Assert
    assert r.status_code == 405 and r.json()["detail"] == "Method Not Allowed"
    assert set(r.headers["allow"].split(", ")) == {"GET", "PUT"}


def test_openapi_is_enough_to_write_a_client(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["sessionToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "the token POST /v1/sessions returned with the session id (shown once)",
    }
    paths = spec["paths"]
    create = paths["/v1/sessions"]["post"]
    assert "security" not in create  # no app key configured: no credential needed
    predict = paths["/v1/sessions/{session_id}/predict"]["post"]
    assert predict["security"] == [{"sessionToken": []}]
    body = predict["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/octet-stream"]["schema"] == {
        "type": "string",
        "format": "binary",
        "maxLength": 512 * 2**10,
    }
    assert create["requestBody"]["content"]["application/octet-stream"]["schema"]["maxLength"] == 16 * 2**20
    for code in ("400", "401", "404", "409", "413", "415", "500", "503"):
        content = predict["responses"][code]["content"]["application/json"]["schema"]
        assert content == {"$ref": "#/components/schemas/ErrorBody"}, code
    assert set(spec["components"]["schemas"]["ErrorBody"]["required"]) == {"detail", "request_id"}
    assert "Retry-After" in predict["responses"]["503"]["headers"]
    assert "Retry-After" in create["responses"]["429"]["headers"]
    assert "X-Request-ID" in predict["responses"]["200"]["headers"]
    model = paths["/v1/model"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert model == {"$ref": "#/components/schemas/ModelInfo"}
    info = spec["components"]["schemas"]["ModelInfo"]
    assert {"version", "card", "privacy", "he", "vocabulary", "artifacts"} <= set(info["required"])
    assert "docs/wire-format.md" in spec["info"]["description"]
    json.dumps(spec)  # plain JSON


def test_plaintext_baseline_is_off_by_default_and_its_errors_are_json(
    api: TestClient, small_release: Path, tmp_path: Path
) -> None:
    r = api.post("/v1/baseline/predict", content=b"\0" * 128, headers=OCTETS)
    assert r.status_code == 404 and r.json()["request_id"] == r.headers["x-request-id"]
    assert not any(p.startswith("/v1/baseline") for p in api.get("/openapi.json").json()["paths"])
    weights = load_release(small_release).weights
    dim = weights["w2"].shape[1]  # the head's input: h
    settings = make_settings(small_release, tmp_path / "b.db", plaintext_baseline=True)
    with TestClient(create_app(settings)) as on:
        x = np.linspace(-1, 1, dim).astype("<f4")
        r = on.post("/v1/baseline/predict", content=x.tobytes(), headers=OCTETS)
        assert r.status_code == 200
        expected = head_logits(weights, x.astype(np.float64))
        np.testing.assert_allclose(np.frombuffer(r.content, "<f4"), expected, rtol=1e-5, atol=1e-5)
        nan = np.full(dim, np.nan, dtype="<f4").tobytes()
        bad = [
            (400, x.tobytes()[:-4], OCTETS, "expected"),
            (400, nan, OCTETS, "non-finite"),
            (413, x.tobytes() + b"\0" * 4, OCTETS, "limit"),
            (415, x.tobytes(), {"Content-Type": "application/json"}, "application/octet-stream"),
        ]
        for i, (code, body, headers, says) in enumerate(bad):
            r = on.post("/v1/baseline/predict", content=body, headers={**headers, "X-Request-ID": f"b-{i}"})
            assert r.status_code == code and r.json()["request_id"] == f"b-{i}", (code, r.text)
            assert r.json()["detail"].startswith("plaintext features") and says in r.json()["detail"]
        op = on.get("/openapi.json").json()["paths"]["/v1/baseline/predict"]["post"]
        for code in ("400", "413", "415", "500"):
            schema = op["responses"][code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, code
        assert op["requestBody"]["required"] is True
