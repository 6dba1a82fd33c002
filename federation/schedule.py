"""Server-side post-processing of a run's steps: the server learning-rate schedule and an iterate average.

Both act on what the server already holds (the decrypted mean delta, the global weights), so they cost
no privacy and work the same with plain and HE aggregation.

``lr_factor(kind, r, rounds)`` scales the server's eta at round r (1-based) of ``rounds``:

    none   1
    cos    floor + (1 - floor) (1 + cos(pi (r - 1) / rounds)) / 2
    lin    floor + (1 - floor) (1 - (r - 1) / rounds)

``IterateAverage`` is an exponential moving average of the global weights (Polyak & Juditsky 1992),
started from zero and bias-corrected (Kingma & Ba), so it averages the trained iterates only, never the
starting point: ``avg_t = d avg_{t-1} + (1 - d) w_t``, released as ``avg_t / (1 - d^t)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["LR_SCHEDULES", "IterateAverage", "lr_factor"]

LR_SCHEDULES = ("none", "cos", "lin")


def lr_factor(kind: str, server_round: int, rounds: int, floor: float = 0.0) -> float:
    """The factor on the server's eta at ``server_round`` (1-based) of ``rounds`` (see the module doc)."""
    if kind not in LR_SCHEDULES:
        raise ValueError(f"server lr schedule must be one of {LR_SCHEDULES}, got {kind!r}")
    if kind == "none":
        return 1.0
    frac = min(max(server_round - 1, 0) / max(rounds, 1), 1.0)
    shape = 0.5 * (1.0 + math.cos(math.pi * frac)) if kind == "cos" else 1.0 - frac
    return floor + (1.0 - floor) * shape


class IterateAverage:
    """Bias-corrected exponential moving average of named arrays (decay ``decay`` per update)."""

    def __init__(self, decay: float, avg: Mapping[str, np.ndarray] | None = None, count: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"iterate average decay must be in (0, 1), got {decay}")
        self.decay, self.count = decay, count
        self.avg = {k: np.asarray(v, dtype=np.float64).copy() for k, v in (avg or {}).items()}

    def update(self, weights: Mapping[str, np.ndarray]) -> None:
        """Fold in one iterate: avg <- d avg + (1 - d) w (zero where no average exists yet)."""
        for key, w in weights.items():
            prev = self.avg.get(key)
            new = (1.0 - self.decay) * np.asarray(w, dtype=np.float64)
            self.avg[key] = new if prev is None else self.decay * prev + new
        self.count += 1

    def value(self) -> dict[str, np.ndarray]:
        """The averaged weights (float32), bias-corrected; empty before the first update."""
        scale = 1.0 / (1.0 - self.decay**self.count) if self.count else 0.0
        return {k: (v * scale).astype(np.float32) for k, v in self.avg.items()}

    def to_arrays(self, prefix: str = "ema/") -> dict[str, np.ndarray]:
        """What a checkpoint keeps: the raw (uncorrected) averages as ``prefix + key`` and the count."""
        return {
            f"{prefix}count": np.asarray(float(self.count)),
            **{prefix + k: v for k, v in self.avg.items()},
        }

    @classmethod
    def from_arrays(
        cls, decay: float, arrays: Mapping[str, np.ndarray], prefix: str = "ema/"
    ) -> IterateAverage:
        """The average ``to_arrays`` saved (other keys of ``arrays`` are ignored; none saved: a fresh one)."""
        avg = {
            k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix) and k != f"{prefix}count"
        }
        return cls(decay, avg, int(arrays.get(f"{prefix}count", 0)))
