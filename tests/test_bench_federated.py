"""bench federated's pieces (the no-privacy arm, the gap, the frontier plot) and, slow, the quick bench."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hushtype.bench_federated import (
    PLAIN_DEVICES_PER_ROUND,
    PLAIN_LOCAL_STEPS,
    BenchConfig,
    gap_closed,
    plain_ema,
    plain_fl_config,
    plain_round_windows,
    plot_frontier,
    run_federated_bench,
)
from keyboard_sim.client_app import CLIP_BIT_KEY, add_clip_bit, clip_update
from keyboard_sim.dataset import DataConfig
from keyboard_sim.federation import FederationConfig


def test_plain_arm_has_no_privacy_and_keeps_the_federation() -> None:
    shipped = FederationConfig(devices=40, devices_per_round=8, rounds=3)
    plain = plain_fl_config(shipped)
    assert (plain.noise_multiplier, plain.example_noise_multiplier, plain.clip) == (0.0, 0.0, 0.0)
    assert plain.aggregation == "plain" and not plain.adaptive_clip and plain.trainable == "all"
    assert (plain.devices, plain.devices_per_round, plain.rounds) == (40, 8, 3)


def test_plain_arm_spends_the_central_data_budget_in_short_rounds() -> None:
    # Prepare: 40 devices, half with more windows than K batches, half with fewer
    shipped = FederationConfig(devices=40, devices_per_round=8, rounds=3, eval_max_examples=20000)
    windows = [1000] * 20 + [100] * 20
    k_batches = PLAIN_LOCAL_STEPS * shipped.batch_size  # 256 < 1000
    # drawn by passes: a 1000-window device 4 times a pass (256 windows thrice, then the 232 left), a
    # 100-window one once
    per_device = sum(windows) / (20 * 4 + 20 * 1)
    # Execute
    plain = plain_fl_config(shipped, data_epochs=2.0, device_windows=windows)
    # Assert: K steps a device, rounds = 2 passes of every window / the windows a round trains on
    assert plain.devices_per_round == min(PLAIN_DEVICES_PER_ROUND, 40)
    assert plain.rounds == math.ceil(2.0 * sum(windows) / (plain.devices_per_round * per_device))
    assert plain.max_local_steps == PLAIN_LOCAL_STEPS and plain.server_optimizer == "fedadam"
    assert plain.weighting == "examples"  # each device weighs the windows it trained this round
    assert plain.device_sampling == "passes"  # each window trained once a pass, as centrally
    uniform = (20 * k_batches + 20 * 100) / 40  # the same devices drawn uniformly
    assert plain_round_windows(windows, shipped.batch_size, device_sampling="uniform") == uniform
    by_size = (20 * 1000 * k_batches + 20 * 100 * 100) / sum(windows)  # a 1000-window device 10 times in 11
    assert plain_round_windows(windows, shipped.batch_size, device_sampling="windows") == by_size
    assert plain.server_ema == plain_ema(plain.rounds) and plain.server_lr_schedule == "none"  # the EMA
    assert plain.eval_max_examples == 2000 and plain.checkpoint_every == plain.rounds
    with pytest.raises(ValueError, match="device_windows"):
        plain_fl_config(shipped, data_epochs=2.0)


def test_plain_ema_spans_a_share_of_the_run() -> None:
    assert plain_ema(133) == pytest.approx(0.95, abs=1e-3)  # the measured point (1 epoch, 777 devices)
    assert plain_ema(22) == pytest.approx(1 - 1 / 3.3)  # the quick bench: a short average
    assert plain_ema(4) == 0.0  # too few rounds to average: the last iterate


def test_gap_closed() -> None:
    assert abs(gap_closed(0.11, public=0.10, central=0.12) - 0.5) < 1e-12
    assert gap_closed(0.10, public=0.10, central=0.10) is None


def test_frontier_png(tmp_path: Path) -> None:
    points = [{"epsilon": e, "top1": 0.1 + e / 1000, "top3": 0.2} for e in (1, 2, 4)]
    path = plot_frontier(tmp_path / "f.png", points, {"central": 0.11, "public": 0.1})
    assert path.stat().st_size > 1000


def test_no_clip_and_the_clip_bit() -> None:
    delta = {"b": np.array([3.0, 4.0], np.float32)}
    same, norm = clip_update(delta, 0.0)  # clip 0: a non-private run, nothing clipped
    assert norm == 5.0 and np.allclose(same["b"], [3, 4])
    rng = np.random.default_rng(0)
    assert add_clip_bit(delta, norm, clip=6.0, std=0.0, rng=rng)[CLIP_BIT_KEY][0] == 1.0
    assert add_clip_bit(delta, norm, clip=4.0, std=0.0, rng=rng)[CLIP_BIT_KEY][0] == 0.0


def _tiny_warm_start(path: Path):  # noqa: ANN202 (models.data.Examples, imported lazily)
    """A tiny NPLM warm-start release at ``path`` and 600 random windows of its vocabulary."""
    import torch

    from models.config import ModelConfig
    from models.data import Examples
    from models.factory import build_model, export_weights
    from models.release import save_release
    from models.vocab import Vocabulary

    config = ModelConfig(vocab_size=32, context=4, embed_dim=4, hidden=8, dropout=0.0)
    torch.manual_seed(0)
    vocab = Vocabulary(["<unk>", "<s>", *[f"w{i}" for i in range(30)]], source="test")
    save_release(path, export_weights(build_model(config)), config, vocab, {"epsilon": None})
    rng = np.random.default_rng(0)
    return Examples(rng.integers(0, 32, (600, 4)), rng.integers(2, 32, 600))


def test_central_baseline_trains_only_the_named_arrays(tmp_path: Path) -> None:
    # Prepare: a tiny warm start release and a few windows
    from hushtype.bench_federated import fine_tune
    from models.factory import export_weights
    from models.release import load_release

    windows = _tiny_warm_start(tmp_path / "warm")
    # Execute: only the output bias trains
    model, summary = fine_tune(tmp_path / "warm", windows, windows, epochs=2.0, seed=0, trainable=("b2",))
    # Assert: early-stopped per epoch; b2 moved, every other array is the warm start's
    assert len(summary["valid_per_epoch"]) == 2
    assert all("ema_top1" in e for e in summary["valid_per_epoch"])  # CENTRAL_EMA competes on valid
    warm, tuned = load_release(tmp_path / "warm").weights, export_weights(model)
    assert np.abs(tuned["b2"] - warm["b2"]).max() > 1e-4
    for key in ("embedding", "w1", "b1", "w2"):
        np.testing.assert_array_equal(tuned[key], warm[key])


def test_central_adapter_training_returns_the_merged_head(tmp_path: Path) -> None:
    # Prepare: the tiny warm start and a rank-2 adapter (A from a seed, B = 0)
    import torch

    from hushtype.bench_federated import fine_tune
    from models.factory import export_weights
    from models.lora import LORA_B, lora_a, lora_arrays
    from models.release import load_release

    windows = _tiny_warm_start(tmp_path / "warm")
    adapter = lora_arrays(2, 8, 32, seed=0)
    # Execute: B trains (no model array does)
    model, _ = fine_tune(
        tmp_path / "warm", windows, windows, epochs=2.0, seed=0, trainable=(LORA_B,), adapter_arrays=adapter
    )
    # Assert: a plain model again; only W2 moved, by a rank-2 matrix in A's row space
    warm, tuned = load_release(tmp_path / "warm").weights, export_weights(model)
    assert isinstance(model.fc2, torch.nn.Linear)
    for key in ("embedding", "w1", "b1", "b2"):
        np.testing.assert_array_equal(tuned[key], warm[key])
    moved = tuned["w2"] - warm["w2"]  # = B A
    a = lora_a(2, 8, seed=0)
    assert np.abs(moved).max() > 1e-4 and np.linalg.matrix_rank(moved, tol=1e-5) == 2
    np.testing.assert_allclose(moved, moved @ a.T @ a, atol=1e-5)


@pytest.mark.slow
def test_quick_bench_runs_every_arm_end_to_end_on_a_small_corpus(small_jsonl: Path, tmp_path: Path) -> None:
    # Prepare: the quick bench (central, public, no-DP FL, DP + HE FL, the epsilon sweep: real Flower
    # runs) on the 60-user grammar corpus
    bench = BenchConfig(quick=True, out=str(tmp_path / "bench"))
    data = DataConfig(source="jsonl", jsonl_path=str(small_jsonl))
    # Execute
    result = run_federated_bench(bench, data)
    # Assert: the fields, each arm scored on the same held-out windows, the accountant's epsilons
    for field in ("central_top1", "public_top1", "plain_fl_top1", "dp_fl_top1"):
        assert 0.0 <= result[field] <= 1.0, field
    assert 0 < result["dp_user_epsilon"] <= 8.0 + 1e-6
    assert 0 < result["dp_user_delta"] <= result["devices"] ** -1.1 + 1e-12
    assert [round(p["epsilon"]) for p in result["frontier"]] == [1, 2, 4, 8, 16]
    assert result["client_rounds_per_min"] > 0 and result["he_round_ratio"] > 0
    assert result["plain_server"]["device_sampling"] == "passes" and result["plain_rounds"] >= 1
    assert Path(result["frontier_png"]).is_file()
