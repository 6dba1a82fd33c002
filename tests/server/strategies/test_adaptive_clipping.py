"""Quantile clipping (Andrew et al. 2021): the geometric update and the noise split, checked by hand."""

from __future__ import annotations

import math

import pytest

from server.strategies.adaptive_clipping import QuantileClip, update_noise_multiplier


def test_geometric_update_moves_toward_the_quantile() -> None:
    clip = QuantileClip(1.0, target_quantile=0.5, learning_rate=0.2)
    assert clip.update(1.0) == pytest.approx(math.exp(-0.1))  # all unclipped: C shrinks
    clip = QuantileClip(1.0)
    assert clip.update(0.0) == pytest.approx(math.exp(0.1))  # all clipped: C grows
    assert QuantileClip(2.0).update(1.7) == pytest.approx(
        2.0 * math.exp(-0.1)
    )  # noise outside [0, 1]: capped


def test_noise_split_spends_the_same_budget() -> None:
    # Thm 1: (z_Delta^-2 + (2 sigma_b)^-2)^(-1/2) = z
    z, sigma_b = 1.2, 2.5
    z_delta = update_noise_multiplier(noise_multiplier=z, count_stddev=sigma_b)
    assert (z_delta**-2 + (2 * sigma_b) ** -2) ** -0.5 == pytest.approx(z)
    assert z_delta > z
    assert update_noise_multiplier(noise_multiplier=0.0, count_stddev=1.0) == 0.0
    with pytest.raises(ValueError, match="too small"):
        update_noise_multiplier(noise_multiplier=2.0, count_stddev=0.9)
    with pytest.raises(ValueError, match="positive"):
        QuantileClip(0.0)
