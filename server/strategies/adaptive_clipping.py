"""Adaptive user-level clipping: track a quantile of the update norms (Andrew et al. 2021).

"Differentially Private Learning with Adaptive Clipping", arXiv:1905.03871. Each sampled device i
reports the bit b_i = 1[||Delta_i|| <= C_t] *inside its encrypted update* (one more slot of the same
CKKS vector, with its own distributed noise share N(0, sigma_b^2 / m)), so the aggregator only ever
sees the noised mean b_bar_t = (sum_i b_i + N(0, sigma_b^2)) / |A_t|. The server then moves C toward
the target quantile gamma geometrically::

    C_{t+1} = C_t * exp(-eta_C * (b_bar_t - gamma))

Privacy (Andrew et al. Thm 1): releasing the noised bit sum with std sigma_b next to the update sum
with noise multiplier z_Delta is the Gaussian mechanism with multiplier
z = (z_Delta^-2 + (2 sigma_b)^-2)^(-1/2). To spend exactly the budget of a fixed-clip run with
multiplier z, devices add update noise with ``update_noise_multiplier(z, sigma_b)`` and the user-level
accountant is stepped with z, so the bit is charged for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["QuantileClip", "update_noise_multiplier"]


def update_noise_multiplier(*, noise_multiplier: float, count_stddev: float) -> float:
    """z_Delta such that (z_Delta^-2 + (2 sigma_b)^-2)^(-1/2) = z (Andrew et al. 2021, Thm 1)."""
    if noise_multiplier <= 0:
        return 0.0
    if count_stddev <= 0:
        raise ValueError("adaptive clipping with noise needs a positive clip-count stddev")
    rest = noise_multiplier**-2 - (2.0 * count_stddev) ** -2
    if rest <= 0:
        raise ValueError(
            f"clip_count_stddev={count_stddev:g} is too small for noise multiplier {noise_multiplier:g}: "
            f"it must exceed z / 2 = {noise_multiplier / 2:g} (the paper uses m / 20)"
        )
    return rest**-0.5


@dataclass
class QuantileClip:
    """The server's clipping state C_t (geometric update toward quantile gamma).

    Parameters
    ----------
    clip : float
        C_0, the initial clipping norm.
    target_quantile : float (default: 0.5)
        gamma, the share of updates that should be unclipped.
    learning_rate : float (default: 0.2)
        eta_C of the geometric update (the paper's default).
    """

    clip: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2

    def __post_init__(self) -> None:
        if self.clip <= 0:
            raise ValueError(f"The clipping norm should be a positive value, got {self.clip}.")
        if not 0.0 < self.target_quantile < 1.0:
            raise ValueError(f"target_quantile must be in (0, 1), got {self.target_quantile}")
        if self.learning_rate <= 0:
            raise ValueError(f"clip learning rate must be positive, got {self.learning_rate}")

    def update(self, unclipped_fraction: float) -> float:
        """C_{t+1} = C_t * exp(-eta_C * (b_bar - gamma)); returns C_{t+1}."""
        b_bar = min(max(float(unclipped_fraction), 0.0), 1.0)  # noise can push the mean outside [0, 1]
        self.clip *= math.exp(-self.learning_rate * (b_bar - self.target_quantile))
        return self.clip
