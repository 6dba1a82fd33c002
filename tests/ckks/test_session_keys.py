"""Session keys and wire formats: round trips, minimal keys, malformed bytes, cross-session isolation."""

from __future__ import annotations

import numpy as np
import pytest

from ckks.nplm_circuit import INFERENCE, INFERENCE_H
from ckks.session_keys import (
    KIND_BIAS,
    KIND_LOGITS,
    KIND_QUERY,
    SessionEvalKeys,
    SessionFormatError,
    SessionSecret,
    dump_ciphertext,
    load_ciphertext,
)

STEPS = [0, 1, 2, 16]


@pytest.fixture(scope="module")
def session() -> SessionSecret:
    return SessionSecret.generate(INFERENCE_H, STEPS)


@pytest.fixture(scope="module")
def key_bytes(session: SessionSecret) -> bytes:
    return session.eval_keys_bytes()


def test_eval_keys_round_trip_and_only_requested_steps(session: SessionSecret, key_bytes: bytes) -> None:
    keys = SessionEvalKeys.from_bytes(key_bytes, INFERENCE_H, required_steps=[1, 16])
    assert keys.rotation_steps == STEPS and keys.key_id == session.key_id
    assert keys.galois_keys.size() == len(STEPS)  # no default power-of-two key set
    with pytest.raises(SessionFormatError, match="rotation steps \\[256\\]"):
        SessionEvalKeys.from_bytes(key_bytes, INFERENCE_H, required_steps=[256])


@pytest.mark.parametrize("cut", [0, 10, 40, 1000, -1])
def test_truncated_eval_keys_rejected(key_bytes: bytes, cut: int) -> None:
    with pytest.raises(SessionFormatError):
        SessionEvalKeys.from_bytes(key_bytes[:cut], INFERENCE_H)


def test_garbage_and_wrong_params_eval_keys_rejected(key_bytes: bytes) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(SessionFormatError):
        SessionEvalKeys.from_bytes(rng.bytes(5000), INFERENCE_H)
    with pytest.raises(SessionFormatError, match="other HE parameters"):
        SessionEvalKeys.from_bytes(key_bytes, INFERENCE)
    corrupted = bytearray(key_bytes)
    corrupted[len(corrupted) // 2 : len(corrupted) // 2 + 64] = rng.bytes(64)  # inside the SEAL payload
    with pytest.raises(SessionFormatError):
        SessionEvalKeys.from_bytes(bytes(corrupted), INFERENCE_H)
    with pytest.raises(SessionFormatError, match="trailing"):
        SessionEvalKeys.from_bytes(key_bytes + b"x", INFERENCE_H)
    with pytest.raises(TypeError):
        SessionEvalKeys.from_bytes("not bytes", INFERENCE_H)  # type: ignore[arg-type]


def test_query_round_trip(session: SessionSecret) -> None:
    values = np.linspace(-1, 1, session.encoder.slot_count())
    blob = session.encrypt_query(values)
    ct = load_ciphertext(blob, session.context, INFERENCE_H, KIND_QUERY, key_id=session.key_id)
    logits_blob = dump_ciphertext(ct, INFERENCE_H, session.key_id, KIND_LOGITS)
    np.testing.assert_allclose(session.decrypt_logits(logits_blob, 100), values[:100], atol=1e-6)


def test_seeded_query_is_small(session: SessionSecret) -> None:
    blob = session.encrypt_query(np.ones(session.encoder.slot_count()))
    assert len(blob) < 128 * 1024  # 3 data primes, seeded: ~123 KB vs ~245 KB unseeded


@pytest.mark.parametrize("cut", [0, 20, 30, 1000, -1])
def test_truncated_ciphertext_rejected(session: SessionSecret, cut: int) -> None:
    blob = session.encrypt_query(np.ones(8))
    with pytest.raises(SessionFormatError):
        load_ciphertext(blob[:cut], session.context, INFERENCE_H, KIND_QUERY)


def test_bad_ciphertexts_rejected(session: SessionSecret) -> None:
    blob = session.encrypt_query(np.ones(8))
    rng = np.random.default_rng(1)
    with pytest.raises(SessionFormatError, match="bad magic"):
        load_ciphertext(rng.bytes(len(blob)), session.context, INFERENCE_H, KIND_QUERY)
    with pytest.raises(SessionFormatError):
        load_ciphertext(blob[:30] + rng.bytes(len(blob) - 30), session.context, INFERENCE_H, KIND_QUERY)
    with pytest.raises(SessionFormatError, match="personal bias"):
        load_ciphertext(blob, session.context, INFERENCE_H, KIND_BIAS)
    with pytest.raises(SessionFormatError, match="other HE parameters"):
        load_ciphertext(blob, session.context, INFERENCE, KIND_QUERY)
    with pytest.raises(SessionFormatError, match="another session"):
        load_ciphertext(blob, session.context, INFERENCE_H, KIND_QUERY, key_id=b"\0" * 16)
    with pytest.raises(SessionFormatError, match="wrong level"):
        load_ciphertext(
            blob, session.context, INFERENCE_H, KIND_QUERY, parms_id=session.context.last_parms_id()
        )


def test_other_session_cannot_decrypt(session: SessionSecret) -> None:
    other = SessionSecret.generate(INFERENCE_H, STEPS)
    values = np.linspace(-1, 1, 64)
    ct = load_ciphertext(session.encrypt_query(values), session.context, INFERENCE_H, KIND_QUERY)
    with pytest.raises(SessionFormatError, match="another session"):
        other.decrypt_logits(dump_ciphertext(ct, INFERENCE_H, session.key_id, KIND_LOGITS), 64)
    # Even with the key id forged, the other secret key decrypts to noise.
    forged = other.decrypt_logits(dump_ciphertext(ct, INFERENCE_H, other.key_id, KIND_LOGITS), 64)
    assert np.max(np.abs(forged - values)) > 1e3


def test_constructor_checks() -> None:
    with pytest.raises(TypeError):
        SessionSecret("params", STEPS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rotation steps"):
        SessionSecret(INFERENCE_H, [5000])
    with pytest.raises(ValueError, match="NaN"):
        SessionSecret(INFERENCE_H, STEPS).encrypt_query(np.array([np.nan]))
