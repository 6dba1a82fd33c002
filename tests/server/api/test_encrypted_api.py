"""The encrypted prediction API end to end: real CKKS, real worker process, real HTTP semantics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from keyboard_sim.api_client import APIError, PredictionClient, context_ids
from models.nplm import plaintext_logits
from models.release import load_release
from models.vocab import Vocabulary
from server.api.main import create_app
from server.api.store import SQLiteSessionStore
from tests.server.api.conftest import make_settings

OCTETS = {"Content-Type": "application/octet-stream"}


def _client(api: TestClient) -> PredictionClient:
    return PredictionClient("http://testserver", http=api).open()


def test_model_card_and_public_artifacts(api: TestClient, small_release: Path) -> None:
    info = api.get("/v1/model").json()
    assert info["version"] == load_release(small_release).version
    assert len(info["vocabulary"]) == 64 and info["he"]["security_bits"] == 128
    assert 0 in info["he"]["rotation_steps"]
    assert api.get("/v1/model/weights").content[:8]  # safetensors bytes
    assert api.get("/healthz").json()["status"] == "ok"
    paths = api.get("/openapi.json").json()["paths"]
    assert "/v1/sessions/{session_id}/predict" in paths
    assert {"400", "401", "404", "409", "413"} <= set(
        paths["/v1/sessions/{session_id}/predict"]["post"]["responses"]
    )
    assert "503" in paths["/v1/sessions"]["post"]["responses"]  # documented for app developers


def test_encrypted_prediction_matches_plaintext_with_personalization(
    api: TestClient, small_release: Path
) -> None:
    release = load_release(small_release)
    device = _client(api)
    rng = np.random.default_rng(1)
    agree = 0
    for _ in range(6):
        ids = rng.integers(2, 64, size=4)
        z = device.logits(ids)
        ref = plaintext_logits(release.weights, ids)
        np.testing.assert_allclose(z, ref, atol=5e-3)
        agree += set(np.argsort(-z)[:3]) == set(np.argsort(-ref)[:3])
    assert agree >= 5
    bias = np.zeros(64)
    bias[17] = 25.0  # the user's favourite word
    device.upload_personalization(bias)
    ids = np.array([5, 6, 7, 8])
    z = device.logits(ids)
    np.testing.assert_allclose(z, plaintext_logits(release.weights, ids, bias), atol=5e-3)
    assert device.suggest("w3 w4 w5")[0].word == device.vocab.words[17] == "w15"
    text = api.get("/metrics").text
    assert "hushtype_predictions_total" in text


def test_personalize_from_the_users_own_history(api: TestClient) -> None:
    # The device fits its vocabulary bias on what its user typed before, then uploads it encrypted
    device = _client(api)
    word = device.vocab.words.index("w40")
    before = device.logits(np.array([5, 6, 7, 8]))
    fitted = device.personalize(["w5 w6 w7 w8 w40. w40 w9 w40"] * 20)
    after = device.logits(np.array([5, 6, 7, 8]))
    assert fitted["examples"] == 20 * 8 and fitted["adapter_bytes"] > 0
    rank = lambda z: int((z > z[word]).sum())  # noqa: E731
    assert rank(after) < rank(before) and after[word] - before[word] > 1.0
    device.close()


LETTER_WORDS = (
    "the be to of and a in that have i it for not on with he as you do at this but his by from they we say "
    "her she or an will my one all would there their what so up out if about who get which go me when make "
    "can like time no just him know take people into year your good some"
).split()


def test_autocorrect_uses_the_encrypted_next_word_prior(small_release: Path, tmp_path: Path) -> None:
    from keyboard_sim.autocorrect import default_autocorrector
    from models.release import save_release

    # Prepare: the small model with a vocabulary the keyboard can type
    release = load_release(small_release)
    words = release.vocab.words[:2] + LETTER_WORDS[:62]
    assert len(set(words)) == 64
    letters = tmp_path / "letters"
    save_release(letters, release.weights, release.config, Vocabulary(words), {})
    with TestClient(create_app(make_settings(letters, tmp_path / "ac.db"))) as app:
        device = _client(app)
        # Execute: "tge" has g where h was meant (neighbouring keys)
        fixed = device.autocorrect("you and", "tge", k=3)
        # Assert: corrected, and ranked exactly as the same decoder with the plaintext model's prior
        assert fixed[0].word == "the" and abs(sum(s.probability for s in fixed) - 1) < 1e-9
        z = plaintext_logits(release.weights, context_ids("you and", device.vocab, 4))
        z[1] = -np.inf  # <s>; <unk>'s mass goes to the correction words outside the model
        logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
        want = default_autocorrector(lm_words=words).candidates("tge", logp, top_k=3)
        assert [s.word for s in fixed] == [c.word for c in want]
        scores = np.array([c.score for c in want])
        np.testing.assert_allclose(
            [s.probability for s in fixed],
            np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum(),
            atol=1e-3,
        )
        with pytest.raises(ValueError, match="nothing typed"):
            device.autocorrect("you", "")
        device.close()


def test_server_store_holds_no_plaintext_or_secret(api: TestClient, api_db: Path) -> None:
    device = _client(api)
    device.upload_personalization(np.linspace(-1, 1, 64))
    record = SQLiteSessionStore(api_db).get(device.session_id)
    assert record is not None and record.eval_keys == device.eval_keys
    # the only per-session material is public keys and ciphertexts in the session's own formats
    assert record.eval_keys[:4] == b"HTEK" and record.personalization[:4] == b"HTCT"
    assert record.token_hash != device.token and device.token not in record.token_hash
    light = SQLiteSessionStore(api_db).get(device.session_id, load_eval_keys=False)
    assert light is not None and light.eval_keys is None and light.token_hash == record.token_hash
    assert SQLiteSessionStore(api_db).get_personalization(device.session_id) == record.personalization


def test_auth_and_isolation_between_sessions(api: TestClient) -> None:
    alice, bob = _client(api), _client(api)
    query = alice.encrypt_context(np.array([2, 3, 4, 5]))
    url = f"/v1/sessions/{alice.session_id}/predict"
    assert api.post(url, content=query, headers=OCTETS).status_code == 401
    wrong = {**OCTETS, "Authorization": f"Bearer {bob.token}"}
    wrong_token = api.post(url, content=query, headers=wrong)
    assert wrong_token.status_code == 401
    # Bob's token on Bob's session with Alice's ciphertext: refused by key id, not computed
    r = api.post(f"/v1/sessions/{bob.session_id}/predict", content=query, headers=bob._auth())
    assert r.status_code == 400 and "another session's key" in r.json()["detail"]
    # an unknown session answers exactly like a wrong token: existence does not leak
    unknown = api.post("/v1/sessions/" + "0" * 32 + "/predict", content=query, headers=bob._auth())
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == wrong_token.json()["detail"]
    assert unknown.headers["www-authenticate"] == wrong_token.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"garbage", OCTETS, 400, "evaluation keys rejected"),
        (b"", OCTETS, 400, "empty"),
        (b"x" * 100, {"Content-Type": "application/json"}, 415, "octet-stream"),
    ],
)
def test_bad_session_creation(api: TestClient, body: bytes, headers: dict, status: int, message: str) -> None:
    r = api.post("/v1/sessions", content=body, headers=headers)
    assert r.status_code == status and message in r.json()["detail"]


def test_malformed_and_truncated_queries_are_400(api: TestClient) -> None:
    device = _client(api)
    query = device.encrypt_context(np.array([2, 3, 4, 5]))
    url = f"/v1/sessions/{device.session_id}/predict"
    for bad in (query[: len(query) // 2], b"HTCT" + b"\0" * 40, query[:-1] + b"\x01" + b"zz"):
        r = api.post(url, content=bad, headers=device._auth())
        assert r.status_code == 400, r.text
        assert r.json()["detail"].startswith("query rejected")
    bias_as_query = device.secret.encrypt_bias(np.zeros(64), device.he["output_scale"])
    r = api.post(url, content=bias_as_query, headers=device._auth())
    assert r.status_code == 400
    # the session still works after rejected input
    assert len(device.suggest("w2 w3")) == 3


def test_wrong_personalization_is_rejected(api: TestClient) -> None:
    alice, bob = _client(api), _client(api)
    url = f"/v1/sessions/{alice.session_id}/personalization"
    other = bob.secret.encrypt_bias(np.zeros(64), bob.he["output_scale"])
    r = api.put(url, content=other, headers=alice._auth())
    assert r.status_code == 400 and "another session's key" in r.json()["detail"]
    wrong_scale = alice.secret.encrypt_bias(np.zeros(64), 2.0**20)
    r = api.put(url, content=wrong_scale, headers=alice._auth())
    assert r.status_code == 400 and "scale" in r.json()["detail"]


def test_oversized_bodies_are_413(small_release: Path, tmp_path: Path) -> None:
    settings = make_settings(small_release, tmp_path / "s.db", max_eval_key_bytes=1000, max_query_bytes=1000)
    with TestClient(create_app(settings)) as small:
        r = small.post("/v1/sessions", content=b"x" * 5000, headers=OCTETS)
        assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_delete_and_sessions_survive_a_restart(small_release: Path, tmp_path: Path) -> None:
    db = tmp_path / "restart.db"
    with TestClient(create_app(make_settings(small_release, db))) as first:
        device = _client(first)
        device.upload_personalization(np.zeros(64))
        before = device.logits(np.array([2, 3, 4, 5]))
        doomed = _client(first)
        doomed.close()
    with TestClient(create_app(make_settings(small_release, db))) as second:
        device.http = second  # same session id, token and key on the device
        np.testing.assert_allclose(device.logits(np.array([2, 3, 4, 5])), before, atol=1e-3)
        doomed.http, doomed.session_id, doomed.token = second, "gone", "x"
        with pytest.raises(APIError) as err:
            doomed.logits(np.array([2, 3, 4, 5]))
        assert err.value.status == 401  # a deleted session is an unknown one


def test_idle_sessions_expire_and_the_store_is_capped(small_release: Path, tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "cap.db"
    settings = make_settings(small_release, db, max_sessions=1, session_idle_ttl_seconds=3600)
    with TestClient(create_app(settings)) as capped:
        device = _client(capped)
        # a second session does not fit: 503 with a reason and a Retry-After
        r = capped.post("/v1/sessions", content=device.eval_keys, headers=OCTETS)
        assert r.status_code == 503 and "maximum of 1 sessions" in r.json()["detail"]
        assert r.json()["request_id"] == r.headers["x-request-id"]
        assert r.headers["retry-after"] == "60"
        # two hours unused: the store forgot the session (an unknown one: 401 that names expiry as a
        # cause), and its slot is free again
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE sessions SET last_used = last_used - 7200")
        with pytest.raises(APIError) as err:
            device.logits(np.array([2, 3, 4, 5]))
        assert err.value.status == 401 and "expired" in err.value.detail
        again = _client(capped)
        assert again.logits(np.array([2, 3, 4, 5])).shape == (64,)


def test_x_mode_server_computes_the_first_layer_too(small_release: Path, tmp_path: Path) -> None:
    release = load_release(small_release)
    with TestClient(create_app(make_settings(small_release, tmp_path / "x.db", he_mode="x"))) as api_x:
        device = _client(api_x)
        assert device.he["mode"] == "x" and device.he["params"]["coeff_bit_sizes"] == [40, 30, 30, 30, 60]
        ids = np.array([3, 9, 27, 60])
        np.testing.assert_allclose(device.logits(ids), plaintext_logits(release.weights, ids), atol=5e-3)


def test_thin_client_never_loads_the_head(tmp_path: Path) -> None:
    # Prepare: a small LSTM-encoder release served in mode h (the server runs the head only)
    import torch
    from safetensors.numpy import load as load_safetensors

    from models.config import ModelConfig
    from models.factory import HEAD_KEYS, build_model, encoder_keys, export_weights
    from models.factory import plaintext_logits as full_logits
    from models.release import save_release
    from tests.conftest import WORDS

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, context=6, embed_dim=8, hidden=32, kind="lstm", width=16, layers=1)
    weights = export_weights(build_model(cfg))
    weights["w2"] = weights["w2"] * 4.0  # logits spread like a trained model's
    save_release(tmp_path / "lstm", weights, cfg, Vocabulary(WORDS), {"trained": "test fixture"})
    with TestClient(create_app(make_settings(tmp_path / "lstm", tmp_path / "thin.db"))) as app:
        assert set(app.app.state.he._weights) == set(HEAD_KEYS)  # the workers get the head only
        seen: list = []
        app.event_hooks["response"].append(lambda r: seen.append((r.url.path, r.read())))
        # Execute
        device = PredictionClient("http://testserver", http=app).open()
        ids = np.array([2, 9, 4, 33, 7, 12])
        z = device.logits(ids)
        device.close()
    # Assert: the only weights downloaded are the encoder's; no response carries a head array's bytes
    downloads = [load_safetensors(body) for path, body in seen if path == "/v1/model/weights"]
    assert len(downloads) == 1 and set(downloads[0]) == set(encoder_keys(cfg))
    assert set(device.encoder) == set(encoder_keys(cfg)) and not set(device.encoder) & set(HEAD_KEYS)
    for key in ("w2", "b2"):
        probe = weights[key].tobytes()[:256]
        assert all(probe not in body for _, body in seen), f"the client received {key}"
    # ... and it still predicts: the server's encrypted head on the device's h == the full plaintext model
    np.testing.assert_allclose(z, full_logits(weights, cfg, ids), atol=5e-3)
