"""``hushtype bench quality``: how good the next-word model is on users it never trained on.

Trains, on the same users (public split + train users' earlier lines), an interpolated
Kneser-Ney trigram and the NPLM (centrally, no DP), then scores both on every held-out user's
lines with ``models.metrics`` (see there which targets count). Prints one JSON object.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from keyboard_sim.dataset import DataConfig, build_federated_data
from models.data import Examples
from models.metrics import next_word_metrics
from models.ngram import KneserNeyTrigram
from models.nplm import NPLM, ModelConfig, export_weights
from models.release import save_release
from models.train import evaluate, train_central

__all__ = ["QualityConfig", "run_quality", "train_release"]


@dataclass
class QualityConfig:
    """Knobs of the quality benchmark; ``quick`` trades epochs for time (< 3 min on 2 cores)."""

    quick: bool = False
    epochs: float | None = None  # default: 3 quick, 4 full (best epoch by validation top-1)
    lr: float = 3e-3
    batch_size: int = 512
    seed: int = 0
    release_dir: str | None = None  # also save the trained central model as a release here

    @property
    def train_epochs(self) -> float:
        """Epochs actually run."""
        return self.epochs if self.epochs is not None else (3.0 if self.quick else 4.0)


def train_release(
    model_config: ModelConfig,
    train: Examples,
    *,
    epochs: float,
    lr: float,
    batch_size: int,
    seed: int,
    valid: Examples | None = None,
) -> tuple[NPLM, dict]:
    """Train an NPLM centrally (no DP) on ``train`` (early-stopped on ``valid``); returns model, summary."""
    torch.manual_seed(seed)
    model = NPLM(model_config)
    summary = train_central(model, train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, valid=valid)
    return model, summary


def run_quality(
    config: QualityConfig, data_config: DataConfig | None = None, model_config: ModelConfig | None = None
) -> dict:
    """Run the benchmark and return its JSON-ready result."""
    start = time.perf_counter()
    data_config = data_config or DataConfig()
    data = build_federated_data(data_config)
    model_config = model_config or ModelConfig(vocab_size=len(data.vocab), context=data_config.context)
    train = Examples.concat([data.public, data.train], data.context)
    heldout = data.heldout
    unk = data.vocab.unk_id

    t0 = time.perf_counter()
    ngram = KneserNeyTrigram(len(data.vocab)).fit(train)
    logp, topk = ngram.log_prob_and_topk(heldout, k=3, exclude=(data.vocab.unk_id, data.vocab.bos_id))
    ngram_metrics = next_word_metrics(heldout.y, topk, logp, unk)
    ngram_seconds = time.perf_counter() - t0

    # early stopping on train users' *later* lines (never on held-out users)
    later = Examples.concat((u.later for u in data.train_users), data.context)
    valid = Examples(later.x[:20_000], later.y[:20_000])
    model, summary = train_release(
        model_config,
        train,
        valid=valid,
        epochs=config.train_epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    nplm = evaluate(model, heldout, unk_id=unk)

    result = {
        "top1": nplm["top1"],
        "top3": nplm["top3"],
        "top1_all": nplm["top1_all"],
        "top3_all": nplm["top3_all"],
        "perplexity": nplm["perplexity"],
        "ngram_top1": ngram_metrics["top1"],
        "ngram_top3": ngram_metrics["top3"],
        "ngram_top1_all": ngram_metrics["top1_all"],
        "ngram_top3_all": ngram_metrics["top3_all"],
        "ngram_perplexity": ngram_metrics["perplexity"],
        "oov_rate": data.oov_rate,
        "vocab_size": len(data.vocab),
        "vocab_source": data.vocab.source,
        "public_examples": len(data.public),
        "users_train": len(data.train_users),
        "users_heldout": len(data.heldout_users),
        "train_examples": len(train),
        "heldout_targets": nplm["targets"],
        "heldout_targets_known": nplm["targets_known"],
        "epochs": config.train_epochs,
        "params": sum(p.numel() for p in model.parameters()),
        "nplm_train_seconds": summary["seconds"],
        "best_epoch": summary["best_epoch"],
        "ngram_seconds": ngram_seconds,
        "quick": config.quick,
        "seconds": 0.0,
    }
    if config.release_dir:
        card = {
            "trained": "central, no DP (baseline)",
            "data": data_config.to_dict(),
            "metrics": {"heldout": nplm},
            "epsilon": None,
        }
        save_release(Path(config.release_dir), export_weights(model), model_config, data.vocab, card)
    result["seconds"] = time.perf_counter() - start
    return result
