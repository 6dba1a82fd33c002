"""``bench dp-train``: what on-device DP-SGD costs, next to plain SGD, in one process.

Two configurations of the same model kind (``FederationConfig().model`` unless told otherwise),
each timed twice on the same examples for the same number of steps:

- **shipped device configuration** (``ratio``): the arrays federated devices actually train by
  default (``keyboard_sim.federation.trainable_arrays``: the model's bias-like arrays, DP-BiTFiT),
  the rest frozen, exactly as ``keyboard_sim.device.Device`` builds it;
- **full model** (``ratio_full_model``): every array trainable.

Plain SGD (``torch.optim.SGD``, uniform minibatches of ``batch_size``, the same arrays trainable)
against Opacus DP-SGD through the device trainer itself (Poisson sampling with expected batch
``batch_size``, per-example clipping, Gaussian noise; ghost clipping by default). A ratio is plain
samples/s over DP samples/s: how many times slower DP-SGD is. Data: the first train users of the
default corpus, or synthetic ids when ``synthetic``.

    hushtype bench dp-train --json            # prints one JSON object
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings

import numpy as np
import torch
from torch import nn

from federation.config import FederationConfig
from keyboard_sim.device import Device, LocalDPConfig
from keyboard_sim.federation import trainable_arrays
from models.config import ModelConfig, shipped_model_config
from models.data import Examples
from models.factory import build_model, export_weights, param_names, trainable_keys

__all__ = ["measure_dp_train"]


def _examples(synthetic: bool, n: int, model_config: ModelConfig, seed: int) -> Examples:
    if synthetic:
        rng = np.random.default_rng(seed)
        return Examples(
            rng.integers(0, model_config.vocab_size, (n, model_config.context)),
            rng.integers(2, model_config.vocab_size, n),
        )
    from keyboard_sim.dataset import DataConfig, build_federated_data

    data = build_federated_data(DataConfig(vocab_size=model_config.vocab_size, context=model_config.context))
    train = data.train
    return Examples(train.x[:n], train.y[:n])


def _plain_rate(
    model_config: ModelConfig, trainable: tuple[str, ...], data: Examples, steps: int, batch: int, seed: int
) -> float:
    """Samples/s of plain SGD on ``trainable`` (the rest frozen), uniform batches of ``batch``."""
    torch.manual_seed(seed)
    model = build_model(model_config)
    for key, name in param_names(model).items():
        model.get_parameter(name).requires_grad_(key in trainable)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    x_all, y_all = torch.from_numpy(data.x), torch.from_numpy(data.y)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x_all[idx]), y_all[idx]).backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def _dp_rate(
    model_config: ModelConfig, data: Examples, weights: dict[str, np.ndarray], dp: LocalDPConfig, seed: int
) -> tuple[float, Device]:
    """Samples/s of the device's DP-SGD round (after one warm-up round), and the device."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        device = Device("bench", data, model_config, dp)
        device.train(weights, server_round=0, seed=seed)  # warm-up: make_private, first allocations
        start = time.perf_counter()
        result = device.train(weights, server_round=1, seed=seed + 1)
        seconds = time.perf_counter() - start
    return result.steps * dp.batch_size / seconds, device  # expected samples per Poisson batch


def measure_dp_train(
    *,
    model: str | None = None,
    steps: int = 30,
    batch_size: int = 32,
    noise_multiplier: float = 1.0,
    max_grad_norm: float = 1.0,
    grad_sample_mode: str = "ghost",
    examples: int = 4096,
    synthetic: bool = False,
    threads: int = 1,
    seed: int = 0,
    model_config: ModelConfig | None = None,
) -> dict:
    """Time plain SGD and DP-SGD on the shipped device configuration and on the full model; JSON-ready."""
    federation = FederationConfig() if model is None else FederationConfig(model=model)
    model_config = model_config or dataclasses.replace(
        shipped_model_config(federation.vocab_size, federation.model),
        embed_dim=federation.embed_dim,
        hidden=federation.hidden,
    )
    torch.set_num_threads(threads)
    data = _examples(synthetic, examples, model_config, seed)
    torch.manual_seed(seed)
    weights = export_weights(build_model(model_config))
    shipped = trainable_arrays(federation, model_config)
    runs = {"ratio": ("", shipped), "ratio_full_model": ("full_model_", trainable_keys(model_config))}
    result: dict = {}
    device = None
    for ratio_key, (prefix, trainable) in runs.items():
        dp = LocalDPConfig(
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            batch_size=batch_size,
            lr=0.1,
            local_epochs=1e9,
            max_local_steps=steps,
            grad_sample_mode=grad_sample_mode,
            trainable=trainable,
        )
        plain = _plain_rate(model_config, trainable, data, steps, batch_size, seed)
        dp_rate, dev = _dp_rate(model_config, data, weights, dp, seed)
        device = device or dev
        result.update(
            {
                f"{prefix}dp_samples_per_s": dp_rate,
                f"{prefix}plain_samples_per_s": plain,
                ratio_key: plain / dp_rate,
                f"{prefix}trainable_params": int(sum(weights[k].size for k in trainable)),
            }
        )
    assert device is not None
    return {
        **result,
        "trainable": list(shipped),
        "epsilon": device.example_epsilon(),  # example-level, the shipped run: warm-up + timed round
        "delta": device.dp.delta,
        "batch_size": batch_size,
        "params": int(sum(v.size for k, v in weights.items() if k != "beta")),
        "steps": steps,
        "noise_multiplier": noise_multiplier,
        "max_grad_norm": max_grad_norm,
        "sample_rate": device.sample_rate,
        "grad_sample_mode": grad_sample_mode,
        "threads": threads,
        "examples": len(data),
        "synthetic": synthetic,
        "model": model_config.to_dict(),
    }


if __name__ == "__main__":
    print(json.dumps(measure_dp_train()))
