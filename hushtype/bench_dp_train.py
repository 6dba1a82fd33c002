"""``bench dp-train``: what on-device DP-SGD costs, next to plain SGD, in one process.

Trains the same NPLM on the same examples for the same number of steps twice: plain SGD
(``torch.optim.SGD``, uniform minibatches of ``batch_size``) and Opacus DP-SGD (Poisson sampling
with expected batch ``batch_size``, per-example clipping, Gaussian noise; ghost clipping by default),
and reports samples per second of each and their ratio, plus the example-level epsilon the DP run
spent. Data: the first train users of the default corpus, or synthetic ids when ``synthetic``.

    python -m hushtype.bench_dp_train            # prints one JSON object
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import torch
from torch import nn

from keyboard_sim.device import Device, LocalDPConfig
from models.data import Examples
from models.nplm import NPLM, ModelConfig, export_weights

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


def measure_dp_train(
    *,
    steps: int = 30,
    batch_size: int = 32,
    noise_multiplier: float = 1.0,
    max_grad_norm: float = 1.0,
    grad_sample_mode: str = "ghost",
    model_config: ModelConfig | None = None,
    examples: int = 4096,
    synthetic: bool = False,
    threads: int = 1,
    seed: int = 0,
) -> dict:
    """Time ``steps`` steps of plain SGD and of DP-SGD on the same model and data; a JSON-ready dict."""
    model_config = model_config or ModelConfig()
    torch.set_num_threads(threads)
    data = _examples(synthetic, examples, model_config, seed)
    torch.manual_seed(seed)
    weights = export_weights(NPLM(model_config))
    params = sum(v.size for k, v in weights.items() if k != "beta")

    # plain SGD: same model, same data, uniform batches of batch_size
    torch.manual_seed(seed)
    model = NPLM(model_config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    x_all, y_all = torch.from_numpy(data.x), torch.from_numpy(data.y)
    model.train()
    seen, start = 0, time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(data), (batch_size,), generator=torch.Generator().manual_seed(seed + step))
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x_all[idx]), y_all[idx]).backward()
        optimizer.step()
        seen += batch_size
    plain_seconds = time.perf_counter() - start
    plain_rate = seen / plain_seconds

    # DP-SGD: the device trainer itself (Opacus, Poisson sampling, persistent engine)
    dp = LocalDPConfig(
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        batch_size=batch_size,
        lr=0.1,
        local_epochs=1e9,
        max_local_steps=steps,
        grad_sample_mode=grad_sample_mode,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        device = Device("bench", data, model_config, dp)
        device.train(weights, server_round=0, seed=seed)  # warm-up: make_private, first allocations
        start = time.perf_counter()
        result = device.train(weights, server_round=1, seed=seed + 1)
        dp_seconds = time.perf_counter() - start
    dp_rate = result.steps * batch_size / dp_seconds  # expected samples per Poisson batch
    return {
        "dp_samples_per_s": dp_rate,
        "plain_samples_per_s": plain_rate,
        "ratio": plain_rate / dp_rate,  # how many times slower DP-SGD is
        "epsilon": device.example_epsilon(),  # example-level, both timed runs and the warm-up
        "delta": dp.delta,
        "batch_size": batch_size,
        "params": int(params),
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
