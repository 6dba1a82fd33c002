"""User-level accounting against an independent computation and as properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.accounting import (
    UserLevelAccountant,
    user_epsilon,
    user_epsilon_from_history,
    user_noise_for_epsilon,
)

INTEGER_ORDERS = tuple(range(2, 129))


def _independent_sgm_rdp(q: float, sigma: float, alpha: int) -> float:
    """RDP of one Sampled Gaussian step at integer order alpha, written from scratch.

    Mironov, Talwar & Zhang 2019, §3.3:
    A_alpha = sum_k C(alpha, k) (1-q)^(alpha-k) q^k exp((k^2 - k) / (2 sigma^2)),
    RDP = log(A_alpha) / (alpha - 1). Summed in log space with plain Python floats.
    """
    terms = [
        math.lgamma(alpha + 1)
        - math.lgamma(k + 1)
        - math.lgamma(alpha - k + 1)
        + (alpha - k) * math.log1p(-q)
        + (k * math.log(q) if k else 0.0)
        + (k * k - k) / (2 * sigma**2)
        for k in range(alpha + 1)
    ]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / (alpha - 1)


def _independent_epsilon(rdp_by_order: dict[int, float], delta: float) -> float:
    """(epsilon, delta) from RDP: Balle et al. 2020, Thm 21, minimised over the orders."""
    return min(
        r + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1) for a, r in rdp_by_order.items()
    )


@pytest.mark.parametrize(
    ("q", "sigma", "rounds", "delta"),
    [(0.2, 1.0, 10, 1e-3), (0.1, 0.7, 50, 1e-5), (0.05, 2.0, 200, 1e-6), (0.3, 1.5, 1, 1e-2)],
)
def test_user_epsilon_matches_independent_rdp(q: float, sigma: float, rounds: int, delta: float) -> None:
    # Prepare
    expected = _independent_epsilon(
        {a: rounds * _independent_sgm_rdp(q, sigma, a) for a in INTEGER_ORDERS}, delta
    )
    # Execute
    got = user_epsilon(
        noise_multiplier=sigma, sample_rate=q, rounds=rounds, delta=delta, orders=INTEGER_ORDERS
    )
    # Assert
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("sigma", "rounds", "delta"), [(1.0, 10, 1e-5), (3.0, 100, 1e-3)])
def test_full_participation_uses_closed_form(sigma: float, rounds: int, delta: float) -> None:
    # q = 1: the plain Gaussian mechanism, RDP(alpha) = alpha / (2 sigma^2) per round.
    expected = _independent_epsilon({a: rounds * a / (2 * sigma**2) for a in INTEGER_ORDERS}, delta)
    got = user_epsilon(
        noise_multiplier=sigma, sample_rate=1.0, rounds=rounds, delta=delta, orders=INTEGER_ORDERS
    )
    assert got == pytest.approx(expected, rel=1e-9)


def test_edge_cases() -> None:
    assert user_epsilon(noise_multiplier=1.0, sample_rate=0.2, rounds=0, delta=1e-5) == 0.0
    assert user_epsilon(noise_multiplier=0.0, sample_rate=0.2, rounds=3, delta=1e-5) == math.inf
    with pytest.raises(ValueError, match="sample_rate"):
        user_epsilon(noise_multiplier=1.0, sample_rate=1.5, rounds=3, delta=1e-5)
    with pytest.raises(ValueError, match="accountant"):
        UserLevelAccountant(delta=1e-5, accountant="moments")


def test_accountant_merges_rounds_and_matches_pure_function() -> None:
    acc = UserLevelAccountant(delta=1e-4)
    for _ in range(5):
        acc.step(noise_multiplier=0.8, sample_rate=0.2)
    acc.step(noise_multiplier=0.5, sample_rate=0.2)  # fewer devices answered: less noise arrived
    assert acc.history == [(0.8, 0.2, 5), (0.5, 0.2, 1)]
    assert acc.rounds == 6
    assert acc.user_epsilon() == pytest.approx(
        user_epsilon_from_history(history=[(0.8, 0.2, 5), (0.5, 0.2, 1)], delta=1e-4)
    )
    assert acc.user_epsilon() > user_epsilon(noise_multiplier=0.8, sample_rate=0.2, rounds=6, delta=1e-4)


def test_prv_and_rdp_agree_roughly() -> None:
    rdp = user_epsilon(noise_multiplier=1.0, sample_rate=0.1, rounds=100, delta=1e-5)
    prv = user_epsilon(noise_multiplier=1.0, sample_rate=0.1, rounds=100, delta=1e-5, accountant="prv")
    assert 0.5 * rdp < prv <= rdp  # PRV is tighter than the RDP conversion


@settings(max_examples=10, deadline=None)
@given(
    target=st.floats(min_value=1.0, max_value=20.0),
    q=st.floats(min_value=0.02, max_value=0.5),
    rounds=st.integers(min_value=1, max_value=30),
)
def test_noise_for_target_stays_under_target(target: float, q: float, rounds: int) -> None:
    sigma = user_noise_for_epsilon(target_epsilon=target, sample_rate=q, rounds=rounds, delta=1e-5)
    eps = user_epsilon(noise_multiplier=sigma, sample_rate=q, rounds=rounds, delta=1e-5)
    assert eps <= target
    assert target - eps <= 0.011 or sigma < 1e-5


@settings(max_examples=25, deadline=None)
@given(
    sigma=st.floats(min_value=0.3, max_value=5.0),
    q=st.floats(min_value=0.01, max_value=1.0),
    rounds=st.integers(min_value=1, max_value=100),
)
def test_epsilon_grows_with_rounds_and_shrinks_with_noise(sigma: float, q: float, rounds: int) -> None:
    eps = user_epsilon(noise_multiplier=sigma, sample_rate=q, rounds=rounds, delta=1e-5)
    assert 0 < eps < math.inf
    assert user_epsilon(noise_multiplier=sigma, sample_rate=q, rounds=rounds + 1, delta=1e-5) >= eps
    assert user_epsilon(noise_multiplier=sigma * 1.5, sample_rate=q, rounds=rounds, delta=1e-5) <= eps
