"""The quality benchmark on a small self-made corpus: the three models side by side, with spread."""

from __future__ import annotations

from pathlib import Path

import pytest

from hushtype.bench_quality import QualityConfig, run_quality
from keyboard_sim.dataset import DataConfig
from models.config import ModelConfig
from models.release import load_release

FIELDS = {
    "top1", "top3", "perplexity", "ngram_top1", "ngram_perplexity", "nplm_top1", "params",
    "encoder_params", "head_params", "oov_rate", "vocab_size", "top1_ratio_to_ngram",
    "perplexity_ratio_to_ngram", "top1_ratio_to_ngram_ci95", "nplm_top1_ratio_to_ngram_ci95",
    "train_sample_top1", "valid_top1", "context_scope", "best_averaged",
}  # fmt: skip


def test_quality_reports_shipped_nplm_and_ngram_side_by_side(small_jsonl: Path, tmp_path: Path) -> None:
    data = DataConfig(source="jsonl", jsonl_path=str(small_jsonl))
    small = ModelConfig(context=8, embed_dim=8, hidden=16, kind="lstm", width=16, layers=1)
    config = QualityConfig(epochs=1, batch_size=64, bootstrap=50, release_dir=str(tmp_path))
    result = run_quality(config, data, small)
    assert FIELDS <= set(result) and result["model"] == "lstm"
    assert result["top1_ratio_to_ngram"] == pytest.approx(result["top1"] / result["ngram_top1"])
    low, high = result["top1_ratio_to_ngram_ci95"]
    assert 0 < low <= high
    cfg = result["model_config"]
    assert result["head_params"] == cfg["vocab_size"] * (cfg["hidden"] + 1)  # W2 and b2: what runs under HE
    assert result["encoder_params"] + result["head_params"] == result["params"]
    release = load_release(tmp_path)  # the released model is the one scored
    assert release.config.kind == "lstm" and release.card["metrics"]["heldout"]["top1"] == result["top1"]
    assert release.card["data"]["context"] == release.config.context == 8


def test_quality_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="QualityConfig.model"):
        QualityConfig(model="gpt")


def test_validation_split_keeps_validation_users_out_of_the_rest(small_users) -> None:
    from hushtype.bench_quality import _validation_split
    from keyboard_sim.dataset import build_federated_data
    from keyboard_sim.split import SplitConfig

    data = build_federated_data(
        DataConfig(context=3, split=SplitConfig(public_fraction=0.3)), users=small_users
    )
    sizes = [len(u.later) for u in data.train_users]
    windows = sizes[0] + 1  # validation ends inside the second user's later lines
    valid, rest = _validation_split(data, windows)
    assert len(valid) == windows and valid.y[: sizes[0]].tolist() == data.train_users[0].later.y.tolist()
    assert len(rest) == sum(sizes[2:])  # the second user is in neither
    assert rest.y.tolist() == [t for u in data.train_users[2:] for t in u.later.y.tolist()]
