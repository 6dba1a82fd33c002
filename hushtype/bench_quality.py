"""``hushtype bench quality``: how good the next-word model is on users it never trained on.

Trains, on the same users (public split + train users' earlier lines), an interpolated
Kneser-Ney trigram, the shipped model (``QualityConfig.model``, centrally, no DP) and the old
NPLM, then scores all three on every held-out user's lines with ``models.metrics`` (see there
which targets count). Every model sees the same windows: the data is built with the longest
context any of them needs and each takes its last k words (KN the last 2, the NPLM the last 4).
The networks read contexts of ``DataConfig.context_scope``; KN always reads its own sentence only
(``models.data.sentence_windows``), so the baseline is the same whatever the scope.

Spread: ratios to KN come with a 95% interval from a bootstrap over held-out *users* (users are
the unit that varies between deployments; their examples are not independent). Prints one JSON
object; the shipped model's fields keep the names they had when the NPLM was shipped (``top1``,
``perplexity``, ...), the NPLM's are prefixed ``nplm_``, the n-gram's ``ngram_``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from keyboard_sim.dataset import DataConfig, FederatedData, build_federated_data
from models.config import KINDS, SHIPPED_KIND, ModelConfig, TrainConfig, shipped_model_config
from models.data import Examples, sentence_windows
from models.factory import build_model, encoder_keys, export_weights, param_names
from models.metrics import next_word_metrics
from models.ngram import KneserNeyTrigram
from models.release import save_release
from models.train import default_positions, evaluate, predict_topk, train_central

__all__ = ["QualityConfig", "run_quality", "train_release"]

VALID_WINDOWS = 20_000  # train users' later-line windows scored after every epoch


@dataclass
class QualityConfig:
    """Knobs of the quality benchmark; ``quick`` trades epochs for time (~5 min on 2 shared cores)."""

    quick: bool = False
    model: str = SHIPPED_KIND  # the model kind trained, scored and (with release_dir) released
    epochs: float | None = None  # default: 1 quick, 6 full (best epoch by validation top-1)
    lr: float = TrainConfig.lr  # the training recipe's fields default to the shipped TrainConfig
    batch_size: int = TrainConfig.batch_size
    weight_decay: float = TrainConfig.weight_decay
    ema: float = TrainConfig.ema
    label_smoothing: float = TrainConfig.label_smoothing
    seed: int = 0
    release_dir: str | None = None  # also save the trained central model as a release here
    compare_nplm: bool = True  # also train the old NPLM side by side (off: faster)
    bootstrap: int = 1000  # resamples of held-out users for the intervals
    checkpoint_dir: str | None = None  # save each model's state here after every epoch (progress on stderr)
    # also train every model (KN included) on the train users' later lines that validation does not use
    train_on_later: bool = False

    def __post_init__(self) -> None:
        if self.model not in KINDS:
            raise ValueError(f"QualityConfig.model must be one of {KINDS}, got {self.model!r}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"QualityConfig.epochs must be positive, got {self.epochs}")
        if self.bootstrap < 0:
            raise ValueError(f"QualityConfig.bootstrap must be >= 0, got {self.bootstrap}")
        self.recipe  # noqa: B018 (validates the recipe's fields)

    @property
    def recipe(self) -> TrainConfig:
        """The training recipe these fields name."""
        return TrainConfig(self.lr, self.batch_size, self.weight_decay, self.ema, self.label_smoothing)

    @property
    def train_epochs(self) -> float:
        """Epochs actually run."""
        return self.epochs if self.epochs is not None else (1.0 if self.quick else 6.0)


def train_release(
    model_config: ModelConfig,
    train: Examples,
    *,
    epochs: float,
    recipe: TrainConfig,
    seed: int,
    valid: Examples | None = None,
    checkpoint_dir: str | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train a model of ``model_config.kind`` centrally (no DP), early-stopped on ``valid``."""
    torch.manual_seed(seed)
    model = build_model(model_config)
    checkpoint = None
    if checkpoint_dir:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        checkpoint = Path(checkpoint_dir) / f"{model_config.kind}.pt"
    fit = dict(epochs=epochs, seed=seed, valid=valid, checkpoint=checkpoint, **recipe.fit_kwargs())
    summary = train_central(model, train, **fit, positions=default_positions(model_config))
    return model, summary


def _validation_split(data: FederatedData, windows: int) -> tuple[Examples, Examples]:
    """(validation, rest) of the train users' *later* lines (never held-out users'): validation is
    their first ``windows`` windows (early stopping); rest is the later lines of the users after
    the last one validation touches (the same user's other later lines are in neither)."""
    valid, rest, seen = [], [], 0
    for user in data.train_users:
        if seen < windows:
            valid.append(user.later)
        else:
            rest.append(user.later)
        seen += len(user.later)
    pooled = Examples.concat(valid, data.context)
    return Examples(pooled.x[:windows], pooled.y[:windows]), Examples.concat(rest, data.context)


def _fit_gap(model: torch.nn.Module, train: Examples, valid: Examples, seed: int) -> dict:
    """Top-1 of the trained model on a sample of its own training windows and on validation."""
    pick = np.random.default_rng(seed).choice(len(train), min(VALID_WINDOWS, len(train)), replace=False)
    seen = evaluate(model, Examples(train.x[pick], train.y[pick]))
    unseen = evaluate(model, valid) if len(valid) else {"top1": None, "loss": None}
    return {
        "train_sample_top1": seen["top1"],
        "train_sample_loss": seen["loss"],
        "valid_top1": unseen["top1"],
        "valid_loss": unseen["loss"],
    }


def _last(examples: Examples, k: int) -> Examples:
    """The same windows with only their last ``k`` context words (left padding is ``<s>`` anyway)."""
    return Examples(examples.x[:, -k:], examples.y)


def _user_index(data: FederatedData) -> np.ndarray:
    """The held-out user of every example of ``data.heldout`` (same order)."""
    sizes = [len(u.train) + len(u.later) for u in data.heldout_users]
    return np.repeat(np.arange(len(sizes)), sizes)


def _per_user(values: np.ndarray, users: np.ndarray, n_users: int) -> np.ndarray:
    return np.bincount(users, weights=values.astype(np.float64), minlength=n_users)


def _bootstrap_ratios(
    scores: dict[str, dict[str, np.ndarray]], users: np.ndarray, known: np.ndarray, resamples: int, seed: int
) -> dict[str, list[float]]:
    """95% intervals of top-1 ratios and perplexity ratios to KN, resampling held-out users."""
    n_users = int(users.max()) + 1
    known_u = _per_user(known, users, n_users)
    count_u = _per_user(np.ones_like(known), users, n_users)
    per = {
        name: (_per_user(s["hit1"] & known, users, n_users), _per_user(-s["logp"], users, n_users))
        for name, s in scores.items()
    }
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_users, size=(resamples, n_users))
    top1 = {n: h[draws].sum(1) / known_u[draws].sum(1) for n, (h, _) in per.items()}
    ppl = {n: np.exp(nll[draws].sum(1) / count_u[draws].sum(1)) for n, (_, nll) in per.items()}
    out: dict[str, list[float]] = {}
    for name in scores:
        out[f"{name}top1_ci95"] = np.percentile(top1[name], [2.5, 97.5]).tolist()
        if name != "ngram_":
            out[f"{name}top1_ratio_to_ngram_ci95"] = np.percentile(
                top1[name] / top1["ngram_"], [2.5, 97.5]
            ).tolist()
            ratio = ppl[name] / ppl["ngram_"]
            out[f"{name}perplexity_ratio_to_ngram_ci95"] = np.percentile(ratio, [2.5, 97.5]).tolist()
    return out


def _scores(logp: np.ndarray, topk: np.ndarray, heldout: Examples, unk: int) -> dict:
    return {
        "metrics": next_word_metrics(heldout.y, topk, logp, unk),
        "hit1": topk[:, 0] == heldout.y,
        "logp": logp,
    }


def run_quality(
    config: QualityConfig, data_config: DataConfig | None = None, model_config: ModelConfig | None = None
) -> dict:
    """Run the benchmark and return its JSON-ready result."""
    start = time.perf_counter()
    data_config = data_config or DataConfig()
    probe = model_config or shipped_model_config(data_config.vocab_size, config.model)
    nplm_config = shipped_model_config(data_config.vocab_size, "nplm")
    context = max(probe.context, nplm_config.context if config.compare_nplm else 2, 2)
    data_config = dataclasses.replace(data_config, context=context)
    data = build_federated_data(data_config)
    model_config = dataclasses.replace(probe, vocab_size=len(data.vocab))
    train = Examples.concat([data.public, data.train], data.context)
    heldout, unk = data.heldout, data.vocab.unk_id
    valid, rest = _validation_split(data, VALID_WINDOWS)
    if config.train_on_later:
        train = Examples.concat([train, rest], data.context)

    t0 = time.perf_counter()
    bos = data.vocab.bos_id  # KN keeps its sentence-start context whatever the scope (the same baseline)
    ngram = KneserNeyTrigram(len(data.vocab)).fit(sentence_windows(train, bos))
    kn_heldout = sentence_windows(heldout, bos)
    scores = {"ngram_": _scores(*ngram.log_prob_and_topk(kn_heldout, k=3, exclude=(unk, bos)), heldout, unk)}
    ngram_seconds = time.perf_counter() - t0

    fit = dict(
        epochs=config.train_epochs,
        recipe=config.recipe,
        seed=config.seed,
        checkpoint_dir=config.checkpoint_dir,
    )
    k = model_config.context
    model, summary = train_release(model_config, _last(train, k), valid=_last(valid, k), **fit)
    scores[""] = _scores(*predict_topk(model, _last(heldout, k)), heldout, unk)
    nplm_summary = None
    if config.compare_nplm:
        nplm_config = dataclasses.replace(nplm_config, vocab_size=len(data.vocab))
        kn = nplm_config.context
        nplm, nplm_summary = train_release(nplm_config, _last(train, kn), valid=_last(valid, kn), **fit)
        scores["nplm_"] = _scores(*predict_topk(nplm, _last(heldout, kn)), heldout, unk)

    shipped, ngram_m = scores[""]["metrics"], scores["ngram_"]["metrics"]
    fit_gap = _fit_gap(model, _last(train, k), _last(valid, k), config.seed)
    weights = export_weights(model)
    n_encoder = sum(weights[key].size for key in encoder_keys(model_config))
    n_params = sum(model.get_parameter(name).numel() for name in param_names(model).values())
    result = {
        "model": model_config.kind,
        "top1": shipped["top1"],
        "top3": shipped["top3"],
        "top1_all": shipped["top1_all"],
        "top3_all": shipped["top3_all"],
        "perplexity": shipped["perplexity"],
        "ngram_top1": ngram_m["top1"],
        "ngram_top3": ngram_m["top3"],
        "ngram_top1_all": ngram_m["top1_all"],
        "ngram_top3_all": ngram_m["top3_all"],
        "ngram_perplexity": ngram_m["perplexity"],
        "top1_ratio_to_ngram": shipped["top1"] / ngram_m["top1"],
        "perplexity_ratio_to_ngram": shipped["perplexity"] / ngram_m["perplexity"],
    }
    if nplm_summary is not None:
        old = scores["nplm_"]["metrics"]
        result.update(
            {
                "nplm_top1": old["top1"],
                "nplm_top3": old["top3"],
                "nplm_perplexity": old["perplexity"],
                "nplm_top1_ratio_to_ngram": old["top1"] / ngram_m["top1"],
                "nplm_perplexity_ratio_to_ngram": old["perplexity"] / ngram_m["perplexity"],
            }
        )
    if config.bootstrap:
        known = heldout.y != unk
        result.update(_bootstrap_ratios(scores, _user_index(data), known, config.bootstrap, config.seed))
    result.update(
        {
            "params": n_params,
            "encoder_params": n_encoder,
            "head_params": n_params - n_encoder,
            "model_config": model_config.to_dict(),
            "oov_rate": data.oov_rate,
            "vocab_size": len(data.vocab),
            "vocab_source": data.vocab.source,
            "context_scope": data_config.context_scope,
            "public_examples": len(data.public),
            "users_train": len(data.train_users),
            "users_heldout": len(data.heldout_users),
            "train_examples": len(train),
            "train_on_later": config.train_on_later,
            "heldout_targets": shipped["targets"],
            "heldout_targets_known": shipped["targets_known"],
            "epochs": config.train_epochs,
            "train_positions": default_positions(model_config),
            "recipe": config.recipe.fit_kwargs(),
            "valid_per_epoch": summary["valid_per_epoch"],
            "train_seconds": summary["seconds"],
            "best_epoch": summary["best_epoch"],
            "best_averaged": summary["best_averaged"],
            **fit_gap,
            "nplm_train_seconds": nplm_summary["seconds"] if nplm_summary else None,
            "nplm_best_epoch": nplm_summary["best_epoch"] if nplm_summary else None,
            "ngram_seconds": ngram_seconds,
            "quick": config.quick,
            "seconds": 0.0,
        }
    )
    if config.release_dir:
        card = {
            "trained": "central, no DP (baseline)",
            "data": data_config.to_dict(),
            "metrics": {"heldout": shipped},
            "epsilon": None,
        }
        save_release(Path(config.release_dir), weights, model_config, data.vocab, card)
    result["seconds"] = time.perf_counter() - start
    return result
