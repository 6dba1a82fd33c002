"""The server head, the only part of any model that runs under CKKS, and its numpy reference.

    a = h * (h + beta)        (H,)  one ciphertext x ciphertext multiply: 1 level
    z = W2 a + b2 (+ u)       (V,)  encrypted matvec (diagonal method, BSGS): 1 level
                                    u = the user's encrypted vocabulary bias, one addition

HE cost at H = 256, V = 4096 (one ciphertext of logits at N = 8192): 1 ct x ct multiply +
relinearization, 24 rotations, 129 plaintext multiplies (``ckks.nplm_circuit``, mode "h"). The
leading coefficient of the quadratic is learned inside W2; beta is fixed so the circuit is static.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.config import ModelConfig

__all__ = ["HEAD_KEYS", "PolyHead", "QuadraticActivation", "head_logits"]

HEAD_KEYS = ("w2", "b2", "beta")  # the exported arrays the server holds (names shared with the NPLM)


class QuadraticActivation(nn.Module):
    """a = h * (h + beta): one ciphertext-ciphertext multiply under CKKS."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (h + self.beta)


class PolyHead(nn.Module):
    """h (B, H) -> logits (B, V): quadratic activation, dropout (training only), vocabulary projection."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.act = QuadraticActivation(config.beta)
        self.drop = nn.Dropout(config.dropout)
        self.proj = nn.Linear(config.hidden, config.vocab_size)
        nn.init.normal_(self.proj.weight, std=0.5 / config.hidden**0.5)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(self.act(h)))  # (B, V)


def head_logits(
    weights: dict[str, np.ndarray], h: np.ndarray, personal_bias: np.ndarray | None = None
) -> np.ndarray:
    """Exactly the encrypted head in float64: W2 (h * (h + beta)) + b2 (+ u); h (H,) or (B, H)."""
    w2, b2 = weights["w2"].astype(np.float64), weights["b2"].astype(np.float64)
    beta = float(np.asarray(weights["beta"]).reshape(-1)[0])
    h = np.asarray(h, dtype=np.float64)
    z = (h * (h + beta)) @ w2.T + b2  # (..., V)
    if personal_bias is not None:
        z = z + np.asarray(personal_bias, dtype=np.float64)
    return z
