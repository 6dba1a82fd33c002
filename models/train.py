"""Central (non-federated, non-DP) training and evaluation of the NPLM.

The central model is a baseline ("the same network trained centrally without DP") and, trained
on the public split, the warm start that federated runs may begin from.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.config import ModelConfig
from models.data import Examples, anchor_windows
from models.metrics import next_word_metrics
from models.nplm import NPLM
from models.vocab import Vocabulary

__all__ = [
    "LSTM_POSITIONS",
    "WeightAverage",
    "default_positions",
    "evaluate",
    "train_central",
    "predict_topk",
]

_NEVER_SUGGESTED = (0, 1)  # <unk>, <s>
LSTM_POSITIONS = 4  # window positions an LSTM is trained on (``train_central``'s ``positions``): 1/4 of
# the recurrent work per target (~2x less CPU per epoch); after 0.4 epoch valid top-1 0.103 vs 0.105 with 1


def default_positions(config: ModelConfig) -> int:
    """How many of each window's last positions central training scores for ``config``'s kind."""
    return min(LSTM_POSITIONS, config.context) if config.kind == "lstm" else 1


@torch.no_grad()
def predict_topk(
    model: NPLM, examples: Examples, k: int = 3, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """(log P(target), top-k ids) for every example; ``<unk>``/``<s>`` are never predicted."""
    was_training = model.training
    model.eval()
    logps, tops = [], []
    for start in range(0, len(examples), batch_size):
        x = torch.from_numpy(examples.x[start : start + batch_size])
        y = torch.from_numpy(examples.y[start : start + batch_size])
        logp = torch.log_softmax(model(x), dim=-1)  # (B, V)
        logps.append(logp.gather(1, y[:, None])[:, 0].numpy())
        logp[:, list(_NEVER_SUGGESTED)] = -torch.inf
        tops.append(logp.topk(k, dim=-1).indices.numpy())
    model.train(was_training)
    if not logps:
        return np.zeros(0), np.zeros((0, k), dtype=np.int64)
    return np.concatenate(logps), np.concatenate(tops)


def evaluate(model: NPLM, examples: Examples, unk_id: int = 0, batch_size: int = 4096) -> dict:
    """``models.metrics.next_word_metrics`` of ``model`` on ``examples``."""
    logp, topk = predict_topk(model, examples, k=3, batch_size=batch_size)
    return next_word_metrics(examples.y, topk, logp, unk_id)


def _batch_loss(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, positions: int):
    """Mean cross-entropy of the window's last ``positions`` next words (``<s>`` targets ignored)."""
    if positions == 1:
        return loss_fn(model(x), y)
    targets = torch.cat([x[:, 1:], y[:, None]], dim=1)[:, -positions:]  # (B, m): word after each position
    logits = model.forward_positions(x, positions)  # (B, m, V)
    return loss_fn(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class WeightAverage:
    """Exponential moving average of a model's floating-point state (Polyak & Juditsky 1992).

    After each optimiser step, ``update`` sets avg <- decay * avg + (1 - decay) * w for every
    parameter and float buffer; ``swapped_in`` puts the averages into the model for a while.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.model, self.decay = model, decay
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self) -> None:
        """One averaging step with the model's current weights."""
        state = self.model.state_dict()
        for key, avg in self.avg.items():
            avg.lerp_(state[key], 1.0 - self.decay)

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (non-float buffers are left as they are)."""
        model.load_state_dict(self.avg, strict=False)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The averaged weights in the model inside the block, the trained ones restored after it."""
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items() if k in self.avg}
        self.copy_to(self.model)
        try:
            yield
        finally:
            self.model.load_state_dict(raw, strict=False)


def train_central(
    model: NPLM,
    examples: Examples,
    *,
    epochs: float = 1.0,
    lr: float = 2e-3,
    batch_size: int = 256,
    seed: int = 0,
    weight_decay: float = 0.0,
    max_seconds: float | None = None,
    log_every: int = 0,
    valid: Examples | None = None,
    checkpoint: Path | None = None,
    positions: int = 1,
    ema: float = 0.0,
    label_smoothing: float = 0.0,
    lr_floor: float = 0.1,
) -> dict:
    """Train ``model`` in place with Adam and cross-entropy; returns a small training summary.

    ``epochs`` may be fractional; ``max_seconds`` stops early (reported in the summary). With
    ``valid``, validation top-1 is measured after every epoch and the best epoch's weights are
    restored at the end (early stopping on the keyboard's metric: later epochs can raise the loss
    while still improving top-1; ``valid`` must not be evaluation data). With ``checkpoint``, the
    model's state is saved there after every epoch and the epoch's validation scores go to stderr,
    so a long run can be watched and its last epoch recovered.

    ``positions`` m > 1 (lstm only) scores each window at its last m positions, as a recurrent LM is
    trained, on the windows ``anchor_windows`` picks (each target once per pass over them), batch_size
    positions per step, for 1/m of the recurrent work (contexts of k-m+1..k words). ``epochs`` still
    counts len(examples) / batch_size steps; as positions before a sentence's start are ``<s>``
    (ignored), that is ~0.87 of a pass over the anchors on the default corpus. Evaluation is
    unchanged: always the last position of every window.

    ``weight_decay`` is AdamW's (decoupled). ``ema`` > 0 keeps an exponential moving average of
    the weights (Polyak averaging, decay ``ema`` per step): with ``valid`` the averaged and the
    trained weights of every epoch compete for best (``best_averaged`` says which won); without,
    the averaged weights are returned. ``label_smoothing`` is cross-entropy's. The lr decays by a cosine
    to ``lr_floor`` x lr over the run (1.0: a constant lr).
    """
    if len(examples) == 0:
        raise ValueError("no training examples")
    if not 0.0 <= lr_floor <= 1.0:
        raise ValueError(f"lr_floor must be in [0, 1], got {lr_floor}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # <s>: padding / sentence boundary, never a target
    loss_fn = nn.CrossEntropyLoss(ignore_index=Vocabulary.bos_id, label_smoothing=label_smoothing)
    average = WeightAverage(model, ema) if ema > 0 else None
    x_all, y_all = torch.from_numpy(examples.x), torch.from_numpy(examples.y)
    windows = None
    if positions > 1:
        windows = torch.from_numpy(anchor_windows(examples, positions, Vocabulary.bos_id))
    batch_windows = max(1, batch_size // positions)
    total_steps = max(1, int(epochs * len(examples) / batch_size))
    model.train()
    start, step, seen, running = time.perf_counter(), 0, 0, 0.0
    best: dict = {"top1": -1.0, "state": None, "epoch": None, "averaged": None}
    valid_curve: list[dict] = []

    def consider(top1: float, averaged: bool) -> None:
        if top1 > best["top1"]:  # select on the keyboard's metric, not on loss
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best.update(top1=top1, state=state, epoch=len(valid_curve) + 1, averaged=averaged)

    def end_of_epoch() -> None:
        if valid is None or len(valid) == 0:
            return
        scores = evaluate(model, valid)
        entry = {"loss": scores["loss"], "top1": scores["top1"]}
        consider(scores["top1"], averaged=False)
        if average is not None:  # the averaged weights compete with the trained ones
            with average.swapped_in():
                scores = evaluate(model, valid)
                entry.update(ema_loss=scores["loss"], ema_top1=scores["top1"])
                consider(scores["top1"], averaged=True)
        valid_curve.append(entry)
        if checkpoint is not None:
            torch.save(model.state_dict(), checkpoint)
            epoch = {"epoch": len(valid_curve), "step": step, **entry}
            print(json.dumps({**epoch, "checkpoint": str(checkpoint)}), file=sys.stderr, flush=True)
        model.train()

    while step < total_steps:
        if windows is None:
            order = torch.randperm(len(examples), generator=gen)
        else:
            order = windows[torch.randperm(len(windows), generator=gen)]
        for i in range(0, max(1, len(order) - batch_windows + 1), batch_windows):
            idx = order[i : i + batch_windows]
            # cosine decay to lr_floor x lr (default 10%), so short runs still settle
            for group in opt.param_groups:
                group["lr"] = lr * (
                    lr_floor + (1 - lr_floor) * 0.5 * (1 + np.cos(np.pi * step / total_steps))
                )
            loss = _batch_loss(model, loss_fn, x_all[idx], y_all[idx], positions)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None:
                average.update()
            running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
            step += 1
            seen += len(idx) * positions
            if log_every and step % log_every == 0:
                print(f"step {step}/{total_steps} loss {running:.3f}", flush=True)
            if step >= total_steps or (max_seconds and time.perf_counter() - start > max_seconds):
                break
        end_of_epoch()
        if max_seconds and time.perf_counter() - start > max_seconds:
            break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    elif average is not None:
        average.copy_to(model)
    model.eval()
    seconds = time.perf_counter() - start
    return {
        "steps": step,
        "examples_seen": seen,
        "final_loss": running,
        "seconds": seconds,
        "stopped_early": step < total_steps,
        "valid_per_epoch": valid_curve,
        "best_epoch": best["epoch"],
        "best_averaged": best["averaged"],
    }
