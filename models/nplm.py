"""The hushtype next-word model: a feed-forward neural n-gram LM in one file.

Bengio et al. 2003 ("A Neural Probabilistic Language Model"), reshaped so that CKKS can evaluate
its server-side half without bootstrapping:

    client (device, plaintext):  x = concat(E[w_{t-k}], ..., E[w_{t-1}])        (k*d,)
    server (on ciphertexts):     h = W1 x + b1                                   (H,)   depth 1
                                 a = h * (h + beta)                              (H,)   depth 1
                                 z = W2 a + b2 (+ u, the user's encrypted bias)  (V,)   depth 1

Total multiplicative depth 3 and no tanh/sigmoid. The activation ``h * (h + beta)`` is a quadratic
written as one ciphertext-ciphertext product (adding the plaintext scalar ``beta`` costs no level),
so it consumes a single level; its leading coefficient is learned inside W2.

HE cost (V = 4096 slots at N = 8192): W1 is H x k*d, W2 is V x H; with the diagonal method each
dense layer costs one plaintext multiply per diagonal and ~2*sqrt(diagonals) rotations
(baby-step/giant-step), so the widths H and k*d are kept to powers of two in [128, 512].

``export_weights`` turns the module into plain numpy arrays, and ``client_features`` +
``server_logits`` compute exactly the arithmetic the encrypted path computes, in float64 numpy,
so the HE evaluator can be tested against them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.config import ModelConfig
from models.head import QuadraticActivation, head_logits

__all__ = [
    "ModelConfig",
    "NPLM",
    "QuadraticActivation",
    "export_weights",
    "load_weights",
    "client_features",
    "server_logits",
    "plaintext_logits",
]


class NPLM(nn.Module):
    """Feed-forward neural n-gram LM: k word ids -> V next-word logits.

    Only ``nn.Embedding``, ``nn.Linear`` and elementwise ops, so Opacus' ``ModuleValidator``
    accepts it unchanged and per-sample gradients come from the stock grad samplers.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.fc1 = nn.Linear(config.input_dim, config.hidden)
        self.act = QuadraticActivation(config.beta)
        self.drop = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.hidden, config.vocab_size)
        self._init_weights()

    def _init_weights(self) -> None:
        # Small weights keep h = O(1) at init, where the quadratic is well behaved.
        nn.init.normal_(self.embedding.weight, std=0.1)
        nn.init.normal_(self.fc1.weight, std=0.5 / self.config.input_dim**0.5)
        nn.init.zeros_(self.fc1.bias)
        nn.init.normal_(self.fc2.weight, std=0.5 / self.config.hidden**0.5)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        assert context.dim() == 2 and context.shape[1] == self.config.context, (
            f"context must be (B, {self.config.context}) word ids, got {tuple(context.shape)}"
        )
        x = self.embedding(context).flatten(1)  # (B, k*d)   client side
        h = self.fc1(x)  # (B, H)                            server: encrypted matvec
        a = self.drop(self.act(h))  # (B, H)                 server: one ct x ct multiply
        return self.fc2(a)  # (B, V)                         server: encrypted matvec


def export_weights(model: NPLM) -> dict[str, np.ndarray]:
    """The released weights as float32 numpy arrays (the contract the HE path consumes).

    Keys: ``embedding`` (V, d), ``w1`` (H, k*d), ``b1`` (H,), ``w2`` (V, H), ``b2`` (V,),
    ``beta`` (scalar array).
    """
    with torch.no_grad():
        return {
            "embedding": model.embedding.weight.detach().cpu().numpy().astype(np.float32).copy(),
            "w1": model.fc1.weight.detach().cpu().numpy().astype(np.float32).copy(),
            "b1": model.fc1.bias.detach().cpu().numpy().astype(np.float32).copy(),
            "w2": model.fc2.weight.detach().cpu().numpy().astype(np.float32).copy(),
            "b2": model.fc2.bias.detach().cpu().numpy().astype(np.float32).copy(),
            "beta": np.asarray(model.config.beta, dtype=np.float32),
        }


def load_weights(model: NPLM, weights: dict[str, np.ndarray]) -> NPLM:
    """Copy exported numpy weights back into ``model`` (shapes must match); returns it."""
    pairs = {
        "embedding": model.embedding.weight,
        "w1": model.fc1.weight,
        "b1": model.fc1.bias,
        "w2": model.fc2.weight,
        "b2": model.fc2.bias,
    }
    with torch.no_grad():
        for key, param in pairs.items():
            if key not in weights:
                raise KeyError(f"weights lack {key!r}")
            value = torch.as_tensor(np.asarray(weights[key]), dtype=param.dtype)
            if value.shape != param.shape:
                raise ValueError(f"{key}: expected shape {tuple(param.shape)}, got {tuple(value.shape)}")
            param.copy_(value)
    return model


def client_features(weights: dict[str, np.ndarray], context_ids: np.ndarray) -> np.ndarray:
    """Device side: concatenate the context words' embeddings, (..., k) ids -> (..., k*d) float64."""
    ids = np.asarray(context_ids)
    emb = weights["embedding"].astype(np.float64)[ids]  # (..., k, d)
    return emb.reshape(*ids.shape[:-1], -1)


def server_logits(
    weights: dict[str, np.ndarray], x: np.ndarray, personal_bias: np.ndarray | None = None
) -> np.ndarray:
    """Server side, exactly the encrypted circuit: W2 (h * (h + beta)) + b2 (+ u), h = W1 x + b1.

    ``x`` is (k*d,) or (B, k*d); returns (V,) or (B, V) float64 logits.
    """
    w1, b1 = weights["w1"].astype(np.float64), weights["b1"].astype(np.float64)
    return head_logits(weights, np.asarray(x, dtype=np.float64) @ w1.T + b1, personal_bias)


def plaintext_logits(
    weights: dict[str, np.ndarray], context_ids: np.ndarray, personal_bias: np.ndarray | None = None
) -> np.ndarray:
    """Both halves in plaintext: the reference the encrypted path must reproduce."""
    return server_logits(weights, client_features(weights, context_ids), personal_bias)
