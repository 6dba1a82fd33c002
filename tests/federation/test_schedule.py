"""The server's eta schedule and iterate average (federation.schedule) and their config fields."""

from __future__ import annotations

import numpy as np
import pytest

from federation import FederationConfig
from federation.schedule import IterateAverage, lr_factor


def test_lr_factor_schedules() -> None:
    # cos: 1 at round 1, half-way at the middle, floor + a little at the last round; lin: straight line
    assert [lr_factor("none", r, 4) for r in (1, 4, 9)] == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(
        [lr_factor("cos", r, 4) for r in (1, 2, 3, 4)], [1, 0.8536, 0.5, 0.1464], atol=1e-4
    )
    np.testing.assert_allclose([lr_factor("lin", r, 4) for r in (1, 2, 3, 4)], [1, 0.75, 0.5, 0.25])
    assert lr_factor("lin", 3, 4, floor=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor("cos", 10, 4) == pytest.approx(0.0)  # past the planned rounds: the floor
    with pytest.raises(ValueError, match="schedule"):
        lr_factor("step", 1, 4)


def test_iterate_average_is_a_bias_corrected_ema_of_the_iterates() -> None:
    # Prepare: decay 0.5 over the iterates 1, 3, 7
    average = IterateAverage(0.5)
    assert average.value() == {}
    for w in (1.0, 3.0, 7.0):
        average.update({"w": np.full(2, w, np.float32)})
    # Assert: (0.25 * 0.5 * 1 + 0.5 * 0.5 * 3 + 0.5 * 7) / (1 - 0.5^3); the start point has no weight
    expected = (0.125 * 1 + 0.25 * 3 + 0.5 * 7) / 0.875
    np.testing.assert_allclose(average.value()["w"], [expected, expected], rtol=1e-6)
    assert average.value()["w"].dtype == np.float32
    # a checkpoint's arrays give back the same average, and it goes on the same way
    restored = IterateAverage.from_arrays(0.5, {**average.to_arrays(), "m_t/w": np.zeros(2)})
    assert restored.count == 3
    restored.update({"w": np.zeros(2)})
    average.update({"w": np.zeros(2)})
    np.testing.assert_allclose(restored.value()["w"], average.value()["w"])
    assert IterateAverage.from_arrays(0.5, {}).count == 0
    with pytest.raises(ValueError, match="decay"):
        IterateAverage(1.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("server_lr_schedule", "step"), ("server_lr_floor", 1.5), ("server_ema", 1.0), ("server_ema", -0.1)],
)
def test_bad_schedule_or_average_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"FederationConfig.{field}"):
        FederationConfig(**{field: value})
