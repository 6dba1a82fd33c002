"""``pretrain_public``: the public warm start's training recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

import hushtype.pretrain as pretrain
from keyboard_sim.dataset import DataConfig


def test_the_shipped_kind_pretrains_without_a_weight_average(
    small_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: record what the central trainer is asked for (the real one also runs, on 60 tiny users)
    calls: list[dict] = []
    real = pretrain.train_central

    def recording(model, examples, **kwargs):  # noqa: ANN001, ANN202
        calls.append(kwargs)
        return real(model, examples, **kwargs)

    monkeypatch.setattr(pretrain, "train_central", recording)
    data = DataConfig(source="jsonl", jsonl_path=str(small_jsonl), vocab_size=64, vocab_source="public")
    # Execute
    card = pretrain.pretrain_public(data, tmp_path / "warm", epochs=1.0, kind="lstm")
    # Assert: the shipped recipe (AdamW, cosine lr) but no EMA, whose average would keep most of the
    # random init on a short public split
    assert calls[0]["ema"] == 0.0 and calls[0]["lr"] == pretrain.TrainConfig().lr
    assert card["train"]["best_averaged"] is None
