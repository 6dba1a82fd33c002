"""What a device's update carries besides the model delta: the clip bit and its own statistics.

A device's reply holds *one* update (plain arrays, or one CKKS vector with ``aggregation="he"``) and
nothing else: every per-device number the server uses travels inside it as extra one-element arrays
(extra slots of the same ciphertext), so the aggregator only ever learns their (weighted) mean over
the >= ``min_clients`` devices the key authority agreed to decrypt together::

    clip-bit            b_i = 1[||Delta_i|| <= C_t] + noise   (adaptive clipping, Andrew et al. 2021)
    stat/num-examples   n_i            the device's training windows
    stat/train-loss     its mean local training loss this round
    stat/delta-norm     ||Delta_i|| before clipping
    stat/clipped        1[||Delta_i|| > C_t]
    stat/example-epsilon  its cumulative example-level epsilon (Opacus)

A statistic is clamped to ``[0, cap]`` and multiplied by ``1 / cap / 100`` before it is encrypted, so
one device adds at most 0.01 per slot and a whole round's sum stays far inside the CKKS budget
(``ckks.params.HEParams.max_l2_sum``); ``decode_stats`` undoes the scale on the decrypted mean. A
statistic at its cap means "at least the cap" (an infinite epsilon is sent as the cap). These means are
not differentially private: like the participation list they describe the round's devices together,
never one of them. Both sides import this module (``federation`` is the neutral package).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CLIP_BIT_KEY", "STAT_PREFIX", "STAT_CAPS", "is_side_key", "encode_stats", "decode_stats"]

CLIP_BIT_KEY = "clip-bit"
STAT_PREFIX = "stat/"
STAT_CAPS: dict[str, float] = {  # clamp bound of each statistic (its unit: 1 / (100 * cap) per slot)
    "num-examples": 1e5,
    "train-loss": 50.0,
    "delta-norm": 50.0,
    "clipped": 1.0,
    "example-epsilon": 1e3,
}


def is_side_key(key: str) -> bool:
    """True for the keys that are not model arrays (the clip bit and the statistics)."""
    return key == CLIP_BIT_KEY or key.startswith(STAT_PREFIX)


def _unit(name: str) -> float:
    return 1.0 / (100.0 * STAT_CAPS[name])


def encode_stats(stats: dict[str, float]) -> dict[str, np.ndarray]:
    """``{name: value}`` -> ``{"stat/name": [scaled value]}``; NaN becomes 0, inf and overflow the cap."""
    unknown = sorted(set(stats) - set(STAT_CAPS))
    if unknown:
        raise ValueError(f"unknown device statistics {unknown}; known: {sorted(STAT_CAPS)}")
    out = {}
    for name, value in stats.items():
        value = 0.0 if math.isnan(value) else min(max(float(value), 0.0), STAT_CAPS[name])
        out[STAT_PREFIX + name] = np.array([value * _unit(name)], dtype=np.float32)
    return out


def decode_stats(mean: dict[str, np.ndarray]) -> dict[str, float]:
    """Remove the statistics from a decrypted mean update (in place); return their means by name."""
    out = {}
    for key in [k for k in mean if k.startswith(STAT_PREFIX)]:
        name = key[len(STAT_PREFIX) :]
        value = float(np.ravel(mean.pop(key))[0])
        if name in STAT_CAPS:
            out[name] = value / _unit(name)
    return out
