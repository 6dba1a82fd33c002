"""Public-split pretraining: the warm start federated runs may begin from (as Gboard does).

Only the public plays are trained on, so the released warm start carries no private text and
needs no privacy budget; it is scored on held-out users like everything else.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from keyboard_sim.dataset import DataConfig, build_federated_data
from models.config import SHIPPED_KIND, ModelConfig, TrainConfig, shipped_model_config
from models.factory import build_model, export_weights
from models.release import save_release
from models.train import default_positions, evaluate, train_central

__all__ = ["pretrain_public"]


def pretrain_public(
    data_config: DataConfig,
    out: Path,
    *,
    epochs: float = 3.0,
    seed: int = 0,
    model_config: ModelConfig | None = None,
    kind: str = "nplm",
) -> dict:
    """Train on the public split, save a release to ``out`` and return its model card.

    The model is ``model_config`` or the shipped shape of ``kind``; the data's context follows it.
    """
    model_config = model_config or shipped_model_config(data_config.vocab_size, kind)
    data_config = dataclasses.replace(data_config, context=model_config.context)
    data = build_federated_data(data_config)
    model_config = dataclasses.replace(model_config, vocab_size=len(data.vocab))
    torch.manual_seed(seed)
    model = build_model(model_config)
    positions = default_positions(model_config)
    # the shipped kind trains with the shipped recipe; others keep train_central's defaults (the NPLM
    # warm start the federated runs were measured from). No weight EMA: the public split is short (2
    # epochs are ~490 steps), and the returned average would keep 0.999^490 = 61% of the random init
    # (LSTM held-out top-1 0.053 with it, 0.111 without)
    recipe = {**TrainConfig().fit_kwargs(), "ema": 0.0} if model_config.kind == SHIPPED_KIND else {}
    summary = train_central(model, data.public, epochs=epochs, seed=seed, positions=positions, **recipe)
    card = {
        "trained": "public split only, no DP needed",
        "data": data_config.to_dict(),
        "train": summary,
        "metrics": {"heldout": evaluate(model, data.heldout)},
        "epsilon": None,
    }
    return save_release(out, export_weights(model), model_config, data.vocab, card).card
