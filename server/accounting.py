"""User-level privacy accounting for federated rounds (DP-FedAvg).

Each round the server samples a fraction q = devices_per_round / devices of the devices, every
update is clipped to L2 norm C, and the sum carries Gaussian noise N(0, sigma^2 C^2 I): one round
is the Sampled Gaussian Mechanism with sampling rate q and noise multiplier sigma, applied to
*users* (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models",
arXiv:1710.06963). Its Renyi DP is computed with Opacus' implementation of Mironov, Talwar & Zhang
2019 (arXiv:1908.10530), composed over rounds, and converted to (epsilon, delta) with Balle et al.
2020, Thm 21 (Opacus ``get_privacy_spent``); the PRV accountant (Gopi et al. 2021) is the
alternative. Treating fixed-size device sampling as Poisson sampling with rate q is the standard
approximation of the papers above.

Names: this module only knows **user-level** epsilon (``user_epsilon``): what the released model
reveals about whether one *user* took part, all of their text together. The **example-level**
epsilon each device computes for its own DP-SGD lives in ``keyboard_sim.device`` and is never mixed
with it.

>>> round(user_epsilon(noise_multiplier=1.0, sample_rate=0.1, rounds=100, delta=1e-5), 2)
7.9
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

from opacus.accountants import create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis

__all__ = [
    "DEFAULT_ORDERS",
    "user_rdp",
    "user_epsilon",
    "user_epsilon_from_history",
    "user_noise_for_epsilon",
    "UserLevelAccountant",
]

DEFAULT_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
_ACCOUNTANTS = ("rdp", "prv")


def _check(noise_multiplier: float, sample_rate: float, rounds: int, delta: float | None = None) -> None:
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    if not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    if delta is not None and not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def user_rdp(
    *, noise_multiplier: float, sample_rate: float, rounds: int, orders: Sequence[float] = DEFAULT_ORDERS
) -> list[float]:
    """RDP of ``rounds`` compositions of the user-level Sampled Gaussian Mechanism, per order.

    Mironov et al. 2019 §3.3 (log A_alpha), composed additively over rounds (Mironov 2017, Prop. 1).
    """
    _check(noise_multiplier, sample_rate, rounds)
    rdp = rdp_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=rounds, orders=orders
    )
    return [float(v) for v in rdp]


def user_epsilon_from_history(
    *,
    history: Sequence[tuple[float, float, int]],
    delta: float,
    accountant: str = "rdp",
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """User-level epsilon of a sequence of ``(noise_multiplier, sample_rate, rounds)`` phases.

    Phases with different sigma (e.g. fewer devices answered, so less distributed noise) compose.
    Returns 0.0 for no rounds and ``inf`` when any round had no noise.
    """
    if accountant not in _ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {_ACCOUNTANTS}, got {accountant!r}")
    phases = [(float(s), float(q), int(t)) for s, q, t in history if int(t) > 0 and float(q) > 0]
    for s, q, t in phases:
        _check(s, q, t, delta)
    if not phases:
        return 0.0
    if any(s == 0 for s, _, _ in phases):
        return math.inf
    if accountant == "prv":
        acc = create_accountant("prv")
        acc.history = list(phases)
        return float(acc.get_epsilon(delta=delta))
    rdp = [0.0] * len(orders)
    for s, q, t in phases:
        rdp = [
            a + b
            for a, b in zip(
                rdp, user_rdp(noise_multiplier=s, sample_rate=q, rounds=t, orders=orders), strict=True
            )
        ]
    eps, _ = rdp_analysis.get_privacy_spent(orders=list(orders), rdp=rdp, delta=delta)  # warns at a grid edge
    return float(eps)


def user_epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    accountant: str = "rdp",
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """User-level epsilon after ``rounds`` rounds with fixed sigma and device sampling rate q."""
    _check(noise_multiplier, sample_rate, rounds, delta)
    return user_epsilon_from_history(
        history=[(noise_multiplier, sample_rate, rounds)], delta=delta, accountant=accountant, orders=orders
    )


def user_noise_for_epsilon(
    *,
    target_epsilon: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    accountant: str = "rdp",
    tolerance: float = 0.01,
) -> float:
    """Smallest sigma (to ``tolerance`` in epsilon) whose user-level epsilon after ``rounds`` <= target.

    Bisection on sigma, as Opacus' ``get_noise_multiplier``; epsilon is decreasing in sigma.
    """
    if target_epsilon <= 0:
        raise ValueError(f"target_epsilon must be positive, got {target_epsilon}")
    _check(1.0, sample_rate, rounds, delta)

    def eps(sigma: float) -> float:
        return user_epsilon(
            noise_multiplier=sigma, sample_rate=sample_rate, rounds=rounds, delta=delta, accountant=accountant
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # edge-of-grid warnings are expected while bracketing
        low, high = 0.0, 1.0
        eps_high = eps(high)
        while eps_high > target_epsilon:
            low, high = high, 2 * high
            if high > 1e4:
                raise ValueError(
                    f"no sigma <= 1e4 reaches epsilon {target_epsilon} (q={sample_rate}, "
                    f"rounds={rounds}, delta={delta})"
                )
            eps_high = eps(high)
        while target_epsilon - eps_high > tolerance and high - low > 1e-6:
            mid = (low + high) / 2
            eps_mid = eps(mid)
            if eps_mid <= target_epsilon:
                high, eps_high = mid, eps_mid
            else:
                low = mid
        return high


class UserLevelAccountant:
    """Stateful user-level accountant: one ``step`` per federated round.

    History is kept as merged ``(noise_multiplier, sample_rate, rounds)`` phases, like Opacus'
    ``RDPAccountant``; epsilon is converted once, on demand.
    """

    def __init__(self, *, delta: float, accountant: str = "rdp") -> None:
        if accountant not in _ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {_ACCOUNTANTS}, got {accountant!r}")
        _check(0.0, 0.0, 0, delta)
        self.delta = delta
        self.accountant = accountant
        self.history: list[tuple[float, float, int]] = []

    def step(self, *, noise_multiplier: float, sample_rate: float) -> None:
        """Record one round with noise multiplier sigma_t and device sampling rate q_t."""
        _check(noise_multiplier, sample_rate, 1)
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            s, q, t = self.history[-1]
            self.history[-1] = (s, q, t + 1)
        else:
            self.history.append((noise_multiplier, sample_rate, 1))

    @property
    def rounds(self) -> int:
        """Rounds recorded so far."""
        return sum(t for _, _, t in self.history)

    def user_epsilon(self, delta: float | None = None) -> float:
        """User-level epsilon spent so far (0.0 before any round)."""
        return user_epsilon_from_history(
            history=self.history, delta=self.delta if delta is None else delta, accountant=self.accountant
        )
