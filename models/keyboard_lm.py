"""``KeyboardLM``: a device-side encoder (``models.encoders``) and the HE-friendly ``PolyHead``.

    encoder (device, plaintext):  (B, k) ids -> h (B, H)   LSTM or GELU MLP, any nonlinearity
    head    (server, on CKKS):    h -> W2 (h * (h + beta)) + b2   (B, V)   depth 2 (``models.head``)

Exported arrays (``models.factory.export_weights``): ``embedding`` (V, d) and ``enc.<name>`` for the
encoder's other parameters (the encoder's own parameter names), ``w2`` (V, H), ``b2`` (V,) and
``beta`` for the head: the head's names are the NPLM's, so one circuit serves both.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import ModelConfig
from models.encoders import build_encoder
from models.head import PolyHead

__all__ = ["KeyboardLM"]


class KeyboardLM(nn.Module):
    """k word ids -> V next-word logits through ``encoder`` (device) then ``head`` (server)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.kind == "nplm":
            raise ValueError("KeyboardLM needs kind 'mlp' or 'lstm'; the NPLM is models.nplm.NPLM")
        self.config = config
        self.encoder = build_encoder(config)
        self.head = PolyHead(config)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        assert context.dim() == 2 and context.shape[1] == self.config.context, (
            f"context must be (B, {self.config.context}) word ids, got {tuple(context.shape)}"
        )
        return self.head(self.encoder(context))  # (B, H) on the device -> (B, V) on the server

    def forward_positions(self, context: torch.Tensor, last: int) -> torch.Tensor:
        """Training only (lstm): logits after each of the window's ``last`` words, (B, last, V)."""
        if not hasattr(self.encoder, "states"):
            raise ValueError(f"a {self.config.kind!r} encoder reads the window at once: use positions=1")
        return self.head(self.encoder.states(context, last))
