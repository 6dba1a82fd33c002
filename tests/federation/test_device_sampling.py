"""FederationConfig.device_sampling: draws by size or by passes only where no user-level accountant relies
on q."""

from __future__ import annotations

import pytest

from federation import FederationConfig

NO_USER_DP = dict(noise_multiplier=0.0, clip=0.0, adaptive_clip=False)


def test_size_weighted_sampling_is_refused_under_user_level_dp() -> None:
    with pytest.raises(ValueError, match="device_sampling='windows'"):
        FederationConfig(device_sampling="windows")  # the shipped DP run: epsilon 8 assumes q = m / N
    with pytest.raises(ValueError, match="device_sampling must be"):
        FederationConfig(device_sampling="largest", **NO_USER_DP)
    assert FederationConfig(device_sampling="windows", **NO_USER_DP).device_sampling == "windows"
    assert FederationConfig().device_sampling == "uniform"


def test_passes_are_refused_under_user_level_dp_and_need_a_step_cap() -> None:
    with pytest.raises(ValueError, match="device_sampling='passes'"):
        FederationConfig(device_sampling="passes")
    with pytest.raises(ValueError, match="max_local_steps"):
        FederationConfig(device_sampling="passes", max_local_steps=None, **NO_USER_DP)
    assert FederationConfig(device_sampling="passes", **NO_USER_DP).device_sampling == "passes"
