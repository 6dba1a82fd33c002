"""EncryptedNPLM: decrypt(circuit(enc(x))) vs models.nplm.server_logits on a small model (both modes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ckks.nplm_circuit import INFERENCE, INFERENCE_H, EncryptedNPLM, circuit_weights
from ckks.session_keys import (
    KIND_BIAS,
    KIND_LOGITS,
    KIND_QUERY,
    SessionEvalKeys,
    SessionFormatError,
    SessionSecret,
    dump_ciphertext,
)
from ckks.session_keys import load_ciphertext as load_ct
from models.nplm import NPLM, ModelConfig, client_features, export_weights, server_logits

TOL = 1e-3  # absolute logit error; measured ~1e-5 (x mode) on these weights


def _weights(
    vocab: int = 512, context: int = 4, embed: int = 16, hidden: int = 64, gain: float = 3.0
) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab, context=context, embed_dim=embed, hidden=hidden)
    w = export_weights(NPLM(cfg))
    for key in ("embedding", "w1", "w2"):  # ~ the spread of a trained model's logits (std ~1)
        w[key] = w[key] * gain
    w["b1"] = np.full_like(w["b1"], 0.05)
    w["b2"] = np.linspace(-0.5, 0.5, vocab).astype(np.float32)
    return w


@pytest.fixture(scope="module")
def small() -> dict:
    return _weights()


def _run(circuit: EncryptedNPLM, weights: dict, ids: np.ndarray, bias: np.ndarray | None = None) -> tuple:
    session = SessionSecret.generate(circuit.params, circuit.rotation_steps, circuit.rotation_level)
    keys = SessionEvalKeys.from_bytes(
        session.eval_keys_bytes(),
        circuit.params,
        circuit.context,
        circuit.rotation_steps,
        rotation_level=circuit.rotation_level,
    )
    x = client_features(weights, ids)
    features = x if circuit.mode == "x" else x @ weights["w1"].T.astype(np.float64) + weights["b1"]
    query = load_ct(
        session.encrypt_query(circuit.query_slots(features)),
        circuit.context,
        circuit.params,
        KIND_QUERY,
        key_id=keys.key_id,
    )
    bias_ct = None
    if bias is not None:
        blob = session.encrypt_bias(np.tile(bias, circuit.tools.slots // bias.size), circuit.output_scale)
        bias_ct = load_ct(
            blob,
            circuit.tail_context,
            circuit.params,
            KIND_BIAS,
            key_id=keys.key_id,
            parms_id=circuit.output_parms_id,
        )
    z = circuit.evaluate(query, bias_ct, galois_keys=keys.galois_keys, relin_keys=keys.relin_keys)
    logits = session.decrypt_logits(
        dump_ciphertext(z, circuit.params, keys.key_id, KIND_LOGITS), circuit.vocab_size
    )
    return logits, server_logits(weights, x, bias)


@pytest.mark.parametrize("mode", ["x", "h"])
def test_encrypted_logits_match_plaintext(small: dict, mode: str) -> None:
    circuit = EncryptedNPLM(small, mode=mode)
    assert circuit.params is (INFERENCE if mode == "x" else INFERENCE_H)
    rng = np.random.default_rng(1)
    for _ in range(2):
        got, want = _run(circuit, small, rng.integers(0, 512, size=4))
        np.testing.assert_allclose(got, want, atol=TOL)
        assert set(np.argsort(-got)[:3]) == set(np.argsort(-want)[:3])


@pytest.mark.parametrize("mode", ["x", "h"])
def test_personal_bias_is_added(small: dict, mode: str) -> None:
    circuit = EncryptedNPLM(small, mode=mode)
    bias = np.random.default_rng(2).normal(size=512)
    got, want = _run(circuit, small, np.array([1, 2, 3, 4]), bias)
    np.testing.assert_allclose(got, want, atol=TOL)


@pytest.mark.parametrize("mode", ["x", "h"])
def test_a_vocabulary_that_is_not_a_power_of_two_is_served(mode: str) -> None:
    # Prepare: a small corpus's vocabulary, V = 40 (W2 is padded to 64 rows inside the circuit)
    weights = _weights(vocab=40)
    circuit = EncryptedNPLM(weights, mode=mode)
    bias = np.random.default_rng(3).normal(size=40)
    # Execute
    got, want = _run(circuit, weights, np.array([1, 2, 3, 4]), bias)
    # Assert: the public shape is the real V, and the first V slots are the logits
    assert circuit.vocab_size == 40 and got.shape == (40,)
    np.testing.assert_allclose(got, want, atol=TOL)


def test_rotation_steps(small: dict) -> None:
    # W1 64x64 -> 32 blocks (radix-4 sums: steps 64, 256, 1024), pairs so no step 2; W2 -> 1, 2, 8 (baby 8).
    assert EncryptedNPLM(small).rotation_steps == [0, 1, 2, 16, 64, 256, 1024]
    assert EncryptedNPLM(small, mode="h").rotation_steps == [0, 1, 2, 16]


def test_h_mode_keys_live_in_the_tail_chain(small: dict) -> None:
    # Mode h rotates after the activation's rescale: its Galois keys are made for the chain without the
    # last data prime, so the same rotation steps cost much less than keys for the full chain
    circuit = EncryptedNPLM(small, mode="h")
    assert circuit.rotation_level == 1
    tail_primes = [m.value() for m in circuit.tail_context.key_context_data().parms().coeff_modulus()]
    full_primes = [m.value() for m in circuit.context.key_context_data().parms().coeff_modulus()]
    assert tail_primes == full_primes[:2] + full_primes[3:]
    tail_keys = SessionSecret.generate(circuit.params, circuit.rotation_steps, 1).eval_keys_bytes()
    full_keys = SessionSecret.generate(circuit.params, circuit.rotation_steps, 0).eval_keys_bytes()
    assert len(tail_keys) < 0.7 * len(full_keys)
    # keys made for the other level are refused with a message, not loaded into the wrong chain
    with pytest.raises(SessionFormatError, match="rotation level 0"):
        SessionEvalKeys.from_bytes(full_keys, circuit.params, circuit.context, rotation_level=1)


def test_rejects_wrong_inputs(small: dict) -> None:
    circuit = EncryptedNPLM(small)
    session = SessionSecret.generate(circuit.params, circuit.rotation_steps)
    keys = SessionEvalKeys.from_bytes(session.eval_keys_bytes(), circuit.params, circuit.context)
    blob = session.encrypt_bias(np.zeros(circuit.tools.slots), circuit.output_scale)
    low = load_ct(blob, circuit.context, circuit.params, KIND_BIAS)
    with pytest.raises(ValueError, match="wrong level"):
        circuit.evaluate(low, galois_keys=keys.galois_keys, relin_keys=keys.relin_keys)
    with pytest.raises(ValueError, match="expects a"):
        circuit.query_slots(np.zeros(3))
    with pytest.raises(ValueError, match="data primes"):
        EncryptedNPLM(small, params=INFERENCE_H, mode="x")


@pytest.mark.slow
def test_default_size_model_top3() -> None:
    weights = _weights(vocab=4096, embed=64, hidden=256)
    circuit = EncryptedNPLM(weights)
    rng = np.random.default_rng(3)
    got, want = _run(circuit, weights, rng.integers(0, 4096, size=4))
    np.testing.assert_allclose(got, want, atol=TOL)


@pytest.mark.parametrize("kind", ["lstm", "mlp"])
def test_head_only_circuit_serves_an_encoder_model(kind: str) -> None:
    # Mode h needs the head alone (w2, b2, beta): the server never gets the encoder; the device's h comes
    # from the public encoder arrays, and the decrypted logits equal the numpy head on the same h.
    from models.config import ModelConfig as Config
    from models.factory import build_model, encode, export_weights, split_weights
    from models.head import head_logits

    torch.manual_seed(0)
    cfg = Config(vocab_size=512, context=6, embed_dim=16, hidden=64, kind=kind, width=32, layers=1)
    weights = export_weights(build_model(cfg))
    weights["w2"] = weights["w2"] * 3.0  # ~ a trained model's logit spread
    encoder, head = split_weights(weights, cfg)
    assert set(circuit_weights(weights, "h")) == set(head)  # what the server hands its HE workers
    with pytest.raises(ValueError, match="lack w1, b1.*NPLM release"):
        circuit_weights(weights, "x")
    circuit = EncryptedNPLM(head, mode="h")
    with pytest.raises(KeyError, match="w1"):
        EncryptedNPLM(head, mode="x")
    session = SessionSecret.generate(circuit.params, circuit.rotation_steps, circuit.rotation_level)
    keys = SessionEvalKeys.from_bytes(
        session.eval_keys_bytes(), circuit.params, circuit.context, rotation_level=circuit.rotation_level
    )
    h = encode(cfg, encoder, np.array([1, 1, 5, 9, 42, 7]))
    query = load_ct(
        session.encrypt_query(circuit.query_slots(h)),
        circuit.context,
        circuit.params,
        KIND_QUERY,
        key_id=keys.key_id,
    )
    z = circuit.evaluate(query, galois_keys=keys.galois_keys, relin_keys=keys.relin_keys)
    got = session.decrypt_logits(dump_ciphertext(z, circuit.params, keys.key_id, KIND_LOGITS), 512)
    want = head_logits(head, h)
    np.testing.assert_allclose(got, want, atol=TOL)
    assert np.ptp(want) > 1.0  # the comparison is not between two flat vectors
