"""bench federated's pieces that need no federation: the no-privacy arm, the gap, the frontier plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hushtype.bench_federated import _gap, plain_fl_config, plot_frontier
from keyboard_sim.client_app import CLIP_BIT_KEY, add_clip_bit, clip_update
from keyboard_sim.federation import FederationConfig


def test_plain_arm_has_no_privacy_and_keeps_the_federation() -> None:
    shipped = FederationConfig(devices=40, devices_per_round=8, rounds=3)
    plain = plain_fl_config(shipped)
    assert (plain.noise_multiplier, plain.example_noise_multiplier, plain.clip) == (0.0, 0.0, 0.0)
    assert plain.aggregation == "plain" and not plain.adaptive_clip
    assert (plain.devices, plain.devices_per_round, plain.rounds) == (40, 8, 3)


def test_gap_closed() -> None:
    assert abs(_gap(0.11, public=0.10, central=0.12) - 0.5) < 1e-12
    assert _gap(0.10, public=0.10, central=0.10) is None


def test_frontier_png(tmp_path: Path) -> None:
    points = [{"epsilon": e, "top1": 0.1 + e / 1000, "top3": 0.2} for e in (1, 2, 4)]
    path = plot_frontier(tmp_path / "f.png", points, {"central": 0.11, "public": 0.1})
    assert path.stat().st_size > 1000


def test_no_clip_and_the_clip_bit() -> None:
    delta = {"b": np.array([3.0, 4.0], np.float32)}
    same, norm = clip_update(delta, 0.0)  # clip 0: a non-private run, nothing clipped
    assert norm == 5.0 and np.allclose(same["b"], [3, 4])
    rng = np.random.default_rng(0)
    assert add_clip_bit(delta, norm, clip=6.0, std=0.0, rng=rng)[CLIP_BIT_KEY][0] == 1.0
    assert add_clip_bit(delta, norm, clip=4.0, std=0.0, rng=rng)[CLIP_BIT_KEY][0] == 0.0
