"""The cache adapter: additive statistics, the adapter of their sum, its shape on known numbers."""

from __future__ import annotations

import numpy as np
import pytest

from keyboard_sim.personalize import CacheAdapterConfig, adapter_from_statistics, user_statistics


def test_statistics_are_additive_so_devices_can_sum_them() -> None:
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(30, 16)), rng.integers(0, 16, size=30)
    c_all, e_all = user_statistics(logits, targets)
    c_a, e_a = user_statistics(logits[:11], targets[:11])
    c_b, e_b = user_statistics(logits[11:], targets[11:])
    np.testing.assert_allclose(c_a + c_b, c_all)
    np.testing.assert_allclose(e_a + e_b, e_all)
    assert c_all[:2].sum() == e_all[:2].sum() == 0  # <unk>, <s> are never suggested
    np.testing.assert_allclose(
        adapter_from_statistics(c_a + c_b, e_a + e_b), adapter_from_statistics(c_all, e_all)
    )


def test_the_adapter_on_known_numbers() -> None:
    config = CacheAdapterConfig(scale=0.5, prior=4.0, max_abs=4.0)
    counts = np.array([0, 0, 12.0, 0.0, 2.0, 1e6])
    expected = np.array([0, 0, 0.0, 12.0, 2.0, 0.0])
    u = adapter_from_statistics(counts, expected, config)
    np.testing.assert_allclose(u[:5], [0, 0, 0.5 * np.log(16 / 4), 0.5 * np.log(4 / 16), 0], rtol=1e-6)
    assert u[5] == 4.0  # clipped
    # CKKS noise can make a zero count slightly negative: treated as zero
    np.testing.assert_allclose(adapter_from_statistics(counts - 1e-4, expected, config)[3], u[3], atol=1e-6)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="prior"):
        CacheAdapterConfig(prior=0)
