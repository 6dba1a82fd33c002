"""federation.passes: device draws that train every window once a pass."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from federation.passes import PassSchedule, draws_per_pass


def test_draws_per_pass_is_each_devices_chunks() -> None:
    assert draws_per_pass([1, 256, 257, 1000, 0], chunk=256) == [1, 1, 2, 4, 1]
    with pytest.raises(ValueError, match="chunk"):
        draws_per_pass([10], chunk=0)


def test_each_pass_draws_every_device_its_chunks_and_a_round_never_twice() -> None:
    # Prepare: devices of 1 to 5 chunks, 3 a round: 30 draws, 10 rounds a pass
    draws = [5, 3, 1, 2, 4, 1, 1, 5, 4, 4]
    schedule = PassSchedule(draws, per_round=3, rng=random.Random(7))
    # Execute: six passes' worth of rounds
    rounds = [schedule.next_round() for _ in range(6 * sum(draws) // 3)]
    # Assert: m distinct devices a round; each device drawn its chunks a pass, give or take the draws a
    # full round pushed into the next pass (uniform draws: device 0 would get 18 +- 4, device 2 the same)
    assert all(len(set(r)) == 3 for r in rounds)
    counts = Counter(device for r in rounds for device in r)
    assert all(abs(counts[d] - 6 * n) <= 2 for d, n in enumerate(draws))
    # the same seed deals the same rounds (a resumed run replays them)
    again = PassSchedule(draws, per_round=3, rng=random.Random(7))
    assert [again.next_round() for _ in range(len(rounds))] == rounds


def test_a_device_with_more_chunks_than_a_pass_has_rounds_is_drawn_every_round() -> None:
    schedule = PassSchedule([40, 1, 1, 1], per_round=2, rng=random.Random(0))
    rounds = [schedule.next_round() for _ in range(30)]
    assert all(0 in r and len(set(r)) == 2 for r in rounds)


def test_a_round_larger_than_the_federation_is_refused() -> None:
    with pytest.raises(ValueError, match="per_round"):
        PassSchedule([1, 1], per_round=3, rng=random.Random(0))
