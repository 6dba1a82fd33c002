"""Canary planning, planting and the exposure estimator, on hand-checkable inputs."""

from __future__ import annotations

import numpy as np
import pytest

from federation import FederationConfig
from keyboard_sim.canaries import (
    candidate_secrets,
    exposure,
    exposure_extrapolated,
    participation,
    plan_canaries,
    plant_canaries,
)
from keyboard_sim.dataset import UserExamples
from models.data import Examples

WORDS = ["<unk>", "<s>", "my", "secret", "number", "is"] + [f"w{i}" for i in range(58)]


def _config(**kw) -> FederationConfig:
    base = dict(
        devices=20,
        devices_per_round=5,
        rounds=6,
        canary_copies=(1, 4),
        canary_users=(1, 3),
        canaries_per_cell=2,
    )
    return FederationConfig(**{**base, **kw})


def test_plan_is_deterministic_and_fills_every_cell() -> None:
    config = _config()
    canaries = plan_canaries(config, WORDS)
    assert canaries == plan_canaries(config, WORDS)
    assert len(canaries) == 2 * 2 * 2
    assert {c.cell for c in canaries} == {f"copies={c},users={u}" for c in (1, 4) for u in (1, 3)}
    assert all(len(c.devices) == c.users and c.prefix == (2, 3, 4, 5) for c in canaries)
    assert all(min(s) >= 2 and len(s) == 4 for s in (c.secret for c in canaries))
    assert len({c.secret for c in canaries}) == len(canaries)
    counts = participation(config)  # holders are the devices sampled most often
    holders = {d for c in canaries for d in c.devices}
    assert min(counts[d] for d in holders) >= sorted(counts, reverse=True)[len(holders) - 1]
    assert plan_canaries(FederationConfig(devices=20, devices_per_round=5), WORDS) == []


def test_planting_adds_copies_windows_to_the_holders_only() -> None:
    config = _config()
    canaries = plan_canaries(config, WORDS)
    user = UserExamples("u", Examples(np.zeros((5, 4), np.int64), np.full(5, 7)), Examples.empty(4))
    device = canaries[-1].devices[0]
    mine = [c for c in canaries if device in c.devices]
    planted = plant_canaries(config, device, user, WORDS)
    assert len(planted.train) == 5 + sum(c.copies * 8 for c in mine)  # 8 words per canary sentence
    last = mine[-1]
    assert tuple(planted.train.y[-4:]) == last.secret and tuple(planted.train.x[-4]) == last.prefix
    idle = next(d for d in range(config.devices) if all(d not in c.devices for c in canaries))
    assert plant_canaries(config, idle, user, WORDS) is user


def test_prefix_out_of_vocabulary_names_the_field() -> None:
    with pytest.raises(ValueError, match="canary_prefix"):
        plan_canaries(_config(canary_prefix="my pin is"), WORDS)


def test_exposure_estimator() -> None:
    assert exposure(np.array([1.0, 2.0, 3.0, 4.0])) == 2.0  # rank 1 of 4: log2 4
    assert exposure(np.array([5.0, 2.0, 3.0, 4.0])) == 0.0  # rank 4 of 4
    assert exposure(np.array([2.0, 2.0, 3.0, 4.0])) == 1.0  # a tie counts against the secret
    secrets = candidate_secrets(plan_canaries(_config(), WORDS)[0], 99, len(WORDS), seed=0)
    assert secrets.shape == (100, 4) and tuple(secrets[0]) == plan_canaries(_config(), WORDS)[0].secret


def test_canary_fields_round_trip_through_the_run_config() -> None:
    config = _config()
    again = FederationConfig.from_run_config(config.to_run_config())
    assert again.canary_copies == (1, 4) and again.canary_users == (1, 3) and again == config
    with pytest.raises(ValueError, match="canary_copies"):
        _config(canary_copies=(0,))


def test_extrapolated_exposure_follows_the_normal_tail() -> None:
    rng = np.random.default_rng(0)
    alternatives = rng.normal(10.0, 1.0, 20000)
    at_mean = exposure_extrapolated(np.concatenate([[10.0], alternatives]))
    three_sd = exposure_extrapolated(np.concatenate([[7.0], alternatives]))
    assert abs(at_mean - 1.0) < 0.05  # P(X <= mu) = 1/2: one bit
    assert abs(three_sd - (-np.log2(0.0013499))) < 0.1  # P(X <= mu - 3 sd) = 0.00135: 9.5 bits
