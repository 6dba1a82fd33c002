"""One simulated phone: a user's own examples and an on-device DP-SGD trainer (Opacus).

Each round a device receives the global weights ``w_t`` and runs local DP-SGD (Abadi et al. 2016,
arXiv:1607.00133) on its own examples:

    for each local step s (Poisson-sampled batch B_s, each example kept with probability p = b / n):
        g_i   = grad loss(w; x_i, y_i)                                 per-example gradient
        g_i  <- g_i * min(1, R / ||g_i||)                              clip to R = max_grad_norm
        w    <- w - eta_l * (sum_i g_i + N(0, z^2 R^2 I)) / b           z = example noise multiplier

and returns the plain update ``delta = w_local - w_t``. User-level clipping and the distributed
noise share are applied by the client app (``keyboard_sim.client_app``), not here.

Privacy bookkeeping: a device owns ONE ``opacus.PrivacyEngine`` for its lifetime. ``make_private``
runs once, on the device's first round; later rounds load the new global weights into the same
``GradSampleModule`` and keep stepping the same accountant, so the device's **example-level**
epsilon (what one of its sentences can leak through its own updates) accumulates over every round
it takes part in. ``state()`` / ``load_state()`` carry the accountant history and the per-round
ledger across processes (the simulation may run a device in a different worker each round).
``secure_mode`` is off: it needs torchcsprng, which has no usable release for this torch.

Head-only devices (``trainable`` a subset of the head's ``w2``, ``b2``): the encoder is frozen, so each
round the device computes its windows' head features ``a = h * (h + beta)`` once with the received
encoder (``models.factory.encode``) and runs DP-SGD on the head's projection alone (``_HeadProjection``,
one ``nn.Linear``): the same DP-SGD step on the same arrays (per-example gradients of frozen arrays are
zero either way), without a forward or backward pass through the encoder (an LSTM on the shipped kind)
at every step. The head's dropout is not applied there (DP noise already regularises).
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from federation import EXAMPLE_RDP_ORDERS
from models.config import ModelConfig
from models.data import Examples
from models.factory import (
    HEAD_KEYS,
    build_model,
    encode,
    export_weights,
    load_weights,
    param_names,
)
from models.fused import fuse_lstm
from models.lora import LORA_A, LORA_B, LoRAProjection

__all__ = [
    "LocalDPConfig",
    "LocalResult",
    "Device",
    "local_update",
    "seed_for",
    "feature_encoder",
    "head_features",
    "rdp_epsilon",
    "DEVICE_HEAD_KEYS",
]


@dataclass
class LocalDPConfig:
    """Example-level DP-SGD on one device (Opacus). Names follow Abadi et al. 2016."""

    noise_multiplier: float = 1.0  # z: per-step Gaussian noise std is z * max_grad_norm
    max_grad_norm: float = 1.0  # R: per-example gradient clip
    batch_size: int = 32  # b: expected Poisson batch; per-sample grads cost b x params floats
    lr: float = 0.5  # eta_l, plain SGD (the clipped, noised mean gradient is small)
    local_epochs: float = 1.0  # E: passes over the device's examples per round ...
    max_local_steps: int | None = 50  # ... capped, so a talkative user does not stall the round
    delta: float = 1e-5  # example-level delta; < 1 / examples on any device
    accountant: str = "rdp"  # "rdp" | "prv" | "gdp" (opacus accountants)
    trainable: tuple[str, ...] | None = None  # what the device fine-tunes and sends (None: every array of
    # ``models.factory.trainable_keys``); e.g. ("b1", "b2") on the NPLM is
    # bias-only DP fine-tuning (DP-BiTFiT, Bu et al. 2022, arXiv:2210.00036): 4.4k instead of 1.4M numbers,
    # so the same user-level noise std per coordinate costs ~18x less in norm
    optimizer: str = "sgd"  # "sgd" | "adam": the torch optimizer Opacus wraps (DP noise goes in before it)
    grad_sample_mode: str = "ghost"  # "ghost" clipping (Li et al. 2022): per-sample norms without per-sample
    # grads, ~13x faster than "hooks" for this model (B=32, 1.4M params); same DP-SGD step

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0:
            raise ValueError(f"LocalDPConfig.noise_multiplier must be >= 0, got {self.noise_multiplier}")
        for name in ("max_grad_norm", "lr", "local_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LocalDPConfig.{name} must be positive, got {getattr(self, name)}")
        if self.batch_size <= 0:
            raise ValueError(f"LocalDPConfig.batch_size must be positive, got {self.batch_size}")
        if self.max_local_steps is not None and self.max_local_steps <= 0:
            raise ValueError(
                f"LocalDPConfig.max_local_steps must be positive or None, got {self.max_local_steps}"
            )
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"LocalDPConfig.delta must be in (0, 1), got {self.delta}")
        if self.trainable is not None:
            self.trainable = tuple(self.trainable)
            if not self.trainable:
                raise ValueError("LocalDPConfig.trainable must name at least one array (or be None: all)")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"LocalDPConfig.optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.grad_sample_mode not in ("ghost", "hooks"):
            raise ValueError(
                f"LocalDPConfig.grad_sample_mode must be 'ghost' or 'hooks', got {self.grad_sample_mode!r}"
            )
        if self.accountant not in ("rdp", "prv", "gdp"):
            raise ValueError(
                f"LocalDPConfig.accountant must be 'rdp', 'prv' or 'gdp', got {self.accountant!r}"
            )


def local_update(
    local: dict[str, np.ndarray], global_weights: dict[str, np.ndarray], keys: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """The update a device sends: ``local - global`` (float32) of the arrays it trains."""
    return {k: (local[k] - np.asarray(global_weights[k], np.float32)).astype(np.float32) for k in keys}


class _HeadProjection(nn.Module):
    """The head's projection on cached features: a (B, H) -> W2 a + b2 (B, V); exports ``w2``, ``b2``."""

    def __init__(self, hidden: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, vocab_size)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.proj(a)  # (B, V)


_HEAD_PARAMS = {"w2": "proj.weight", "b2": "proj.bias"}
_LORA_PARAMS = {**_HEAD_PARAMS, LORA_B: "lora.weight"}
DEVICE_HEAD_KEYS = (*HEAD_KEYS, LORA_B)  # what a head-only device may train: the head and its adapter


class _FeatureEncoder:
    """One per process and model shape: the model whose encoder computes head features (built once;
    ``build_model`` initialises every array at random, ~30 ms, which a round must not pay)."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        # an LSTM runs as torch's fused nn.LSTM (same arrays and arithmetic as Opacus' DPLSTM, which
        # unrolls in Python: ~4x slower; features need no per-sample gradients)
        self.model = fuse_lstm(build_model(config)).eval()
        self.keys: tuple[str, ...] = tuple(param_names(self.model))  # = models.factory.trainable_keys
        self.encoder_keys = tuple(k for k in self.keys if k not in HEAD_KEYS)

    @torch.no_grad()
    def __call__(self, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """h (n, H) of the encoder of ``weights`` in eval mode."""
        if self.config.kind == "nplm":
            return encode(self.config, {k: weights[k] for k in self.encoder_keys}, x)
        load_weights(self.model, weights)
        return self.model.encoder(torch.from_numpy(x)).numpy()


_ENCODERS: dict[str, _FeatureEncoder] = {}


def feature_encoder(config: ModelConfig) -> _FeatureEncoder:
    """This process's ``_FeatureEncoder`` for ``config`` (its ``keys``: the arrays training can change)."""
    key = repr(config)
    if key not in _ENCODERS:
        _ENCODERS[key] = _FeatureEncoder(config)
    return _ENCODERS[key]


def head_features(config: ModelConfig, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """a = h * (h + beta) (n, H) float32 for windows ``x``: the frozen encoder's output, activated."""
    encoder = feature_encoder(config)
    h = np.concatenate([encoder(weights, x[i : i + 4096]) for i in range(0, len(x), 4096)])
    return (h * (h + config.beta)).astype(np.float32)


class _FeatureCache:
    """Per process: head features by (device, encoder digest, windows), least recently used first out.

    A frozen encoder gives a device the same features every round; the run's public base names the
    encoder (``federation.public_base``), so a device sampled again skips its encoder pass (an LSTM:
    ~50 ms for 300 windows). Bounded by bytes (float32 n x H per device: ~0.3 MB for 300 windows).
    """

    def __init__(self, max_bytes: int = 128 * 2**20) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
        self.bytes = 0

    @staticmethod
    def key(device_id: str, digest: str, x: np.ndarray) -> tuple[str, str, str]:
        return device_id, digest, hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()

    def get(self, key: tuple[str, str, str]) -> np.ndarray | None:
        if key in self.entries:
            self.entries.move_to_end(key)
        return self.entries.get(key)

    def put(self, key: tuple[str, str, str], features: np.ndarray) -> None:
        self.entries[key] = features
        self.bytes += features.nbytes
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            self.bytes -= self.entries.popitem(last=False)[1].nbytes


_FEATURES = _FeatureCache()


@lru_cache(maxsize=512)
def _rdp_per_step(sample_rate: float, noise_multiplier: float) -> np.ndarray:
    """RDP of one Sampled Gaussian Mechanism step at ``EXAMPLE_RDP_ORDERS`` (Mironov et al. 2019), via
    Opacus' ``compute_rdp``; pure, so memoised: devices of a worker share sample rates 1 / k."""
    orders = list(EXAMPLE_RDP_ORDERS)
    return np.asarray(compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=orders))


def rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """epsilon of an Opacus RDP accountant's ``history`` at ``EXAMPLE_RDP_ORDERS``: the same sum of
    per-step RDP times steps and the same conversion as ``RDPAccountant.get_epsilon(alphas=...)``."""
    if not history:
        return 0.0
    rdp = sum(_rdp_per_step(float(q), float(z)) * int(steps) for z, q, steps in history)
    epsilon, _ = get_privacy_spent(orders=list(EXAMPLE_RDP_ORDERS), rdp=rdp, delta=delta)
    return float(epsilon)


@dataclass
class LocalResult:
    """What one round of local training produced (plain arrays; encoding happens later)."""

    delta: dict[str, np.ndarray]  # w_local - w_global, float32, keys Device.trainable
    num_examples: int  # n, the device's training examples
    steps: int  # DP-SGD steps taken this round
    train_loss: float  # mean minibatch loss over this round's steps
    example_epsilon: float  # cumulative example-level epsilon of this device after this round
    seconds: float
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # a MimeLite device's g, g^2 means


def seed_for(*parts: int | str) -> int:
    """A 63-bit seed from (run seed, round, device, ...): reproducible, distinct per tuple."""
    acc = 1469598103934665603
    for part in parts:
        for byte in str(part).encode() + b"\x00":
            acc = ((acc ^ byte) * 1099511628211) % 2**64
    return acc % 2**63


class Device:
    """A simulated phone: one user's examples plus a persistent Opacus DP-SGD trainer.

    Parameters
    ----------
    device_id : str
        The user id (for logs and the ledger).
    examples : Examples
        The user's training windows (never leave the device).
    model_config : ModelConfig
        Shape of the global model (must match the weights sent each round).
    dp : LocalDPConfig
        Example-level DP-SGD knobs; lr, steps and noise may change per round via ``train``.
    """

    def __init__(
        self, device_id: str, examples: Examples, model_config: ModelConfig, dp: LocalDPConfig
    ) -> None:
        if len(examples) == 0:
            raise ValueError(f"device {device_id!r} has no training examples")
        self.device_id = device_id
        self.examples = examples
        self.model_config = model_config
        self.dp = dp
        keys = feature_encoder(model_config).keys
        self.trainable: tuple[str, ...] = keys if dp.trainable is None else dp.trainable
        self.head_only = set(self.trainable) <= set(DEVICE_HEAD_KEYS)  # train on cached head features
        unknown = [k for k in self.trainable if k not in keys and not (k == LORA_B and self.head_only)]
        if unknown:
            raise ValueError(
                f"LocalDPConfig.trainable: {unknown} are not arrays of the {model_config.kind!r} model; "
                f"choose from {list(keys)} (or {LORA_B} with head arrays only)"
            )
        with warnings.catch_warnings():  # "Secure RNG turned off": known and documented above
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            self.privacy_engine = PrivacyEngine(accountant=dp.accountant)
        self.ledger: list[dict] = []  # one entry per round this device took part in
        self._model: nn.Module | None = None  # the plain module, shared with the GradSampleModule
        self._gsm: nn.Module | None = None
        self._optimizer = None
        self._loader: DataLoader | None = None
        self._criterion: nn.Module = nn.CrossEntropyLoss()

    # ----------------------------------------------------------------- lifetime
    def _head_module(self, global_weights: dict[str, np.ndarray]) -> nn.Module:
        """The trained module of a head-only device: the projection, with the adapter when it trains B."""
        hidden, vocab = self.model_config.hidden, self.model_config.vocab_size
        if LORA_B not in self.trainable:
            return _HeadProjection(hidden, vocab)
        if LORA_B not in global_weights:
            raise ValueError(f"trainable names {LORA_B!r}, but the server sent no adapter arrays")
        return LoRAProjection(nn.Linear(hidden, vocab), rank=int(np.shape(global_weights[LORA_B])[1]))

    def _make_private_once(self, global_weights: dict[str, np.ndarray]) -> None:
        """Wrap model/optimizer/loader with Opacus; called exactly once per device."""
        if self.head_only:
            self._model = self._head_module(global_weights)
            inputs = torch.zeros((len(self.examples), self.model_config.hidden))  # features, set each round
        else:
            self._model = build_model(self.model_config)
            inputs = torch.from_numpy(self.examples.x)
        for key, name in self._param_names().items():  # frozen before make_private: Opacus clips
            self._model.get_parameter(name).requires_grad_(key in self.trainable)  # and noises only these
        self._inputs = inputs
        dataset = TensorDataset(inputs, torch.from_numpy(self.examples.y))
        loader = DataLoader(dataset, batch_size=min(self.dp.batch_size, len(dataset)))
        params = [p for p in self._model.parameters() if p.requires_grad]
        optimizer = (
            torch.optim.Adam(params, lr=self.dp.lr)
            if self.dp.optimizer == "adam"
            else torch.optim.SGD(params, lr=self.dp.lr)
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            wrapped = self.privacy_engine.make_private(
                module=self._model,
                optimizer=optimizer,
                criterion=self._criterion,
                data_loader=loader,
                noise_multiplier=self.dp.noise_multiplier,
                max_grad_norm=self.dp.max_grad_norm,
                poisson_sampling=True,
                grad_sample_mode=self.dp.grad_sample_mode,
            )
        if self.dp.grad_sample_mode == "ghost":  # also returns the criterion that does the double backward
            self._gsm, self._optimizer, self._criterion, self._loader = wrapped
        else:
            self._gsm, self._optimizer, self._loader = wrapped

    def _param_names(self) -> dict[str, str]:
        if not self.head_only:
            return param_names(self._model)
        return dict(_LORA_PARAMS) if isinstance(self._model, LoRAProjection) else dict(_HEAD_PARAMS)

    def _load_global(self, global_weights: dict[str, np.ndarray], encoder_digest: str | None) -> None:
        """w_t into the trained module; head-only: also this round's features from w_t's encoder
        (computed once per ``encoder_digest`` and process, see ``_FeatureCache``)."""
        if not self.head_only:
            load_weights(self._model, global_weights)
            return
        with torch.no_grad():
            for key, name in self._param_names().items():
                self._model.get_parameter(name).copy_(torch.from_numpy(np.asarray(global_weights[key])))
            if isinstance(self._model, LoRAProjection):
                self._model.down.copy_(torch.from_numpy(np.asarray(global_weights[LORA_A])))
            cache_key = (
                _FeatureCache.key(self.device_id, encoder_digest, self.examples.x) if encoder_digest else None
            )
            features = _FEATURES.get(cache_key) if cache_key else None
            if features is None:
                features = head_features(self.model_config, global_weights, self.examples.x)
                if cache_key:
                    _FEATURES.put(cache_key, features)
            self._inputs.copy_(torch.from_numpy(features))  # the loader's dataset holds this tensor

    def _export(self) -> dict[str, np.ndarray]:
        if not self.head_only:
            return export_weights(self._model)
        names = self._param_names().items()
        return {k: self._model.get_parameter(n).detach().numpy().copy() for k, n in names}

    @property
    def sample_rate(self) -> float:
        """p, the Poisson inclusion probability of one example in one local step."""
        return 1.0 / math.ceil(len(self.examples) / min(self.dp.batch_size, len(self.examples)))

    # ----------------------------------------------------------------- training
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
    ) -> LocalResult:
        """Run local DP-SGD from ``global_weights``; returns the update and updates the ledger.

        ``encoder_digest`` names the encoder arrays of ``global_weights`` (the run's public base when the
        round left them unchanged): a head-only device then reuses the features it computed for them.
        """
        start = time.perf_counter()
        if self._gsm is None:
            self._make_private_once(global_weights)
        assert self._model is not None and self._optimizer is not None and self._loader is not None
        self._load_global(global_weights, encoder_digest)
        self._optimizer.original_optimizer.state.clear()  # Adam moments start afresh each round
        lr = self.dp.lr if lr is None else lr
        for group in self._optimizer.param_groups:
            group["lr"] = lr
        epochs = self.dp.local_epochs if local_epochs is None else local_epochs
        cap = self.dp.max_local_steps if max_local_steps is None else max_local_steps
        total = max(1, math.ceil(epochs * len(self._loader)))
        if cap is not None:
            total = min(total, cap)

        torch.manual_seed(seed)  # Poisson sampling, DP noise and dropout all draw from it
        self._gsm.train()
        steps, loss_sum, loss_count = 0, 0.0, 0
        while steps < total:
            for x, y in self._loader:
                self._optimizer.zero_grad(set_to_none=True)
                if len(y) > 0:
                    loss = self._criterion(self._gsm(x), y)  # (B, V) logits -> mean loss
                    loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
                    self._backward(loss)
                else:  # Poisson sampling drew nobody: still a noisy step, or the output would reveal it
                    self._empty_batch_backward(x)
                self._optimizer.step()  # clip per example, add noise, step the accountant
                steps += 1
                if steps >= total:
                    break
        self._optimizer.zero_grad(set_to_none=True)
        self._gsm.eval()

        delta = local_update(self._export(), global_weights, self.trainable)
        epsilon = self.example_epsilon()
        self.ledger.append(
            {
                "round": int(server_round),
                "steps": steps,
                "sample_rate": self.sample_rate,
                "noise_multiplier": float(self._optimizer.noise_multiplier),
                "example_epsilon": epsilon,
            }
        )
        return LocalResult(
            delta=delta,
            num_examples=len(self.examples),
            steps=steps,
            train_loss=loss_sum / loss_count if loss_count else float("nan"),
            example_epsilon=epsilon,
            seconds=time.perf_counter() - start,
        )

    @staticmethod
    def _backward(loss: torch.Tensor) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss.backward()

    def _empty_batch_backward(self, x: torch.Tensor) -> None:
        """Gradients of an empty batch, so that ``step`` adds pure noise and counts the step."""
        if self.dp.grad_sample_mode == "ghost":  # ghost norms cannot see an empty batch: zero summed grads
            for p in self._gsm.parameters():
                if p.requires_grad:
                    p.grad = torch.zeros_like(p)
        else:  # hooks produce (0, ...) per-sample grads, which Opacus clips to an all-zero sum
            self._backward(self._gsm(x).sum() * 0.0)

    # --------------------------------------------------------------- accounting
    def example_epsilon(self, delta: float | None = None) -> float:
        """Cumulative example-level epsilon of this device (0.0 before its first step)."""
        if len(self.privacy_engine.accountant) == 0:
            return 0.0
        delta = self.dp.delta if delta is None else delta
        if self.dp.accountant == "rdp":  # a subset of Opacus' orders: an upper bound, ~15x faster
            return rdp_epsilon(self.privacy_engine.accountant.history, delta)
        return float(self.privacy_engine.accountant.get_epsilon(delta=delta))

    def state(self) -> dict:
        """JSON-ready device state: accountant history and ledger (no weights, no data)."""
        history = [list(map(float, h)) for h in getattr(self.privacy_engine.accountant, "history", [])]
        return {
            "device_id": self.device_id,
            "accountant": self.dp.accountant,
            "history": history,
            "ledger": list(self.ledger),
            "dp": asdict(self.dp),
        }

    def load_state(self, state: dict) -> None:
        """Restore the accountant history and ledger written by ``state()`` (same accountant kind)."""
        if state.get("device_id") != self.device_id:
            raise ValueError(f"state belongs to device {state.get('device_id')!r}, not {self.device_id!r}")
        if state.get("accountant") != self.dp.accountant:
            raise ValueError(
                f"state was kept by a {state.get('accountant')!r} accountant, this device uses "
                f"{self.dp.accountant!r}"
            )
        self.privacy_engine.accountant.history = [(h[0], h[1], int(h[2])) for h in state["history"]]
        self.ledger = list(state["ledger"])

    @property
    def rounds_trained(self) -> int:
        """How many rounds this device has taken part in."""
        return len(self.ledger)
