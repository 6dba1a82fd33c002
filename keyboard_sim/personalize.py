"""Personalization: a per-user vocabulary bias u added to the global model's logits.

    z_user(context) = z_global(context) + u,      u in R^V

Two ways to get u, both from the user's *earlier* lines (the global model frozen), both measured on
the user's *later* lines, which they never saw (``hushtype bench personalization``):

- **cache adapter** (adopted): a unigram cache corrected by what the model already predicts. From the
  user's statistics, ``c_w`` (how often the user typed w) and ``e_w`` (how often the global model
  expected w on the same contexts, the sum of its softmax),

      u_w = s * log((c_w + a) / (e_w + a))

  which is one Newton step of the bias fit below in log form: words the user types more than the model
  expects go up, words it expects and the user never types go down, and the pseudo-count a shrinks
  short histories. (c, e) are sums over the user's text, so devices add their increments under HE on
  the server and the adapter of the sum is exactly the adapter of all the text on one device.
- **fitted bias** (before): minimise cross-entropy + lambda * ||u||^2 by gradient (``fit_bias_to_logits``);
  not a function of additive statistics.

Either u is encrypted under the user's key and added homomorphically by the server at inference (one
ciphertext addition, no extra depth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.data import Examples
from models.nplm import NPLM
from models.release import card_adapter_settings

__all__ = [
    "CacheAdapterConfig",
    "PersonalizationConfig",
    "adapter_from_statistics",
    "fit_bias_to_logits",
    "fit_vocab_bias",
    "softmax",
    "topk_accuracy_with_bias",
    "user_statistics",
]

_NEVER_SUGGESTED = (0, 1)  # <unk>, <s>
# Cache adapter defaults for releases whose card records no settings (chosen on the default corpus's
# train users for the adapter built once; a release's card records its own: ``CacheAdapterConfig.from_card``).
SCALE_DEFAULT = 0.5
PRIOR_DEFAULT = 4.0


@dataclass
class PersonalizationConfig:
    """Fitting the vocabulary bias."""

    steps: int = 60
    lr: float = 0.1
    l2: float = 5e-2  # lambda, pull of u towards 0 (0.05 beat 0.01 and 0.001 on held-out later lines)
    max_abs: float = 4.0  # |u_i| is clipped: bounds what the encrypted adapter can add

    def __post_init__(self) -> None:
        for name in ("steps", "lr", "max_abs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PersonalizationConfig.{name} must be positive")
        if self.l2 < 0:
            raise ValueError("PersonalizationConfig.l2 must be >= 0")


@dataclass
class CacheAdapterConfig:
    """The cache adapter u_w = scale * log((c_w + prior) / (e_w + prior)); chosen on train users only."""

    scale: float = SCALE_DEFAULT
    prior: float = PRIOR_DEFAULT
    max_abs: float = 4.0  # |u_w| is clipped, as the fitted bias's

    def __post_init__(self) -> None:
        for name in ("scale", "prior", "max_abs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"CacheAdapterConfig.{name} must be positive")

    @classmethod
    def from_card(cls, card: dict) -> CacheAdapterConfig:
        """The settings a release's model card records (``personalization``: chosen on its train users
        when the release was written); the defaults for cards without them."""
        recorded = card_adapter_settings(card)
        try:
            return cls(**{k: float(recorded[k]) for k in ("scale", "prior", "max_abs") if k in recorded})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model card: bad personalization settings {recorded!r} ({exc})") from None

    def to_card(self) -> dict:
        """The card's ``personalization`` fields for these settings."""
        return {"scale": self.scale, "prior": self.prior, "max_abs": self.max_abs}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, V) logits, in their dtype."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def user_statistics(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The additive statistics of a user's text: counts c (V,) of the typed words and the global model's
    expected counts e (V,) (its softmax summed over the same contexts). ``<unk>`` and ``<s>`` get 0.

    ``logits`` (n, V) are the frozen global model's (on the device, or decrypted from the server's
    answers; without the personal adapter), ``targets`` (n,) the words typed.
    """
    logits = np.asarray(logits, dtype=np.float64)
    vocab_size = logits.shape[1]
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    expected = softmax(logits).sum(axis=0) if len(logits) else np.zeros(vocab_size)
    counts[list(_NEVER_SUGGESTED)] = expected[list(_NEVER_SUGGESTED)] = 0.0
    return counts, expected


def adapter_from_statistics(
    counts: np.ndarray, expected: np.ndarray, config: CacheAdapterConfig | None = None
) -> np.ndarray:
    """The cache adapter u (V,) of a user's summed statistics (see the module docstring)."""
    config = config or CacheAdapterConfig()
    c = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)  # CKKS noise can make a 0 slightly < 0
    e = np.clip(np.asarray(expected, dtype=np.float64), 0.0, None)
    u = config.scale * np.log((c + config.prior) / (e + config.prior))
    return np.clip(u, -config.max_abs, config.max_abs).astype(np.float32)


@torch.no_grad()
def _global_logits(model: NPLM, examples: Examples) -> torch.Tensor:
    was_training = model.training
    model.eval()
    logits = model(torch.from_numpy(examples.x))
    model.train(was_training)
    return logits


def fit_vocab_bias(
    model: NPLM, examples: Examples, config: PersonalizationConfig | None = None
) -> np.ndarray:
    """The user's bias u (V,) fitted on ``examples`` with the model frozen; zeros if there are none."""
    if len(examples) == 0:
        return np.zeros(model.config.vocab_size, dtype=np.float32)
    return fit_bias_to_logits(_global_logits(model, examples).numpy(), examples.y, config)


def fit_bias_to_logits(
    logits: np.ndarray, targets: np.ndarray, config: PersonalizationConfig | None = None
) -> np.ndarray:
    """u (V,) minimising cross-entropy(logits + u, targets) + lambda ||u||^2, |u_i| <= max_abs.

    ``logits`` (n, V) are the frozen global model's, however they were obtained: computed on the
    device, or (a thin client without the head) decrypted from the server's encrypted answers.
    """
    config = config or PersonalizationConfig()
    base = torch.as_tensor(np.asarray(logits), dtype=torch.float32)  # (n, V)
    target = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    u = torch.zeros(base.shape[1], requires_grad=True)
    opt = torch.optim.Adam([u], lr=config.lr)
    for _ in range(config.steps):
        loss = torch.nn.functional.cross_entropy(base + u, target) + config.l2 * u.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            u.clamp_(-config.max_abs, config.max_abs)
    return u.detach().numpy().astype(np.float32)


def topk_accuracy_with_bias(
    model: NPLM, examples: Examples, bias: np.ndarray | None, k: int = 3, unk_id: int = 0
) -> float:
    """Top-k accuracy over in-vocabulary targets of ``model`` (+ ``bias``) on ``examples``."""
    logits = _global_logits(model, examples)
    if bias is not None:
        logits = logits + torch.from_numpy(np.asarray(bias, dtype=np.float32))
    logits[:, list(_NEVER_SUGGESTED)] = -torch.inf
    top = logits.topk(k, dim=-1).indices.numpy()
    known = examples.y != unk_id
    if not known.any():
        return float("nan")
    return float((top[known] == examples.y[known, None]).any(axis=1).mean())
