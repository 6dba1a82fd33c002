"""A device without example-level DP: plain torch local training of any arrays (the no-DP arm).

With ``example_noise_multiplier=0`` a device adds no example-level noise, so its example-level epsilon
is infinite whatever it clips; Opacus would only make the step slower (per-sample norms, and the LSTM as
Opacus' ``DPLSTM``, which unrolls in Python). ``PlainDevice`` runs the same local SGD (or Adam) on the
same arrays in plain torch, with the LSTM as torch's fused ``nn.LSTM`` (same parameters), and clips the
batch gradient to ``max_grad_norm`` (a stability guard, not privacy). It has the ``Device`` interface the
client app uses (``train``, ``state``, ``load_state``, ``rounds_trained``) and reports an infinite
example-level epsilon. User-level clipping and noise still happen in the client app. Its ``num_examples``
is the windows this round's steps covered (K batches, or all it has), the weight of ``weighting=examples``.

A round that trains fewer windows than the device holds takes the *next* ones of a fixed shuffle of its
windows (a cursor kept in the ledger, so it survives the worker's cache and a restart), as a central
epoch would, rather than a fresh random draw: fresh draws re-train some windows and skip others. The
last round of a pass trains the rest (fewer steps), so ``ceil(n / (K B))`` rounds train every window
once: the draws ``device_sampling="passes"`` deals (``federation.passes``).
"""

from __future__ import annotations

import math
import time
import zlib
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from federation.mime import FrozenState
from keyboard_sim.device import LocalDPConfig, LocalResult, local_update
from models.config import ModelConfig
from models.data import Examples
from models.factory import build_model, export_weights, load_weights, param_names
from models.fused import fuse_lstm

__all__ = ["FrozenAdam", "FrozenState", "PlainDevice", "local_steps", "shared_model"]

_MODELS: OrderedDict[tuple[str, tuple[str, ...] | None], nn.Module] = OrderedDict()
_MODELS_KEPT = 2


def shared_model(model_config: ModelConfig, trainable: tuple[str, ...] | None) -> nn.Module:
    """One fused module per process for a shape and trainable set, shared by the worker's devices.

    Building it (and fusing the LSTM) cost ~30-70 ms a device, a quarter of a no-DP device's round: a
    worker holds few of the run's devices (``device_cache``), so nearly every message built one. Sharing is
    safe because ``train`` loads every array of the global model first and builds its optimizer anew.
    """
    key = (repr(model_config), trainable)
    if key not in _MODELS:
        _MODELS[key] = fuse_lstm(build_model(model_config))
        while len(_MODELS) > _MODELS_KEPT:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(key)
    return _MODELS[key]


def local_steps(examples: int, batch_size: int, epochs: float, cap: int | None) -> int:
    """Steps of one round: ``epochs`` passes of ``batch_size`` batches, capped at ``cap``, at least one."""
    total = max(1, math.ceil(epochs * math.ceil(examples / min(batch_size, examples))))
    return min(total, cap) if cap is not None else total


class FrozenAdam(torch.optim.Optimizer):
    """MimeLite's local step (Karimireddy et al. 2021, arXiv:2008.03606): Adam with the server's state held.

    ``p <- p - lr * (m + gm * g) / (sqrt(v + gv * g^2) + eps)``: Adam's next step from the server's state,
    its moments frozen for the whole round (the server folds beta1, beta2 and the bias corrections into
    ``m``, ``v``, ``gm``, ``gv``: ``federation.mime.FrozenState``). It sums ``g`` and ``g * g`` over the
    steps, the statistics the server updates its moments from.
    """

    def __init__(
        self, params: list[torch.Tensor], *, lr: float, state: FrozenState, keys: tuple[str, ...]
    ) -> None:
        super().__init__(params, {"lr": lr})
        self.frozen = state
        self.m = [torch.from_numpy(np.asarray(state.m[k], np.float32)) for k in keys]
        self.v = [torch.from_numpy(np.asarray(state.v[k], np.float32)) for k in keys]
        self.grad_sum = [torch.zeros_like(p) for p in params]
        self.sq_sum = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One frozen-state step of every parameter that has a gradient; accumulates g and g^2."""
        lr, f = self.param_groups[0]["lr"], self.frozen
        for p, m, v, gs, ss in zip(
            self.param_groups[0]["params"], self.m, self.v, self.grad_sum, self.sq_sum, strict=True
        ):
            if p.grad is None:
                continue
            sq = p.grad * p.grad
            gs.add_(p.grad)
            ss.add_(sq)
            denom = sq.mul_(f.gv).add_(v).sqrt_().add_(f.eps)
            p.addcdiv_(p.grad * f.gm + m, denom, value=-lr)


def frozen_stats(
    optimizer: torch.optim.Optimizer, keys: tuple[str, ...], steps: int
) -> dict[str, np.ndarray]:
    """A FrozenAdam round's per-step means ``g/<key>`` and ``g2/<key>`` (empty for any other optimizer)."""
    if not isinstance(optimizer, FrozenAdam):
        return {}
    out: dict[str, np.ndarray] = {}
    for key, gs, ss in zip(keys, optimizer.grad_sum, optimizer.sq_sum, strict=True):
        out[f"g/{key}"] = (gs / steps).numpy().astype(np.float32)
        out[f"g2/{key}"] = (ss / steps).numpy().astype(np.float32)
    return out


class PlainDevice:
    """One user's examples and a plain (non-private) local trainer of ``dp.trainable``."""

    def __init__(
        self, device_id: str, examples: Examples, model_config: ModelConfig, dp: LocalDPConfig
    ) -> None:
        if len(examples) == 0:
            raise ValueError(f"device {device_id!r} has no training examples")
        self.device_id = device_id
        self.examples = examples
        self.dp = dp
        self._model = shared_model(model_config, dp.trainable)
        keys = tuple(param_names(self._model))  # = trainable_keys(model_config), without a build
        self.trainable: tuple[str, ...] = keys if dp.trainable is None else dp.trainable
        unknown = [k for k in self.trainable if k not in keys]
        if unknown:
            raise ValueError(
                f"LocalDPConfig.trainable: {unknown} are not arrays of the {model_config.kind!r} model; "
                f"choose from {list(keys)}"
            )
        for key, name in param_names(self._model).items():
            self._model.get_parameter(name).requires_grad_(key in self.trainable)
        self.ledger: list[dict] = []
        order_seed = zlib.crc32(device_id.encode())  # the device's own fixed shuffle of its windows
        self._order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(order_seed))

    def _round_batches(self, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
        """The round's ``steps`` batches: passes over every window, a fresh shuffle each, when they cover
        them all; else the next ``steps`` x B windows of the device's fixed shuffle from its cursor."""
        n, batch = len(self.examples), self.dp.batch_size
        if steps * batch >= n:
            batches: list[torch.Tensor] = []
            while len(batches) < steps:
                batches.extend(torch.randperm(n, generator=generator).split(batch))
            return batches[:steps]
        cursor = sum(int(e.get("windows", 0)) for e in self.ledger) % n
        chunk = self._order[cursor : cursor + steps * batch]  # a pass's last chunk is the rest of it
        return list(chunk[torch.randperm(len(chunk), generator=generator)].split(batch))

    def _optimizer(self, lr: float, frozen: FrozenState | None) -> torch.optim.Optimizer:
        params = [p for p in self._model.parameters() if p.requires_grad]
        if frozen is not None:  # ordered as self.trainable, so frozen_stats reads them back by index
            names = param_names(self._model)
            params = [self._model.get_parameter(names[k]) for k in self.trainable]
            return FrozenAdam(params, lr=lr, state=frozen, keys=self.trainable)
        if self.dp.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr)
        return torch.optim.SGD(params, lr=lr)

    def train(
        self,
        global_weights: dict[str, np.ndarray],
        *,
        server_round: int,
        seed: int,
        lr: float | None = None,
        local_epochs: float | None = None,
        max_local_steps: int | None = None,
        encoder_digest: str | None = None,
        frozen: FrozenState | None = None,
    ) -> LocalResult:
        """Local SGD/Adam from ``global_weights`` (shuffled batches); returns the update.

        ``encoder_digest`` is accepted for the client app's sake: this device caches no features.
        """
        start = time.perf_counter()
        load_weights(self._model, global_weights)
        cap = self.dp.max_local_steps if max_local_steps is None else max_local_steps
        epochs = self.dp.local_epochs if local_epochs is None else local_epochs
        total = local_steps(len(self.examples), self.dp.batch_size, epochs, cap)
        optimizer = self._optimizer(self.dp.lr if lr is None else lr, frozen)
        params = [p for p in self._model.parameters() if p.requires_grad]
        x, y = torch.from_numpy(self.examples.x), torch.from_numpy(self.examples.y)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # dropout
        self._model.train()
        losses: list[float] = []
        batches = self._round_batches(total, generator)
        for batch in batches:
            loss = nn.functional.cross_entropy(self._model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, self.dp.max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
        self._model.eval()
        delta = local_update(export_weights(self._model), global_weights, self.trainable)
        steps = len(batches)
        stats = frozen_stats(optimizer, self.trainable, steps)
        windows = min(sum(len(batch) for batch in batches), len(self.examples))  # moves the cursor
        self.ledger.append(
            {"round": int(server_round), "steps": steps, "windows": windows, "example_epsilon": math.inf}
        )
        return LocalResult(
            delta=delta,
            num_examples=windows,
            steps=steps,
            train_loss=float(np.mean(losses)),
            example_epsilon=math.inf,
            seconds=time.perf_counter() - start,
            stats=stats,
        )

    def state(self) -> dict:
        """JSON-ready state: the ledger (no accountant: nothing is private at the example level)."""
        return {"device_id": self.device_id, "accountant": "none", "history": [], "ledger": list(self.ledger)}

    def load_state(self, state: dict) -> None:
        """Restore the ledger written by ``state()``."""
        if state.get("device_id") != self.device_id:
            raise ValueError(f"state belongs to device {state.get('device_id')!r}, not {self.device_id!r}")
        self.ledger = list(state["ledger"])

    @property
    def rounds_trained(self) -> int:
        """How many rounds this device has taken part in."""
        return len(self.ledger)
