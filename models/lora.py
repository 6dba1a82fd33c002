"""A low-rank adapter on the head projection W2 with a fixed, public down-projection (FFA-LoRA).

    logits = W2 a + b2 + B (A a)        a (H,) head features, A (r, H) fixed, B (V, r) trained

LoRA (Hu et al. 2021, arXiv:2106.09685) with A frozen, as in FFA-LoRA (Sun et al., ICLR 2024,
"Improving LoRA in privacy-preserving federated learning", arXiv:2403.12313): A is drawn once from a
public seed and shared by every device, B starts at 0, so devices train and send only B (V x r numbers,
plus ``b2`` when chosen). With A fixed the server's mean of the devices' B is exact,
mean_i(B_i A) = mean_i(B_i) A, and the user-level noise is spread over V r numbers instead of V H.

A has orthonormal rows (the QR of a seeded Gaussian), so z = A a is a random r-dimensional projection
of the features. The released head is the merged W2 + B A (``merge_lora``): the same shape as the
shipped head, so serving and the HE circuit do not change.

In a federated run ``trainable`` names the adapter ``lora<r>`` (e.g. ``lora4`` or ``lora4,b2``); its
arrays travel as ``LORA_A`` (public, never updated: sent by reference like the frozen encoder) and
``LORA_B``.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

__all__ = [
    "LORA_A",
    "LORA_B",
    "LORA_KEYS",
    "LoRAProjection",
    "lora_rank",
    "lora_arrays",
    "lora_a",
    "merge_lora",
]

LORA_A = "lora_a"  # (r, H) float32: fixed, public
LORA_B = "lora_b"  # (V, r) float32: what devices train
LORA_KEYS = (LORA_A, LORA_B)
_NAME = re.compile(r"^lora(\d+)$")


def lora_rank(names: tuple[str, ...] | list[str]) -> int | None:
    """r of the ``lora<r>`` entry among trainable ``names`` (None: no adapter); ValueError on r < 1."""
    ranks = [int(m.group(1)) for m in map(_NAME.match, names) if m]
    if len(ranks) > 1:
        raise ValueError(f"trainable names more than one adapter: {list(names)}")
    if ranks and ranks[0] < 1:
        raise ValueError(f"an adapter's rank must be >= 1, got lora{ranks[0]}")
    return ranks[0] if ranks else None


def lora_a(rank: int, hidden: int, seed: int) -> np.ndarray:
    """A (r, H) float32 with orthonormal rows, from ``seed`` alone (public and reproducible)."""
    if not 1 <= rank <= hidden:
        raise ValueError(f"an adapter's rank must be in [1, {hidden}], got {rank}")
    gaussian = np.random.default_rng(seed).standard_normal((hidden, rank))
    q, _ = np.linalg.qr(gaussian)  # (H, r), orthonormal columns
    return np.ascontiguousarray(q.T, dtype=np.float32)


def lora_arrays(rank: int, hidden: int, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """The adapter at the start of a run: A from ``seed``, B = 0 (so the model is unchanged)."""
    return {LORA_A: lora_a(rank, hidden, seed), LORA_B: np.zeros((vocab_size, rank), dtype=np.float32)}


def merge_lora(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``weights`` with W2 <- W2 + B A and the adapter arrays dropped (unchanged without an adapter)."""
    if LORA_B not in weights:
        return dict(weights)
    a, b = np.asarray(weights[LORA_A], np.float64), np.asarray(weights[LORA_B], np.float64)
    out = {k: v for k, v in weights.items() if k not in LORA_KEYS}
    out["w2"] = (np.asarray(weights["w2"], np.float64) + b @ a).astype(np.float32)  # (V, H)
    return out


class LoRAProjection(nn.Module):
    """a (B, H) -> W2 a + b2 + B (A a) (B, V): ``proj`` holds W2, b2; ``down`` is the fixed A (a buffer:
    never trained); ``lora.weight`` is B (V, r), zero at start. One module for the device's head-only
    DP-SGD (``keyboard_sim.device``) and central training of the adapter (``hushtype bench federated``)."""

    def __init__(self, proj: nn.Linear, rank: int) -> None:
        super().__init__()
        self.proj = proj
        self.register_buffer("down", torch.zeros(rank, proj.in_features))  # A (r, H)
        self.lora = nn.Linear(rank, proj.out_features, bias=False)  # B (V, r)
        nn.init.zeros_(self.lora.weight)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.proj(a) + self.lora(a @ self.down.T)  # (B, V); z = A a is (B, r)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """``proj`` with W2 <- W2 + B A (the adapter folded in; this module's B is left as it is)."""
        self.proj.weight.add_(self.lora.weight @ self.down)
        return self.proj
