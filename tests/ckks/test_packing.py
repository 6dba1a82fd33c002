"""EncryptedUpdate: decrypt(op(enc(x))) against numpy within stated tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from ckks.keys import PublicContext, SecretContext
from ckks.packing import EncryptedUpdate, chunk_count, sum_updates
from ckks.params import AGGREGATION
from tests.ckks.conftest import TOL_ONE

N = AGGREGATION.reals_per_ciphertext
#: Max error of the weighted mean of a few updates (noise grows ~sqrt(K), the mean divides by K).
TOL_MEAN = 3e-5


def _vector(kind: str, size: int) -> np.ndarray:
    rng = np.random.default_rng(size)
    if kind == "zeros":
        return np.zeros(size, dtype=np.float32)
    if kind == "negatives":
        return -np.abs(rng.normal(0, 0.1, size)).astype(np.float32)
    return rng.normal(0, 0.1, size).astype(np.float32)


@pytest.mark.parametrize(
    ("kind", "size"),
    [
        ("zeros", 1000),
        ("negatives", 1000),
        ("normal", 1),  # one element
        ("normal", N - 2),  # exactly one chunk with the two reserved slots
        ("normal", N - 1),  # spills one value into a second chunk
        ("normal", 3 * N + 17),  # not a multiple of the slot count
        ("normal", 0),  # empty update: only count and weight
    ],
)
def test_encrypt_decrypt_roundtrip(
    public_ctx: PublicContext, secret_ctx: SecretContext, kind: str, size: int
) -> None:
    x = _vector(kind, size)
    enc = EncryptedUpdate.encrypt(public_ctx, x)
    assert len(enc.chunks) == chunk_count(size, N)
    out = enc.decrypt(secret_ctx)
    assert out.values.shape == (size,)
    if size:
        assert np.max(np.abs(out.values - x)) < TOL_ONE
    assert abs(out.count - 1.0) < TOL_ONE and abs(out.total_weight - 1.0) < TOL_ONE


def test_two_reals_per_slot(public_ctx: PublicContext) -> None:
    assert len(EncryptedUpdate.encrypt(public_ctx, np.full(4 * N - 2, 0.25)).chunks) == 4


def test_weighted_sum_matches_numpy(public_ctx: PublicContext, secret_ctx: SecretContext) -> None:
    rng = np.random.default_rng(0)
    xs = rng.normal(0, 0.1, (5, 2 * N + 100)).astype(np.float32)
    ws = np.array([1.0, 0.5, 2.0, 1.5, 0.25])
    total = sum_updates(
        EncryptedUpdate.encrypt(public_ctx, x, weight=float(w)) for x, w in zip(xs, ws, strict=True)
    )
    out = total.decrypt(secret_ctx)
    assert abs(out.count - 5) < TOL_ONE
    assert abs(out.total_weight - ws.sum()) < TOL_ONE
    np.testing.assert_allclose(out.values, ws @ xs.astype(np.float64), atol=5 * TOL_ONE, rtol=0)
    np.testing.assert_allclose(out.mean(), ws @ xs.astype(np.float64) / ws.sum(), atol=TOL_MEAN, rtol=0)


def test_add_inplace_and_not(public_ctx: PublicContext, secret_ctx: SecretContext) -> None:
    a, b = np.linspace(-1, 1, 300), np.linspace(1, -0.5, 300)
    ea, eb = EncryptedUpdate.encrypt(public_ctx, a), EncryptedUpdate.encrypt(public_ctx, b)
    c = ea + eb  # new object, operands untouched
    assert np.max(np.abs(ea.decrypt(secret_ctx).values - a)) < TOL_ONE
    assert np.max(np.abs(c.decrypt(secret_ctx).values - (a + b))) < 2 * TOL_ONE
    ea += eb
    ea.add_(eb)
    out = ea.decrypt(secret_ctx)
    assert np.max(np.abs(out.values - (a + 2 * b))) < 3 * TOL_ONE
    assert abs(out.count - 3) < TOL_ONE


def test_sum_of_one_is_a_copy(public_ctx: PublicContext, secret_ctx: SecretContext) -> None:
    e = EncryptedUpdate.encrypt(public_ctx, np.ones(10))
    s = sum_updates([e])
    s.add_(e)
    assert abs(e.decrypt(secret_ctx).count - 1) < TOL_ONE
    assert abs(s.decrypt(secret_ctx).count - 2) < TOL_ONE


def test_incompatible_updates_refused(public_ctx: PublicContext) -> None:
    a = EncryptedUpdate.encrypt(public_ctx, np.ones(10))
    b = EncryptedUpdate.encrypt(public_ctx, np.ones(11))
    with pytest.raises(ValueError, match="10 and 11"):
        a + b
    with pytest.raises(ValueError, match="at least one"):
        sum_updates([])


def test_secret_context_is_a_type_error_for_the_aggregator(secret_ctx: SecretContext) -> None:
    with pytest.raises(TypeError, match="SecretContext"):
        EncryptedUpdate.encrypt(secret_ctx, np.ones(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SecretContext"):
        EncryptedUpdate.from_bytes(secret_ctx, b"")  # type: ignore[arg-type]


def test_public_context_cannot_decrypt(public_ctx: PublicContext) -> None:
    e = EncryptedUpdate.encrypt(public_ctx, np.ones(3))
    with pytest.raises(TypeError, match="SecretContext"):
        e.decrypt(public_ctx)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("x", "weight", "match"),
    [
        (np.ones((2, 2)), 1.0, "1-D"),
        (np.array([1.0, np.nan]), 1.0, "NaN"),
        (np.ones(3), 0.0, "positive"),
        (np.ones(3), float("inf"), "positive"),
        (np.full(N, 10.0), 1.0, "L2 norm"),
    ],
)
def test_encrypt_rejects(public_ctx: PublicContext, x: np.ndarray, weight: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EncryptedUpdate.encrypt(public_ctx, x, weight=weight)


@pytest.mark.slow
def test_large_update_twenty_clients(public_ctx: PublicContext, secret_ctx: SecretContext) -> None:
    rng = np.random.default_rng(1)
    xs = rng.normal(0, 0.1, (20, 1_330_000)).astype(np.float32)
    total = sum_updates(EncryptedUpdate.encrypt(public_ctx, x) for x in xs)
    out = total.decrypt(secret_ctx)
    assert round(out.count) == 20
    assert np.max(np.abs(out.mean() - xs.astype(np.float64).mean(0))) < 1e-5
