"""Device-side encoders: k word ids -> h (B, H), in plaintext, so free of any HE limit.

Both are built only from modules Opacus computes per-sample gradients for (``nn.Embedding``,
``nn.Linear``, ``nn.LayerNorm``, Opacus' own ``DPLSTM``), so ``ModuleValidator.validate`` accepts
the model as built: no ``ModuleValidator.fix`` and no parameter renaming on the device.

- ``MLPEncoder``: concatenated embeddings -> GELU layers (pre-LayerNorm residual blocks) ->
  Linear -> LayerNorm. Bengio et al. 2003 widened, with a smooth nonlinearity.
- ``LSTMEncoder``: embeddings -> ``opacus.layers.DPLSTM`` (Hochreiter & Schmidhuber 1997; Gboard's
  keyboard LM is a CIFG LSTM, Hard et al. 2018, arXiv:1811.03604) -> last state -> Linear -> LayerNorm.

The final LayerNorm bounds h (|h_i| of a few units), which keeps the head's quadratic well
behaved in training and its encrypted values well inside the CKKS scale budget.
"""

from __future__ import annotations

import torch
from opacus.layers import DPLSTM
from torch import nn

from models.config import ModelConfig

__all__ = ["LSTMEncoder", "MLPEncoder", "build_encoder"]


class _Residual(nn.Module):
    """x + Dropout(GELU(Linear(LayerNorm(x)))): one pre-norm residual block."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)
        self.act = nn.GELU(approximate="tanh")
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.act(self.fc(self.norm(x))))


class MLPEncoder(nn.Module):
    """(B, k) ids -> (B, H): concatenated embeddings, ``layers`` GELU layers of ``width``, LayerNorm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.fc_in = nn.Linear(config.input_dim, config.width)
        self.act = nn.GELU(approximate="tanh")
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.Sequential(
            *(_Residual(config.width, config.dropout) for _ in range(config.layers - 1))
        )
        self.fc_out = nn.Linear(config.width, config.hidden)
        self.norm = nn.LayerNorm(config.hidden)
        nn.init.normal_(self.embedding.weight, std=0.1)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        x = self.embedding(context).flatten(1)  # (B, k*d)
        x = self.drop(self.act(self.fc_in(x)))  # (B, W)
        x = self.blocks(x)  # (B, W)
        return self.norm(self.fc_out(x))  # (B, H)


class LSTMEncoder(nn.Module):
    """(B, k) ids -> (B, H): an LSTM over the k embeddings (oldest first), its last output projected."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = DPLSTM(
            config.embed_dim,
            config.width,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.fc_out = nn.Linear(config.width, config.hidden)
        self.norm = nn.LayerNorm(config.hidden)
        nn.init.normal_(self.embedding.weight, std=0.1)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.states(context, last=1)[:, 0]  # (B, H)

    def states(self, context: torch.Tensor, last: int) -> torch.Tensor:
        """h after each of the ``last`` words (B, last, H): position j reads the window's words up to j."""
        x = self.drop(self.embedding(context))  # (B, k, d)
        out, _ = self.lstm(x)  # (B, k, W)
        return self.norm(self.fc_out(self.drop(out[:, -last:])))  # (B, last, H)


def build_encoder(config: ModelConfig) -> nn.Module:
    """The encoder of ``config.kind`` ("mlp" or "lstm"; the NPLM's encoder lives in ``models.nplm``)."""
    if config.kind == "mlp":
        return MLPEncoder(config)
    if config.kind == "lstm":
        return LSTMEncoder(config)
    raise ValueError(f"no separate encoder module for kind {config.kind!r}; expected 'mlp' or 'lstm'")
