"""The worst-case **example-level** epsilon of any device, from the public run configuration alone.

Each device's own Opacus accountant (``keyboard_sim.device``) knows its exact example-level epsilon, but
that number depends on how much the user typed (its sampling rate p = 1 / ceil(n / b) and its steps), so
the server never receives it alone (``federation.wire``: only the round's mean, inside the encrypted sum).
What the server *can* state is a bound over every device the run admits: n >= ``min_device_examples``,
taking part in every round so far. A device with k = ceil(n / b) Poisson batches runs
s(k) = min(max(1, ceil(E k)), S) steps a round at p = 1/k (Abadi et al. 2016; S = ``max_local_steps``),
so after t rounds

    epsilon_bound(t) = max_k  epsilon_SGM(z, p = 1/k, steps = t * s(k), delta)

Once s(k) reaches the cap S, larger k only lowers p at fixed steps, so k runs from ceil(n_min / b) to
ceil(S / E) + 1 (without a cap, ``_K_SPAN`` more values: epsilon flattens out as E k steps at p = 1/k).
"""

from __future__ import annotations

import math
from functools import lru_cache

from opacus.accountants import create_accountant

from federation import EXAMPLE_RDP_ORDERS, FederationConfig

__all__ = ["example_epsilon_bound"]

_K_SPAN = 200  # batches per epoch scanned beyond the smallest device when no step cap bounds the scan


@lru_cache(maxsize=256)
def _sgm_epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str
) -> float:
    acc = create_accountant(accountant)
    acc.history = [(noise_multiplier, sample_rate, steps)]
    if accountant == "rdp":  # the orders every device's ledger uses (keyboard_sim.device)
        return float(acc.get_epsilon(delta=delta, alphas=list(EXAMPLE_RDP_ORDERS)))
    return float(acc.get_epsilon(delta=delta))


def example_epsilon_bound(config: FederationConfig, rounds: int) -> float:
    """Largest example-level epsilon any device of ``config`` can have after taking part in ``rounds`` rounds.

    0.0 for no rounds, ``inf`` without example-level noise.
    """
    if rounds <= 0:
        return 0.0
    z = config.example_noise_multiplier
    if z <= 0:
        return math.inf
    b, epochs, cap = config.batch_size, config.local_epochs, config.max_local_steps
    k_min = max(1, math.ceil(config.min_device_examples / b))
    k_max = math.ceil(cap / epochs) + 1 if cap is not None else k_min + _K_SPAN
    worst = 0.0
    for k in range(k_min, max(k_min, k_max) + 1):
        steps = max(1, math.ceil(epochs * k))
        steps = min(steps, cap) if cap is not None else steps
        eps = _sgm_epsilon(z, 1.0 / k, rounds * steps, config.example_delta, config.example_accountant)
        worst = max(worst, eps)
    return worst
