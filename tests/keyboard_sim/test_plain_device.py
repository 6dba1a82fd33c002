"""The no-DP device: plain torch local training of the named arrays, the LSTM fused, seeded."""

from __future__ import annotations

import math

import numpy as np
import torch

from keyboard_sim.client_app import _device_class
from keyboard_sim.device import Device, LocalDPConfig
from keyboard_sim.federation import FederationConfig
from keyboard_sim.plain_device import PlainDevice, local_steps
from models.config import ModelConfig
from models.data import Examples
from models.factory import build_model, export_weights, trainable_keys
from models.fused import fuse_lstm

LSTM = ModelConfig(
    vocab_size=64, context=8, embed_dim=8, hidden=16, kind="lstm", width=16, layers=1, dropout=0.0
)


def _examples(n: int) -> Examples:
    rng = np.random.default_rng(0)
    return Examples(rng.integers(0, 64, (n, 8)), rng.integers(2, 64, n))


def _global() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return export_weights(build_model(LSTM))


def test_fused_lstm_computes_the_same_logits() -> None:
    torch.manual_seed(0)
    model = build_model(LSTM).eval()
    x = torch.from_numpy(_examples(5).x)
    before = model(x).detach()
    after = fuse_lstm(model)(x).detach()
    assert isinstance(model.encoder.lstm, torch.nn.LSTM)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_plain_device_trains_every_named_array_and_repeats_by_seed() -> None:
    # Prepare: every array of the LSTM trainable, 3 steps of batch 10
    w = _global()
    dp = LocalDPConfig(batch_size=10, max_local_steps=3, lr=0.1, max_grad_norm=5.0)
    device = PlainDevice("u", _examples(40), LSTM, dp)
    # Execute: the same first round on the same device twice (a fresh copy), once more with another seed
    first = device.train(w, server_round=1, seed=7)
    again = PlainDevice("u", _examples(40), LSTM, dp).train(w, server_round=1, seed=7)
    other = PlainDevice("u", _examples(40), LSTM, dp).train(w, server_round=1, seed=8)
    device.train(w, server_round=2, seed=7)
    device.train(w, server_round=3, seed=7)
    # Assert: every array moved, the same seed repeats exactly, another seed differs; no DP: epsilon inf
    assert set(first.delta) == set(trainable_keys(LSTM)) and first.steps == 3
    assert all(np.abs(d).max() > 0 for d in first.delta.values())
    for key in first.delta:
        np.testing.assert_array_equal(first.delta[key], again.delta[key])
    assert np.abs(first.delta["w2"] - other.delta["w2"]).max() > 0
    assert math.isinf(first.example_epsilon) and device.rounds_trained == 3
    assert first.num_examples == 30  # 3 batches of 10 of its 40 windows: the mean's weight


def test_plain_device_leaves_frozen_arrays() -> None:
    dp = LocalDPConfig(batch_size=10, max_local_steps=2, lr=0.1, trainable=("b2",))
    result = PlainDevice("u", _examples(30), LSTM, dp).train(_global(), server_round=1, seed=0)
    assert set(result.delta) == {"b2"} and np.abs(result.delta["b2"]).max() > 0


def test_steps_and_which_device_runs() -> None:
    assert local_steps(40, 10, 1.0, None) == 4 and local_steps(40, 10, 2.0, 5) == 5
    assert local_steps(5, 32, 0.1, None) == 1
    assert _device_class(FederationConfig(example_noise_multiplier=0.0)) is PlainDevice
    assert _device_class(FederationConfig()) is Device


def test_mimelite_round_steps_with_the_frozen_state_and_returns_its_statistics() -> None:
    # Prepare: MimeLite's first frozen state (Adam's first step: lr * g / |g|), b2 trained alone, 2 steps
    from federation.mime import MimeState

    w = _global()
    dp = LocalDPConfig(batch_size=40, local_epochs=2, lr=0.01, max_grad_norm=1e6, trainable=("b2",))
    device = PlainDevice("u", _examples(40), LSTM, dp)
    frozen = MimeState().frozen({"b2": w["b2"]})
    # Execute
    result = device.train(w, server_round=1, seed=0, frozen=frozen)
    plain = device.train(w, server_round=2, seed=0)
    # Assert: the whole batch twice, so the first step moves every coordinate with a gradient by lr;
    # the statistics are the steps' mean g and g^2 (g^2 >= g^2 of the mean); plain SGD sends none
    g, g2 = result.stats["g/b2"], result.stats["g2/b2"]
    assert g.shape == w["b2"].shape and np.all(g2 >= g * g - 1e-12) and plain.stats == {}
    assert np.abs(result.delta["b2"]).max() <= 2 * 0.01 + 1e-6 and np.abs(result.delta["b2"]).max() > 0.01


def test_rounds_walk_through_the_devices_windows_and_the_ledger_keeps_the_place() -> None:
    # Prepare: 40 windows, rounds of 3 batches of 10 (30 windows: fewer than the device holds)
    w = _global()
    dp = LocalDPConfig(batch_size=10, max_local_steps=3, lr=0.1, max_grad_norm=5.0)
    device = PlainDevice("u", _examples(40), LSTM, dp)
    gen = torch.Generator().manual_seed(0)
    # Execute: the windows rounds 1, 2 and 3 would train
    round_1 = torch.cat(device._round_batches(3, gen))
    first = device.train(w, server_round=1, seed=1)
    round_2 = torch.cat(device._round_batches(3, gen))
    restarted = PlainDevice("u", _examples(40), LSTM, dp)  # a worker that lost the device: its saved state
    restarted.load_state(device.state())
    second = device.train(w, server_round=2, seed=2)
    round_3 = torch.cat(device._round_batches(3, gen))
    # Assert: 30 distinct windows, then the 10 left (one batch: the pass ends), then the pass starts over
    assert len(set(round_1.tolist())) == 30 and (first.num_examples, first.steps) == (30, 3)
    assert sorted(round_1.tolist() + round_2.tolist()) == list(range(40))
    assert (second.num_examples, second.steps) == (10, 1)
    assert set(round_3.tolist()) == set(round_1.tolist())
    assert set(torch.cat(restarted._round_batches(3, gen)).tolist()) == set(round_2.tolist())
    # a device with fewer windows than the round's batches trains all of them, once a pass
    small = PlainDevice("s", _examples(25), LSTM, dp)
    assert sorted(torch.cat(small._round_batches(3, gen)).tolist()) == list(range(25))
