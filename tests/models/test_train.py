"""Central training learns a learnable pattern; evaluation never suggests <unk> or <s>."""

import numpy as np
import torch

from models.data import Examples
from models.nplm import NPLM, ModelConfig
from models.train import evaluate, predict_topk, train_central


def test_training_learns_a_deterministic_successor_rule() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(2, 32, size=(2000, 2))
    y = (x[:, 1] + 1) % 30 + 2  # next word determined by the previous one
    data = Examples(x, y)
    torch.manual_seed(0)
    model = NPLM(ModelConfig(vocab_size=32, context=2, embed_dim=8, hidden=32, dropout=0.0))
    before = evaluate(model, data)
    summary = train_central(model, data, epochs=15, lr=1e-2, batch_size=64)
    after = evaluate(model, data)
    assert summary["steps"] > 0 and not summary["stopped_early"]
    assert before["top1"] < 0.2 and after["top1"] > 0.9
    assert after["loss"] < before["loss"]


def test_predictions_never_include_unk_or_bos() -> None:
    model = NPLM(ModelConfig(vocab_size=16, context=2, embed_dim=4, hidden=8))
    with torch.no_grad():
        model.fc2.bias[:2] = 100.0  # make <unk>, <s> by far the likeliest
    _, topk = predict_topk(model, Examples(np.ones((10, 2), np.int64), np.zeros(10, np.int64)))
    assert not np.isin(topk, [0, 1]).any()
