"""Public-split pretraining: the warm start federated runs may begin from (as Gboard does).

Only the public plays are trained on, so the released warm start carries no private text and
needs no privacy budget; it is scored on held-out users like everything else.
"""

from __future__ import annotations

from pathlib import Path

import torch

from keyboard_sim.dataset import DataConfig, build_federated_data
from models.nplm import NPLM, ModelConfig, export_weights
from models.release import save_release
from models.train import evaluate, train_central

__all__ = ["pretrain_public"]


def pretrain_public(
    data_config: DataConfig,
    out: Path,
    *,
    epochs: float = 3.0,
    seed: int = 0,
    model_config: ModelConfig | None = None,
) -> dict:
    """Train on the public split, save a release to ``out`` and return its model card."""
    data = build_federated_data(data_config)
    model_config = model_config or ModelConfig(vocab_size=len(data.vocab), context=data_config.context)
    torch.manual_seed(seed)
    model = NPLM(model_config)
    summary = train_central(model, data.public, epochs=epochs, seed=seed)
    card = {
        "trained": "public split only, no DP needed",
        "data": data_config.to_dict(),
        "train": summary,
        "metrics": {"heldout": evaluate(model, data.heldout)},
        "epsilon": None,
    }
    return save_release(out, export_weights(model), model_config, data.vocab, card).card
