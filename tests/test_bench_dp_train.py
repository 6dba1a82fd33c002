"""The DP-SGD throughput benchmark: the shipped device configuration and the full model, side by side."""

from __future__ import annotations

from hushtype.bench_dp_train import measure_dp_train
from models.config import ModelConfig


def test_dp_train_reports_shipped_device_configuration_and_full_model() -> None:
    tiny = ModelConfig(vocab_size=64, context=4, embed_dim=8, hidden=16, kind="nplm")
    result = measure_dp_train(model="nplm", steps=3, examples=256, synthetic=True, model_config=tiny)
    assert result["trainable"] == ["b2"]  # FederationConfig's default: the output bias
    assert result["trainable_params"] == 64
    assert result["full_model_trainable_params"] == result["params"] == 64 * 8 + 16 * 32 + 16 + 64 * 16 + 64
    for key in ("ratio", "ratio_full_model"):
        assert result[key] > 0
    assert result["ratio"] == result["plain_samples_per_s"] / result["dp_samples_per_s"]
    assert 0 < result["epsilon"] < float("inf")
