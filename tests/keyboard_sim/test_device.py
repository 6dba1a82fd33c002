"""Simulated devices: persistent Opacus engine, deltas, ledger; the client app's clip and noise share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from keyboard_sim.client_app import add_noise_share, clip_update, encode_update
from keyboard_sim.device import Device, LocalDPConfig, seed_for
from models.data import Examples
from models.factory import trainable_keys
from models.nplm import NPLM, ModelConfig, export_weights

TINY = ModelConfig(vocab_size=64, context=4, embed_dim=8, hidden=16, dropout=0.0)


def _examples(n: int, seed: int = 0) -> Examples:
    rng = np.random.default_rng(seed)
    return Examples(rng.integers(0, 64, (n, 4)), rng.integers(2, 64, n))


def _global(seed: int = 0) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    return export_weights(NPLM(TINY))


def test_engine_persists_across_rounds_and_epsilon_accumulates() -> None:
    # Prepare
    device = Device("u1", _examples(40), TINY, LocalDPConfig(batch_size=8, max_local_steps=3))
    # Execute
    first = device.train(_global(0), server_round=1, seed=1)
    module, engine = device._gsm, device.privacy_engine
    second = device.train(_global(1), server_round=4, seed=2)
    # Assert: same wrapped module and engine (make_private ran once), one accountant over both rounds
    assert device._gsm is module and device.privacy_engine is engine
    assert engine.accountant.history == [(1.0, pytest.approx(0.2), 6)]  # 3 + 3 steps, p = 1 / ceil(40/8)
    assert 0 < first.example_epsilon < second.example_epsilon
    assert [e["round"] for e in device.ledger] == [1, 4]


def test_delta_is_local_minus_global_for_trainable_keys() -> None:
    w = _global()
    device = Device(
        "u1", _examples(30), TINY, LocalDPConfig(batch_size=10, max_local_steps=2, trainable=("b2",))
    )
    result = device.train(w, server_round=1, seed=0)
    assert set(result.delta) == {"b2"}
    local = device._export()
    np.testing.assert_allclose(result.delta["b2"], local["b2"] - w["b2"], atol=1e-7)
    np.testing.assert_array_equal(local["w2"], w["w2"])  # frozen
    assert np.abs(result.delta["b2"]).sum() > 0


def test_head_only_device_trains_on_cached_features_like_the_whole_model() -> None:
    # Prepare: the head's arrays trainable, once on cached features, once through the whole model
    w = _global()
    dp = LocalDPConfig(batch_size=10, max_local_steps=3, trainable=("w2", "b2"))
    cached = Device("u", _examples(30), TINY, dp)
    whole = Device("u", _examples(30), TINY, dp)
    whole.head_only = False  # the generic path: forward and backward through the encoder
    # Execute
    a = cached.train(w, server_round=1, seed=3)
    b = whole.train(w, server_round=1, seed=3)
    # Assert: the same DP-SGD step (same sampling, clipping and noise), the same update
    assert cached.head_only and not whole.head_only
    for key in ("w2", "b2"):
        np.testing.assert_allclose(a.delta[key], b.delta[key], atol=1e-5)
    assert np.abs(a.delta["w2"]).sum() > 0
    assert a.example_epsilon == pytest.approx(b.example_epsilon)


def test_a_lora_device_takes_the_exact_sgd_step_on_b_over_projected_features() -> None:
    # Prepare: rank-2 adapter, B = 0; every example in the (full) batch, no noise, no clipping in reach
    from keyboard_sim.device import head_features
    from models.lora import LORA_A, LORA_B, lora_arrays, merge_lora

    w = {**_global(), **lora_arrays(2, TINY.hidden, TINY.vocab_size, seed=0)}
    ex = _examples(20)
    dp = LocalDPConfig(
        batch_size=20, max_local_steps=1, noise_multiplier=0.0, max_grad_norm=1e6, lr=0.5, trainable=(LORA_B,)
    )
    device = Device("u", ex, TINY, dp)
    # Execute
    result = device.train(w, server_round=1, seed=0)
    # Assert: only B moved, by -lr * mean_i (softmax(W2 a_i + b2) - onehot(y_i)) (A a_i)^T
    assert device.head_only and set(result.delta) == {LORA_B} and result.delta[LORA_B].shape == (64, 2)
    a = head_features(TINY, w, ex.x).astype(np.float64)
    logits = a @ w["w2"].T + w["b2"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(ex.y)), ex.y] -= 1.0
    expected = -0.5 * p.T @ (a @ w[LORA_A].T) / len(ex.y)  # (V, r)
    np.testing.assert_allclose(result.delta[LORA_B], expected, rtol=1e-4, atol=1e-6)
    assert np.abs(expected).max() > 1e-3
    # the device's own head with the trained B gives the merged head's logits
    trained = {**w, LORA_B: w[LORA_B] + result.delta[LORA_B]}
    with torch.no_grad():
        got = device._model(torch.from_numpy(a.astype(np.float32))).numpy()
    merged = merge_lora(trained)
    np.testing.assert_allclose(got, a @ merged["w2"].T + merged["b2"], rtol=1e-4, atol=1e-4)


def test_a_lora_device_needs_the_adapter_and_the_head_path() -> None:
    from models.lora import LORA_B

    with pytest.raises(ValueError, match="not arrays of the 'nplm' model"):
        Device("u", _examples(4), TINY, LocalDPConfig(trainable=(LORA_B, "w1")))
    device = Device("u", _examples(4), TINY, LocalDPConfig(trainable=(LORA_B, "b2")))
    with pytest.raises(ValueError, match="sent no adapter arrays"):
        device.train(_global(), server_round=1, seed=0)


def test_same_seed_same_update_and_hooks_mode_works() -> None:
    w = _global()
    a = Device("u", _examples(30), TINY, LocalDPConfig(batch_size=10, max_local_steps=2)).train(
        w, server_round=1, seed=5
    )
    b = Device("u", _examples(30), TINY, LocalDPConfig(batch_size=10, max_local_steps=2)).train(
        w, server_round=1, seed=5
    )
    assert set(a.delta) == set(trainable_keys(TINY))  # trainable=None: every array but beta
    for key in trainable_keys(TINY):
        np.testing.assert_array_equal(a.delta[key], b.delta[key])
    hooks = Device(
        "u", _examples(30), TINY, LocalDPConfig(batch_size=10, max_local_steps=2, grad_sample_mode="hooks")
    )
    assert hooks.train(w, server_round=1, seed=5).steps == 2


def test_state_round_trip_restores_the_ledger() -> None:
    device = Device("u1", _examples(20), TINY, LocalDPConfig(batch_size=5, max_local_steps=2))
    device.train(_global(), server_round=1, seed=0)
    fresh = Device("u1", _examples(20), TINY, LocalDPConfig(batch_size=5, max_local_steps=2))
    fresh.load_state(device.state())
    assert fresh.example_epsilon() == pytest.approx(device.example_epsilon())
    assert fresh.rounds_trained == 1
    with pytest.raises(ValueError, match="belongs to device"):
        Device("u2", _examples(20), TINY, LocalDPConfig()).load_state(device.state())


def test_tiny_device_uses_full_batch() -> None:
    device = Device("u", _examples(3), TINY, LocalDPConfig(batch_size=32, max_local_steps=5))
    result = device.train(_global(), server_round=1, seed=0)
    assert device.sample_rate == 1.0 and result.steps == 1  # one epoch of one full batch


def test_invalid_configs() -> None:
    with pytest.raises(ValueError, match="LocalDPConfig.trainable"):
        Device("u", _examples(4), TINY, LocalDPConfig(trainable=("w3",)))
    with pytest.raises(ValueError, match="LocalDPConfig.trainable"):
        LocalDPConfig(trainable=())
    with pytest.raises(ValueError, match="grad_sample_mode"):
        LocalDPConfig(grad_sample_mode="functorch-ish")
    with pytest.raises(ValueError, match="no training examples"):
        Device("u", Examples.empty(4), TINY, LocalDPConfig())


def test_seed_for_is_stable_and_distinct() -> None:
    assert seed_for(0, 1, 2) == seed_for(0, 1, 2)
    assert len({seed_for(0, r, d) for r in range(20) for d in range(20)}) == 400


# ------------------------------------------------------------------ client app helpers
def test_clip_update_bounds_the_joint_norm() -> None:
    delta = {"a": np.array([3.0, 0.0], np.float32), "b": np.array([4.0], np.float32)}  # ||delta|| = 5
    clipped, norm = clip_update(delta, 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"], [0.8], rtol=1e-6)
    unchanged, _ = clip_update(delta, 10.0)
    np.testing.assert_array_equal(unchanged["a"], delta["a"])


def test_noise_shares_sum_to_sigma_c() -> None:
    # m devices each add N(0, sigma^2 C^2 / m): the sum has std sigma * C
    sigma, clip, m = 0.7, 0.5, 16
    zero = {"w": np.zeros(20000, np.float32)}
    rng = np.random.default_rng(0)
    total = sum(add_noise_share(zero, sigma * clip / np.sqrt(m), rng)["w"] for _ in range(m))
    assert np.std(total) == pytest.approx(sigma * clip, rel=0.03)


def test_plain_codec_round_trips() -> None:
    delta = {"b2": np.arange(4, dtype=np.float32)}
    record = encode_update(delta, codec="plain")
    np.testing.assert_array_equal(record["b2"].numpy(), delta["b2"])
    with pytest.raises(ValueError, match="codec"):
        encode_update(delta, codec="rot13")


def test_he_codec_is_registered_lazily_by_the_device_side() -> None:
    # ckks.codec no longer registers itself (ckks imports no keyboard_sim); the client app does it on use
    delta = {"b2": np.arange(4, dtype=np.float32)}
    with pytest.raises(ValueError, match="round config"):
        encode_update(delta, codec="he")  # HECodec reached: it asks for the public context


def test_an_lstm_device_trains_its_default_arrays_only() -> None:
    # Prepare: a tiny LSTM model (models.factory), its bias-like default arrays
    from models.factory import build_model, default_trainable
    from models.factory import export_weights as export_any

    lstm = ModelConfig(vocab_size=64, context=4, embed_dim=8, hidden=16, kind="lstm", width=16, layers=1)
    torch.manual_seed(0)
    w = export_any(build_model(lstm))
    keys = default_trainable(lstm)
    device = Device("u", _examples(30), lstm, LocalDPConfig(batch_size=10, max_local_steps=2, trainable=keys))
    # Execute
    result = device.train(w, server_round=1, seed=0)
    # Assert: only those arrays move, all of them do; the recurrence stays frozen
    assert set(result.delta) == set(keys) and all(np.abs(d).sum() > 0 for d in result.delta.values())
    frozen = "enc.lstm.weight_hh_l0"
    np.testing.assert_array_equal(export_any(device._model)[frozen], w[frozen])
    with pytest.raises(ValueError, match="not arrays of the 'lstm' model"):
        Device("u", _examples(4), lstm, LocalDPConfig(trainable=("b1", "b2")))


def test_head_features_match_the_encoder_for_an_lstm() -> None:
    # Prepare: a small LSTM model (the fused nn.LSTM path) and its numpy reference encode
    from keyboard_sim.device import head_features
    from models.factory import build_model, encode, split_weights
    from models.factory import export_weights as export

    config = ModelConfig(vocab_size=64, context=5, embed_dim=8, hidden=16, kind="lstm", width=12, layers=1)
    x = np.random.default_rng(0).integers(0, 64, (50, 5))
    for seed in (0, 1):  # the second call reuses the process's encoder module with other arrays
        torch.manual_seed(seed)
        weights = export(build_model(config))
        # Execute
        features = head_features(config, weights, x)
        # Assert: a = h * (h + beta) of the Opacus DPLSTM encoder's h
        h = encode(config, split_weights(weights, config)[0], x)
        np.testing.assert_allclose(features, h * (h + config.beta), atol=1e-5)


def test_example_epsilon_on_fewer_orders_is_a_close_upper_bound() -> None:
    device = Device("u1", _examples(40), TINY, LocalDPConfig(batch_size=8, max_local_steps=20))
    device.train(_global(0), server_round=1, seed=1)
    full = device.privacy_engine.accountant.get_epsilon(delta=device.dp.delta)  # Opacus' 151 orders
    assert full <= device.example_epsilon() <= full * 1.02


def test_example_epsilon_equals_the_opacus_accountant_on_the_same_orders() -> None:
    # Prepare: two rounds at different step counts, and a device of another sample rate (memoised RDP)
    from federation import EXAMPLE_RDP_ORDERS

    for n, steps in ((40, (3, 7)), (100, (5, 2))):
        device = Device("u1", _examples(n), TINY, LocalDPConfig(batch_size=8, max_local_steps=50))
        for r, cap in enumerate(steps, start=1):
            # Execute
            device.train(_global(0), server_round=r, seed=r, max_local_steps=cap)
            # Assert: the memoised per-step RDP gives Opacus' own epsilon on the same orders
            expected = device.privacy_engine.accountant.get_epsilon(
                delta=device.dp.delta, alphas=list(EXAMPLE_RDP_ORDERS)
            )
            assert device.example_epsilon() == pytest.approx(expected, rel=1e-12)


def test_the_roll_call_hands_a_worker_the_public_context() -> None:
    # Prepare: the enrolment config the server's roll call sends with aggregation="he"
    import hashlib

    from flwr.app import ConfigRecord

    from ckks.codec import CONFIG_CONTEXT, CONFIG_CONTEXT_SHA, load_public_context
    from ckks.keys import SecretContext
    from ckks.params import AGGREGATION
    from keyboard_sim.client_app import _warm_up

    blob = SecretContext.generate(AGGREGATION).public.to_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    # Execute
    _warm_up(ConfigRecord({"codec": "he", CONFIG_CONTEXT: blob, CONFIG_CONTEXT_SHA: digest}))
    # Assert: a round config naming only the digest now finds the context already loaded
    assert load_public_context({CONFIG_CONTEXT_SHA: digest}).params == AGGREGATION
