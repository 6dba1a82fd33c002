"""Device draws that train every window once a pass, as a central epoch does (no user-level DP).

A device holding ``n`` windows trains the next ``chunk`` (= K batches of B) of its own fixed shuffle each
time it is drawn (``keyboard_sim.plain_device``), so ``ceil(n / chunk)`` draws cover its windows exactly
once. ``PassSchedule`` deals those draws: each pass lists every device that many times, shuffles the
list (seeded) and hands it out ``per_round`` distinct devices at a time. A device already in the round
keeps its place at the head of the list for the next round (a device with more draws a pass than the
pass has rounds is drawn every round, its excess carried on); the last round of a pass is completed
from the next pass. Independent draws (uniform or by size) instead train a device ``min(s x chunk, n)``
windows when drawn ``s`` times: about 82% of the distinct windows a pass at best on Shakespeare's
devices. The draws depend on the data sizes, which user-level DP's accountant (``q = m / N``) does
not cover: ``FederationConfig`` refuses it with user-level noise.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

__all__ = ["DEVICE_SAMPLING", "PassSchedule", "draws_per_pass"]

# how a round's m devices are drawn: uniformly (what user-level DP's accountant assumes, q = m / N), in
# proportion to their windows, or by passes (this module); the last two only without user-level noise
DEVICE_SAMPLING = ("uniform", "windows", "passes")


def draws_per_pass(windows: Sequence[int], chunk: int) -> list[int]:
    """How often each device is drawn a pass: ``ceil(n / chunk)`` (at least once)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 window, got {chunk}")
    return [max(1, math.ceil(n / chunk)) for n in windows]


class PassSchedule:
    """Rounds of ``per_round`` distinct device indices that cover each device's draws once a pass."""

    def __init__(self, draws: Sequence[int], per_round: int, rng: random.Random) -> None:
        if not 1 <= per_round <= len(draws):
            raise ValueError(f"per_round must be in [1, {len(draws)}] (the devices), got {per_round}")
        self.draws = list(draws)
        self.per_round = per_round
        self.passes = 0  # passes dealt so far (the one in progress included)
        self._rng = rng
        self._queue: list[int] = []

    def _deal_pass(self) -> None:
        order = [device for device, count in enumerate(self.draws) for _ in range(count)]
        self._rng.shuffle(order)
        self._queue.extend(order)
        self.passes += 1

    def next_round(self) -> list[int]:
        """The next round's devices, in schedule order."""
        chosen: list[int] = []
        waiting: list[int] = []  # drawn twice for this round: first in line for the next one
        while len(chosen) < self.per_round:
            if not self._queue:
                self._deal_pass()
            device = self._queue.pop(0)
            (waiting if device in chosen else chosen).append(device)
        self._queue[:0] = waiting
        return chosen
