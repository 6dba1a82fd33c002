"""MimeLite: the frozen-state device step and the server's moment update are Adam's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from federation.mime import MimeState
from keyboard_sim.plain_device import FrozenAdam


def _grad(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    w = w.detach().requires_grad_(True)
    loss = ((x @ w - y) ** 2).mean()
    loss.backward()
    return w.grad


@pytest.mark.parametrize("vstat", ["g2", "gbar2", "b512"])
def test_one_device_one_step_rounds_are_adam(vstat: str) -> None:
    """1 device x 1 step a round (its g is the round's mean, so every v statistic equals g^2) == Adam."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=gen), torch.randn(64, generator=gen)
    w0 = torch.randn(5, generator=gen)
    ref = w0.clone().requires_grad_(True)
    adam = torch.optim.Adam([ref], lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    w = w0.clone()
    state = MimeState(beta1=0.9, beta2=0.99, vstat=vstat, batch=1)
    for step in range(6):
        batch = slice(step * 8, step * 8 + 8)
        ref.grad = _grad(ref, x[batch], y[batch])
        adam.step()
        p = w.clone()
        opt = FrozenAdam([p], lr=0.01, state=state.frozen({"w": w.numpy()}), keys=("w",))
        p.grad = _grad(p, x[batch], y[batch])
        opt.step()
        g, g2 = opt.grad_sum[0].numpy(), opt.sq_sum[0].numpy()
        np.testing.assert_allclose(g2, g * g, rtol=1e-6)
        state.update({"w": g}, {"w": g2}, device_batch=1)
        w = p
        np.testing.assert_allclose(w.numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_frozen_state_is_held_and_stats_are_step_sums() -> None:
    """Two steps with one frozen state: each step's own g in Adam's formula; sums of g and g^2 kept."""
    state = MimeState(beta1=0.5, beta2=0.75, eps=0.0, vstat="g2")
    state.update({"w": np.array([1.0, 2.0, 0.0])}, {"w": np.array([4.0, 4.0, 0.0])}, device_batch=32)
    frozen = state.frozen({"w": np.zeros(3)})
    p = torch.zeros(3)
    opt = FrozenAdam([p], lr=0.1, state=frozen, keys=("w",))
    grads = [torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.0, -1.0])]
    want = np.zeros(3)
    for grad in grads:
        m_hat = (0.5 * 0.5 * np.array([1.0, 2.0, 0.0]) + 0.5 * grad.numpy()) / (1 - 0.5**2)
        v_hat = (0.75 * 0.25 * np.array([4.0, 4.0, 0.0]) + 0.25 * grad.numpy() ** 2) / (1 - 0.75**2)
        want -= 0.1 * m_hat / np.sqrt(v_hat)
        p.grad = grad.clone()
        opt.step()
    np.testing.assert_allclose(p.numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(opt.grad_sum[0].numpy(), (grads[0] + grads[1]).numpy())
    np.testing.assert_allclose(opt.sq_sum[0].numpy(), (grads[0] ** 2 + grads[1] ** 2).numpy())


def test_b512_statistic_scales_the_minibatch_variance() -> None:
    """v's "b512" statistic: (mean g)^2 plus the per-step variance scaled by device batch / batch."""
    state = MimeState(beta2=0.0, vstat="b512", batch=512)
    state.update({"w": np.array([1.0, 0.0])}, {"w": np.array([3.0, 4.0])}, device_batch=32)
    np.testing.assert_allclose(state.v["w"], [1.0 + 2.0 / 16, 4.0 / 16])
