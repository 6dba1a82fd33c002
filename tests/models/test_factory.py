"""Every model kind through one factory: Opacus-trainable, exported, split into encoder and head."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch.utils.data import DataLoader, TensorDataset

from models.config import KINDS, ModelConfig
from models.factory import (
    HEAD_KEYS,
    build_model,
    config_from_weights,
    encode,
    encoder_keys,
    export_weights,
    load_weights,
    param_names,
    plaintext_logits,
    split_weights,
    trainable_keys,
)
from models.head import head_logits
from models.release import ENCODER_FILE, HEAD_FILE, load_release, save_release
from models.vocab import Vocabulary


def _config(kind: str) -> ModelConfig:
    encoder = {} if kind == "nplm" else {"width": 24, "layers": 2}  # the NPLM has no encoder width/depth
    return ModelConfig(vocab_size=64, context=6, embed_dim=8, hidden=16, kind=kind, **encoder)


def _moved(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():  # away from init, so every array matters
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("kind", KINDS)
def test_opacus_accepts_every_kind_as_built(kind: str) -> None:
    model = build_model(_config(kind))
    assert ModuleValidator.validate(model, strict=True) == []  # no ModuleValidator.fix needed


@pytest.mark.parametrize("kind", KINDS)
def test_export_load_roundtrip_and_trainable_keys(kind: str) -> None:
    cfg = _config(kind)
    model = _moved(build_model(cfg))
    weights = export_weights(model)
    assert set(trainable_keys(cfg)) == set(weights) - {"beta"}
    assert set(param_names(model)) == set(trainable_keys(cfg))
    assert config_from_weights(weights, context=6) == cfg  # what a federated device rebuilds from
    fresh = load_weights(build_model(cfg), weights).eval()
    ids = torch.randint(0, 64, (5, 6))
    torch.testing.assert_close(fresh(ids), model(ids))
    with pytest.raises(ValueError, match="expected shape"):
        load_weights(build_model(cfg), {**weights, "w2": weights["w2"][:3]})


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_alone_then_head_equals_the_model(kind: str) -> None:
    # the thin client's half (encoder arrays only) and the server's half (numpy head) compose to the model
    cfg = _config(kind) if kind != "nplm" else ModelConfig(vocab_size=64, context=6, embed_dim=8, hidden=16)
    model = _moved(build_model(cfg))
    encoder, head = split_weights(export_weights(model), cfg)
    assert set(head) == set(HEAD_KEYS) and set(encoder) == set(encoder_keys(cfg))
    assert not set(encoder) & set(HEAD_KEYS)
    ids = np.random.default_rng(1).integers(0, 64, size=(7, 6))
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).double().numpy()
    np.testing.assert_allclose(head_logits(head, encode(cfg, encoder, ids)), want, atol=1e-4)
    np.testing.assert_allclose(plaintext_logits(export_weights(model), cfg, ids[0]), want[0], atol=1e-4)


@pytest.mark.parametrize("kind", ["lstm", "mlp"])
def test_one_dp_sgd_step_with_ghost_clipping(kind: str) -> None:
    # what a federated device does: Opacus make_private (ghost clipping, Poisson sampling), one noisy step
    cfg = _config(kind)
    model = build_model(cfg)
    x, y = torch.randint(0, 64, (64, 6)), torch.randint(0, 64, (64,))
    before = {k: v.copy() for k, v in export_weights(model).items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        gsm, opt, criterion, loader = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            criterion=torch.nn.CrossEntropyLoss(),
            data_loader=DataLoader(TensorDataset(x, y), batch_size=16),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=True,
            grad_sample_mode="ghost",
        )
    xb, yb = next(iter(loader))
    loss = criterion(gsm(xb), yb)
    loss.backward()
    opt.step()
    after = export_weights(model)
    moved = [k for k in trainable_keys(cfg) if not np.array_equal(before[k], after[k])]
    assert set(moved) == set(trainable_keys(cfg))  # every array gets clipped gradient + noise


def test_release_splits_encoder_and_head(tmp_path: Path) -> None:
    cfg = _config("lstm")
    weights = export_weights(_moved(build_model(cfg)))
    vocab = Vocabulary(["<unk>", "<s>"] + [f"w{i}" for i in range(62)])
    saved = save_release(tmp_path / "r", weights, cfg, vocab, {"trained": "test"})
    from safetensors.numpy import load_file

    assert set(load_file(str(tmp_path / "r" / HEAD_FILE))) == set(HEAD_KEYS)
    assert set(load_file(str(tmp_path / "r" / ENCODER_FILE))) == set(encoder_keys(cfg))
    assert saved.card["parts"]["head"] == sorted(HEAD_KEYS)
    loaded = load_release(tmp_path / "r")
    assert loaded.config == cfg and loaded.version == saved.version
    np.testing.assert_array_equal(loaded.head["w2"], weights["w2"])
    assert set(loaded.encoder) == set(encoder_keys(cfg))


def test_legacy_single_file_release_still_loads(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    cfg = ModelConfig(vocab_size=64, context=4, embed_dim=8, hidden=16)
    weights = export_weights(build_model(cfg))
    vocab = Vocabulary(["<unk>", "<s>"] + [f"w{i}" for i in range(62)])
    save_release(tmp_path, weights, cfg, vocab, {})
    (tmp_path / ENCODER_FILE).unlink()
    (tmp_path / HEAD_FILE).unlink()
    save_file(weights, str(tmp_path / "weights.safetensors"))  # the format before the split
    loaded = load_release(tmp_path)
    assert loaded.config.kind == "nplm" and set(loaded.encoder) == {"embedding", "w1", "b1"}


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="ModelConfig.kind"):
        ModelConfig(kind="transformer")
    with pytest.raises(ValueError, match="ModelConfig.width"):
        ModelConfig(kind="lstm", width=0)
