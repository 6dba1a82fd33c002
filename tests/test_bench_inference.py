"""The inference benchmark command on a small release: one JSON object with the issue's fields."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIELDS = {
    "encrypted_p50_ms",
    "encrypted_p95_ms",
    "plaintext_p50_ms",
    "tenseal_mm_p50_ms",
    "speedup_vs_tenseal_mm",
    "query_bytes",
    "response_bytes",
    "eval_key_bytes",
    "top3_agreement",
    "vocab_size",
}


def test_bench_inference_prints_both_modes(small_release: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "hushtype.cli",
        "bench",
        "inference",
        "--release",
        str(small_release),
        "--queries",
        "3",
        "--no-personalization",
        "--json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert FIELDS <= set(result)
    assert result["mode"].startswith("h") and result["x_mode"]["query_bytes"] > result["query_bytes"]
    assert result["top3_agreement"] >= 0.99 and result["vocab_size"] == 64
    assert result["encrypted_p50_ms"] > result["plaintext_p50_ms"]


@pytest.mark.slow
def test_bench_inference_on_an_encoder_release(tmp_path: Path) -> None:
    # an LSTM release: mode h only, the same-run ratio to today's NPLM head is reported
    import torch

    from hushtype.bench_inference_micro import measure_encoder_model
    from models.config import ModelConfig
    from models.factory import build_model, export_weights

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=4096, context=8, kind="lstm", width=64, layers=1)
    weights = export_weights(build_model(cfg))
    weights["w2"] = weights["w2"] * 4.0
    result = measure_encoder_model(weights, cfg, queries=3)
    assert result["top3_agreement"] >= 0.99 and result["previous_head_encrypted_p50_ms"] > 0
    assert 0.5 < result["encrypted_ratio_to_previous_head"] < 2.0  # same head shape, same HE cost
