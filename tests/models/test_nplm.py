"""The NPLM: shapes, Opacus compatibility, and plaintext HE arithmetic == torch forward."""

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator

from models.nplm import (
    NPLM,
    ModelConfig,
    client_features,
    export_weights,
    load_weights,
    plaintext_logits,
    server_logits,
)

SMALL = ModelConfig(vocab_size=64, context=3, embed_dim=8, hidden=16)


def _trained_like(config: ModelConfig, seed: int = 0) -> NPLM:
    torch.manual_seed(seed)
    model = NPLM(config)
    with torch.no_grad():  # move away from init so biases and beta matter
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def test_forward_shapes() -> None:
    model = NPLM(SMALL)
    out = model(torch.randint(0, 64, (5, 3)))
    assert out.shape == (5, 64)
    with pytest.raises(AssertionError, match="context must be"):
        model(torch.zeros(5, 4, dtype=torch.long))


def test_opacus_accepts_model_unchanged() -> None:
    model = NPLM(ModelConfig())
    assert ModuleValidator.validate(model, strict=True) == []
    assert ModuleValidator.is_valid(model)


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
def test_plaintext_he_arithmetic_equals_torch_forward(beta: float) -> None:
    config = ModelConfig(vocab_size=64, context=3, embed_dim=8, hidden=16, beta=beta)
    model = _trained_like(config)
    ids = np.random.default_rng(0).integers(0, 64, size=(32, 3))
    with torch.no_grad():
        expected = model(torch.from_numpy(ids)).double().numpy()
    weights = export_weights(model)
    got = plaintext_logits(weights, ids)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # the server half alone, on one feature vector, as the encrypted path will see it
    x = client_features(weights, ids[0])
    assert x.shape == (config.input_dim,)
    np.testing.assert_allclose(server_logits(weights, x), expected[0], rtol=1e-5, atol=1e-5)


def test_personal_bias_is_added_to_logits() -> None:
    weights = export_weights(_trained_like(SMALL))
    ids = np.array([1, 2, 3])
    u = np.linspace(-1, 1, 64)
    np.testing.assert_allclose(
        plaintext_logits(weights, ids, u) - plaintext_logits(weights, ids), u, atol=1e-12
    )


def test_export_load_round_trip_and_shape_check() -> None:
    weights = export_weights(_trained_like(SMALL, seed=1))
    assert {k: v.shape for k, v in weights.items()} == {
        "embedding": (64, 8),
        "w1": (16, 24),
        "b1": (16,),
        "w2": (64, 16),
        "b2": (64,),
        "beta": (),
    }
    assert all(v.dtype == np.float32 for v in weights.values())
    fresh = load_weights(NPLM(SMALL), weights)
    again = export_weights(fresh)
    for key in weights:
        np.testing.assert_array_equal(again[key], weights[key])
    bad = dict(weights, w1=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="w1: expected shape"):
        load_weights(NPLM(SMALL), bad)


@pytest.mark.parametrize("field", ["vocab_size", "context", "embed_dim", "hidden"])
def test_config_validation_names_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{field: 0})


def test_release_round_trip_normalises_scalar_and_checks_shapes(tmp_path) -> None:
    from models.release import load_release, save_release
    from models.vocab import Vocabulary

    weights = export_weights(_trained_like(SMALL))
    vocab = Vocabulary(["<unk>", "<s>"] + [f"w{i}" for i in range(62)])
    flowerish = dict(weights, beta=weights["beta"].reshape(1))  # Flower ships scalars as (1,)
    release = save_release(tmp_path / "r", flowerish, SMALL, vocab, {"trained": "test"})
    loaded = load_release(tmp_path / "r")
    assert loaded.weights["beta"].shape == () and loaded.version == release.version
    np.testing.assert_array_equal(loaded.weights["w2"], weights["w2"])
    with pytest.raises(ValueError, match="w1: expected shape"):
        save_release(tmp_path / "bad", dict(weights, w1=np.zeros((2, 2), np.float32)), SMALL, vocab, {})
    with pytest.raises(ValueError, match="exactly"):
        save_release(tmp_path / "bad", {"w1": weights["w1"]}, SMALL, vocab, {})
