"""The public example-level epsilon bound: above every real device's own Opacus epsilon, reached by one."""

from __future__ import annotations

import math

import numpy as np
import torch

from federation import FederationConfig
from keyboard_sim.device import Device, LocalDPConfig
from models.data import Examples
from models.nplm import NPLM, ModelConfig, export_weights
from server.example_accounting import example_epsilon_bound

TINY = ModelConfig(vocab_size=64, context=4, embed_dim=8, hidden=16, dropout=0.0)
CONFIG = FederationConfig(
    devices=4, devices_per_round=2, batch_size=8, max_local_steps=3, local_epochs=1.0, min_device_examples=8
)


def _device_epsilon(n: int, rounds: int) -> float:
    """A real device's own epsilon (Opacus, its own accountant) after ``rounds`` rounds with n windows."""
    rng = np.random.default_rng(n)
    examples = Examples(rng.integers(0, 64, (n, 4)), rng.integers(2, 64, n))
    dp = LocalDPConfig(
        batch_size=CONFIG.batch_size, max_local_steps=CONFIG.max_local_steps, delta=CONFIG.example_delta
    )
    device = Device("u", examples, TINY, dp)
    torch.manual_seed(0)
    weights = export_weights(NPLM(TINY))
    for r in range(rounds):
        result = device.train(weights, server_round=r + 1, seed=r)
    return result.example_epsilon


def test_bound_covers_devices_of_every_size_and_is_reached() -> None:
    bound = example_epsilon_bound(CONFIG, 2)
    actual = [_device_epsilon(n, 2) for n in (8, 12, 40)]
    assert all(eps <= bound * (1 + 1e-9) for eps in actual), (actual, bound)
    assert max(actual) == bound or math.isclose(
        max(actual), bound, rel_tol=1e-6
    )  # k = 2 batches: p = 1/2, 2 steps a round


def test_bound_grows_with_rounds_and_edges() -> None:
    assert example_epsilon_bound(CONFIG, 0) == 0.0
    assert 0 < example_epsilon_bound(CONFIG, 1) < example_epsilon_bound(CONFIG, 4)
    no_noise = FederationConfig(devices=4, devices_per_round=2, example_noise_multiplier=0.0)
    assert example_epsilon_bound(no_noise, 1) == math.inf
