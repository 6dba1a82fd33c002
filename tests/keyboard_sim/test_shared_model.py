"""No-DP devices of one worker share one module: a device trains exactly as it would on its own."""

from __future__ import annotations

import numpy as np
import torch

from keyboard_sim.device import LocalDPConfig
from keyboard_sim.plain_device import _MODELS as SHARED
from keyboard_sim.plain_device import PlainDevice
from models.config import ModelConfig
from models.data import Examples
from models.factory import build_model, export_weights

LSTM = ModelConfig(
    vocab_size=64, context=8, embed_dim=8, hidden=16, kind="lstm", width=16, layers=1, dropout=0.0
)
DP = LocalDPConfig(batch_size=10, max_local_steps=3, lr=0.1, max_grad_norm=5.0)


def _examples(n: int, seed: int) -> Examples:
    rng = np.random.default_rng(seed)
    return Examples(rng.integers(0, 64, (n, 8)), rng.integers(2, 64, n))


def _global() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return export_weights(build_model(LSTM))


def test_devices_share_a_module_and_train_as_if_alone() -> None:
    # Prepare: device b's update alone (the shared modules cleared), then a and b on one module
    w = _global()
    SHARED.clear()
    alone = PlainDevice("b", _examples(30, 2), LSTM, DP).train(w, server_round=1, seed=5)
    a = PlainDevice("a", _examples(40, 1), LSTM, DP)
    b = PlainDevice("b", _examples(30, 2), LSTM, DP)
    # Execute: a trains first (moving the shared module's arrays and leaving gradients), then b
    a.train(w, server_round=1, seed=4)
    shared = b.train(w, server_round=1, seed=5)
    # Assert: one module, and b's update is bit-identical to the one it made alone
    assert a._model is b._model
    for key, delta in alone.delta.items():
        np.testing.assert_array_equal(shared.delta[key], delta)
    other = PlainDevice("c", _examples(30, 3), LSTM, LocalDPConfig(trainable=("b2",)))
    assert other._model is not a._model  # another trainable set: its own module
