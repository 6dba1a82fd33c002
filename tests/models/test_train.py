"""Central training learns a learnable pattern; evaluation never suggests <unk> or <s>."""

import numpy as np
import pytest
import torch

from models.data import Examples, anchor_windows, line_examples, make_examples
from models.keyboard_lm import KeyboardLM
from models.nplm import NPLM, ModelConfig
from models.train import WeightAverage, _batch_loss, evaluate, predict_topk, train_central


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


def test_anchor_windows_score_every_target_exactly_once() -> None:
    sentences = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24], [25]]
    data = make_examples(sentences, context=4, bos_id=1)
    for every in (1, 2, 3, 4):
        scored = []
        for t in anchor_windows(data, every):
            window = [*data.x[t], data.y[t]]  # position j predicts window[j + 1]
            scored += [w for w in window[-every:] if w != 1]
        assert sorted(scored) == sorted(data.y.tolist()), every


def test_positions_loss_is_the_mean_over_the_window_prefixes() -> None:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=32, context=4, embed_dim=8, hidden=16, kind="lstm", width=16, layers=1)
    model = KeyboardLM(config).eval()
    x, y = torch.tensor([[1, 6, 7, 8]]), torch.tensor([9])  # <s> 6 7 8 -> 9
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=1)
    joint = _batch_loss(model, loss_fn, x, y, positions=2)  # targets 8 (after <s> 6 7) and 9
    prefix = loss_fn(model.head(model.encoder(x[:, :3])), torch.tensor([8]))  # the LSTM reads oldest first
    full = loss_fn(model(x), y)
    assert torch.allclose(joint, (prefix + full) / 2, atol=1e-6)


def test_anchor_windows_cover_line_scope_targets_exactly_once() -> None:
    lines = [[[5, 6, 7], [8], [9, 10, 11, 12, 13]], [[14, 15]], [[16], [17], [18, 19, 20, 21, 22, 23]]]
    data = line_examples(lines, context=4, bos_id=1, scope="line")
    for every in (1, 2, 3, 4):
        scored = []
        for t in anchor_windows(data, every):
            window = [*data.x[t], data.y[t]]
            scored += [w for w in window[-every:] if w != 1]
        assert sorted(scored) == sorted(data.y.tolist()), every
    assert anchor_windows(data, 1).tolist() == list(range(len(data)))


def test_weight_average_is_the_ema_of_the_steps() -> None:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
        model.bias.fill_(4.0)
    average = WeightAverage(model, decay=0.5)
    expected_w, expected_b = 0.0, 4.0
    for value in (2.0, 6.0, 1.0):
        with torch.no_grad():
            model.weight.fill_(value)
            model.bias.fill_(-value)
        average.update()
        expected_w, expected_b = 0.5 * expected_w + 0.5 * value, 0.5 * expected_b - 0.5 * value
    with average.swapped_in():
        assert model.weight.tolist() == [[expected_w, expected_w]] and model.bias.item() == expected_b
    assert model.weight.tolist() == [[1.0, 1.0]] and model.bias.item() == -1.0  # trained weights back
    average.copy_to(model)
    assert model.bias.item() == expected_b == -1.75  # 4 -> 1 -> -2.5 -> -1.75


def test_ema_and_trained_weights_compete_on_validation() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(2, 32, size=(1024, 2))
    data = Examples(x, (x[:, 1] + 1) % 30 + 2)
    torch.manual_seed(0)
    model = NPLM(ModelConfig(vocab_size=32, context=2, embed_dim=8, hidden=32, dropout=0.0))
    summary = train_central(model, data, epochs=3, lr=1e-2, batch_size=64, ema=0.95, valid=data)
    curve = summary["valid_per_epoch"]
    assert len(curve) == 3 and all({"top1", "ema_top1"} <= set(e) for e in curve)
    best = max(max(e["top1"], e["ema_top1"]) for e in curve)
    assert evaluate(model, data)["top1"] == best  # the returned weights are the best of both kinds
    entry = curve[summary["best_epoch"] - 1]
    assert entry["ema_top1" if summary["best_averaged"] else "top1"] == best


def test_lr_floor_sets_the_cosine_decay() -> None:
    # Prepare: the same model and data trained with a constant lr (floor 1) and decayed to 0 (floor 0)
    rng = np.random.default_rng(0)
    x = rng.integers(2, 32, size=(512, 2))
    data = Examples(x, (x[:, 1] + 1) % 30 + 2)
    moved = []
    for floor in (1.0, 0.0):
        torch.manual_seed(0)
        model = NPLM(ModelConfig(vocab_size=32, context=2, embed_dim=8, hidden=32, dropout=0.0))
        start = model.fc2.bias.detach().clone()
        train_central(model, data, epochs=2, lr=1e-2, batch_size=64, lr_floor=floor)
        moved.append(float((model.fc2.bias.detach() - start).norm()))
    # Assert: Adam's steps are ~lr each, so the decayed run moves the weights less
    assert moved[1] < 0.9 * moved[0]
    with pytest.raises(ValueError, match="lr_floor"):
        train_central(model, data, epochs=1, lr_floor=1.5)
