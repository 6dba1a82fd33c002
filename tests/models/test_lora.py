"""models.lora: the fixed public A, the merged head, the trainable name."""

from __future__ import annotations

import numpy as np
import pytest

from models.head import head_logits
from models.lora import LORA_A, LORA_B, lora_a, lora_arrays, lora_rank, merge_lora


def test_a_has_orthonormal_rows_and_depends_on_the_seed_only() -> None:
    a = lora_a(4, 16, seed=3)
    assert a.shape == (4, 16) and a.dtype == np.float32
    np.testing.assert_allclose(a @ a.T, np.eye(4), atol=1e-6)
    np.testing.assert_array_equal(a, lora_a(4, 16, seed=3))
    assert np.abs(a - lora_a(4, 16, seed=4)).max() > 0.1
    with pytest.raises(ValueError, match="rank must be in"):
        lora_a(17, 16, seed=0)


def test_the_merged_head_computes_w2_a_plus_b2_plus_b_a_a() -> None:
    # Prepare: a head with a trained adapter
    rng = np.random.default_rng(0)
    weights = {
        "w2": rng.normal(size=(32, 16)).astype(np.float32),
        "b2": rng.normal(size=32).astype(np.float32),
        "beta": np.asarray(1.0, np.float32),
        **lora_arrays(2, 16, 32, seed=1),
    }
    weights[LORA_B] = rng.normal(size=(32, 2)).astype(np.float32)
    h = rng.normal(size=(5, 16))
    # Execute
    merged = merge_lora(weights)
    # Assert: same arrays as a plain head (no adapter left), logits of the adapter form
    assert set(merged) == {"w2", "b2", "beta"} and merged["w2"].shape == (32, 16)
    a = h * (h + 1.0)
    expected = (
        a @ weights["w2"].T.astype(np.float64) + weights["b2"] + (a @ weights[LORA_A].T) @ weights[LORA_B].T
    )
    np.testing.assert_allclose(head_logits(merged, h), expected, rtol=1e-5, atol=1e-4)
    assert merge_lora({"w2": weights["w2"]}) == {"w2": weights["w2"]}  # no adapter: unchanged


def test_a_fresh_adapter_leaves_the_model_unchanged() -> None:
    w2 = np.ones((8, 4), np.float32)
    np.testing.assert_array_equal(merge_lora({"w2": w2, **lora_arrays(3, 4, 8, seed=0)})["w2"], w2)


def test_lora_rank_reads_the_trainable_names() -> None:
    assert lora_rank(["lora8", "b2"]) == 8
    assert lora_rank(["b2"]) is None
    with pytest.raises(ValueError, match="more than one adapter"):
        lora_rank(["lora2", "lora4"])
    with pytest.raises(ValueError, match=">= 1"):
        lora_rank(["lora0"])
