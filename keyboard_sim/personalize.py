"""On-device personalization: a per-user vocabulary bias u added to the global model's logits.

    z_user(context) = z_global(context) + u,      u in R^V

u is fitted on the device from the user's *earlier* lines (the global model frozen), by
minimising cross-entropy + lambda * ||u||^2 (the penalty keeps rare words from being inflated
by a single use). It is then encrypted under the user's own key and added homomorphically at
inference (one ciphertext addition, no extra depth). It is measured on the user's *later*
lines, which it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.data import Examples
from models.nplm import NPLM

__all__ = ["PersonalizationConfig", "fit_bias_to_logits", "fit_vocab_bias", "topk_accuracy_with_bias"]

_NEVER_SUGGESTED = (0, 1)  # <unk>, <s>


@dataclass
class PersonalizationConfig:
    """Fitting the vocabulary bias."""

    steps: int = 60
    lr: float = 0.1
    l2: float = 5e-2  # lambda, pull of u towards 0 (0.05 beat 0.01 and 0.001 on held-out later lines)
    max_abs: float = 4.0  # |u_i| is clipped: bounds what the encrypted adapter can add

    def __post_init__(self) -> None:
        for name in ("steps", "lr", "max_abs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PersonalizationConfig.{name} must be positive")
        if self.l2 < 0:
            raise ValueError("PersonalizationConfig.l2 must be >= 0")


@torch.no_grad()
def _global_logits(model: NPLM, examples: Examples) -> torch.Tensor:
    was_training = model.training
    model.eval()
    logits = model(torch.from_numpy(examples.x))
    model.train(was_training)
    return logits


def fit_vocab_bias(
    model: NPLM, examples: Examples, config: PersonalizationConfig | None = None
) -> np.ndarray:
    """The user's bias u (V,) fitted on ``examples`` with the model frozen; zeros if there are none."""
    if len(examples) == 0:
        return np.zeros(model.config.vocab_size, dtype=np.float32)
    return fit_bias_to_logits(_global_logits(model, examples).numpy(), examples.y, config)


def fit_bias_to_logits(
    logits: np.ndarray, targets: np.ndarray, config: PersonalizationConfig | None = None
) -> np.ndarray:
    """u (V,) minimising cross-entropy(logits + u, targets) + lambda ||u||^2, |u_i| <= max_abs.

    ``logits`` (n, V) are the frozen global model's, however they were obtained: computed on the
    device, or (a thin client without the head) decrypted from the server's encrypted answers.
    """
    config = config or PersonalizationConfig()
    base = torch.as_tensor(np.asarray(logits), dtype=torch.float32)  # (n, V)
    target = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    u = torch.zeros(base.shape[1], requires_grad=True)
    opt = torch.optim.Adam([u], lr=config.lr)
    for _ in range(config.steps):
        loss = torch.nn.functional.cross_entropy(base + u, target) + config.l2 * u.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            u.clamp_(-config.max_abs, config.max_abs)
    return u.detach().numpy().astype(np.float32)


def topk_accuracy_with_bias(
    model: NPLM, examples: Examples, bias: np.ndarray | None, k: int = 3, unk_id: int = 0
) -> float:
    """Top-k accuracy over in-vocabulary targets of ``model`` (+ ``bias``) on ``examples``."""
    logits = _global_logits(model, examples)
    if bias is not None:
        logits = logits + torch.from_numpy(np.asarray(bias, dtype=np.float32))
    logits[:, list(_NEVER_SUGGESTED)] = -torch.inf
    top = logits.topk(k, dim=-1).indices.numpy()
    known = examples.y != unk_id
    if not known.any():
        return float("nan")
    return float((top[known] == examples.y[known, None]).any(axis=1).mean())
