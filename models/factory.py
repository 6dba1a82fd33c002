"""One door to every model kind: build it, export/load its arrays, split them into encoder and head.

The exported arrays (float32 numpy, the contract of releases, Flower messages and the HE
circuit) are named per kind by ``param_names``; ``beta`` (a fixed scalar) is added to every
export. Whatever the kind, the server head is ``HEAD_KEYS`` = (``w2``, ``b2``, ``beta``) and every
other array belongs to the device-side encoder, which is public: a thin client downloads
the encoder only (``split_weights``) and computes ``h`` with ``encode``.

Federated devices train ``trainable_keys(config)`` (everything but ``beta``) and find each
array's module parameter with ``model.get_parameter(param_names(model)[key])``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.config import ModelConfig
from models.encoders import build_encoder
from models.head import HEAD_KEYS, head_logits
from models.keyboard_lm import KeyboardLM
from models.nplm import NPLM

__all__ = [
    "HEAD_KEYS",
    "build_model",
    "config_from_weights",
    "default_trainable",
    "encode",
    "encoder_keys",
    "expected_shapes",
    "export_weights",
    "load_weights",
    "param_names",
    "plaintext_logits",
    "split_weights",
    "trainable_keys",
]

_NPLM_PARAMS = {
    "embedding": "embedding.weight",
    "w1": "fc1.weight",
    "b1": "fc1.bias",
    "w2": "fc2.weight",
    "b2": "fc2.bias",
}
_ENC = "enc."  # prefix of a KeyboardLM encoder array (after ``embedding``)


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised model of ``config.kind`` (``NPLM`` or ``KeyboardLM``)."""
    return NPLM(config) if config.kind == "nplm" else KeyboardLM(config)


def _encoder_param_names(encoder: nn.Module, prefix: str) -> dict[str, str]:
    names = {}
    for name, _ in encoder.named_parameters():
        key = "embedding" if name == "embedding.weight" else _ENC + name
        names[key] = prefix + name
    return names


def param_names(model: nn.Module) -> dict[str, str]:
    """Exported array name -> the module's parameter name, for every trainable array."""
    if isinstance(model, NPLM):
        return dict(_NPLM_PARAMS)
    if isinstance(model, KeyboardLM):
        return {
            **_encoder_param_names(model.encoder, "encoder."),
            "w2": "head.proj.weight",
            "b2": "head.proj.bias",
        }
    raise TypeError(f"not a hushtype model: {type(model).__name__}")


def export_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's arrays as float32 numpy copies, plus the scalar ``beta``."""
    with torch.no_grad():
        out = {
            key: model.get_parameter(name).detach().cpu().numpy().astype(np.float32).copy()
            for key, name in param_names(model).items()
        }
    out["beta"] = np.asarray(model.config.beta, dtype=np.float32)
    return out


def load_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> nn.Module:
    """Copy exported arrays into ``model`` (every trainable array required, shapes checked); returns it."""
    _copy_arrays(model, param_names(model), weights, "weights")
    return model


def _copy_arrays(module: nn.Module, names: dict[str, str], arrays: dict[str, np.ndarray], what: str) -> None:
    """Copy ``arrays[key]`` into ``module``'s parameter ``names[key]`` for every key (shapes checked)."""
    with torch.no_grad():
        for key, name in names.items():
            if key not in arrays:
                raise KeyError(f"{what} lack {key!r}")
            param = module.get_parameter(name)
            value = torch.as_tensor(np.asarray(arrays[key]), dtype=param.dtype)
            if value.shape != param.shape:
                raise ValueError(f"{key}: expected shape {tuple(param.shape)}, got {tuple(value.shape)}")
            param.copy_(value)


def config_from_weights(weights: dict[str, np.ndarray], context: int) -> ModelConfig:
    """The ``ModelConfig`` of exported arrays (kind, widths, depth, beta), given the window length k.

    What a federated device needs to build the model the server sent; k is not in an LSTM's weights
    (it reads any length), so it comes from the run's data configuration.
    """
    vocab, embed = np.shape(weights["embedding"])
    hidden = np.shape(weights["w2"])[1]
    beta = float(np.ravel(weights["beta"])[0]) if "beta" in weights else 1.0
    shape = dict(vocab_size=int(vocab), context=context, embed_dim=int(embed), hidden=int(hidden), beta=beta)
    if "w1" in weights:
        return ModelConfig(**shape, kind="nplm")
    if "enc.lstm.weight_hh_l0" in weights:
        width = np.shape(weights["enc.lstm.weight_hh_l0"])[1]
        layers = sum(1 for k in weights if k.startswith("enc.lstm.weight_hh_l"))
        return ModelConfig(**shape, kind="lstm", width=int(width), layers=layers)
    if "enc.fc_in.weight" in weights:
        width = np.shape(weights["enc.fc_in.weight"])[0]
        layers = 1 + sum(1 for k in weights if k.startswith("enc.blocks.") and k.endswith(".fc.weight"))
        return ModelConfig(**shape, kind="mlp", width=int(width), layers=layers)
    raise ValueError(f"cannot tell the model kind from arrays {sorted(weights)}")


def trainable_keys(config: ModelConfig) -> tuple[str, ...]:
    """The arrays training can change (all but ``beta``), in export order."""
    return tuple(param_names(build_model(config)))


def default_trainable(config: ModelConfig) -> tuple[str, ...]:
    """What federated devices fine-tune unless told otherwise: bias-like arrays (DP-BiTFiT, Bu et al. 2022).

    NPLM: ``b1``, ``b2`` (4.4k numbers at V=4096, H=256). mlp/lstm: the encoder's output projection
    bias and LayerNorm and the head bias (4.9k): the same few thousand numbers a noised update carries,
    and nothing before the last projection trains, so DP-SGD never back-propagates through the encoder.
    """
    if config.kind == "nplm":
        return ("b1", "b2")
    return ("enc.norm.weight", "enc.norm.bias", "enc.fc_out.bias", "b2")


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every exported array for ``config``."""
    return {k: tuple(v.shape) for k, v in export_weights(build_model(config)).items()}


def encoder_keys(config: ModelConfig) -> tuple[str, ...]:
    """The encoder's arrays: everything the device needs to compute ``h`` (public)."""
    return tuple(k for k in expected_shapes(config) if k not in HEAD_KEYS)


def split_weights(
    weights: dict[str, np.ndarray], config: ModelConfig
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(encoder arrays, head arrays) of a full export."""
    enc = set(encoder_keys(config))
    encoder = {k: v for k, v in weights.items() if k in enc}
    head = {k: v for k, v in weights.items() if k in HEAD_KEYS}
    missing = (enc | set(HEAD_KEYS)) - set(weights)
    if missing:
        raise KeyError(f"weights lack {sorted(missing)}")
    return encoder, head


def _encoder_module(config: ModelConfig, encoder_weights: dict[str, np.ndarray]) -> nn.Module:
    module = build_encoder(config)
    _copy_arrays(module, _encoder_param_names(module, ""), encoder_weights, "encoder weights")
    return module.eval()


@torch.no_grad()
def encode(
    config: ModelConfig, encoder_weights: dict[str, np.ndarray], context_ids: np.ndarray
) -> np.ndarray:
    """Device side: h for (k,) or (B, k) context ids from the encoder arrays alone, float64."""
    ids = np.asarray(context_ids, dtype=np.int64)
    batch = ids.reshape(-1, ids.shape[-1])
    if config.kind == "nplm":
        emb = encoder_weights["embedding"].astype(np.float64)[batch].reshape(len(batch), -1)  # (B, k*d)
        h = emb @ encoder_weights["w1"].astype(np.float64).T + encoder_weights["b1"]
    else:
        h = _encoder_module(config, encoder_weights)(torch.from_numpy(batch)).double().numpy()
    return h.reshape(*ids.shape[:-1], -1)


def plaintext_logits(
    weights: dict[str, np.ndarray],
    config: ModelConfig,
    context_ids: np.ndarray,
    personal_bias: np.ndarray | None = None,
) -> np.ndarray:
    """Encoder then head, both in plaintext: the reference the encrypted path reproduces."""
    return head_logits(weights, encode(config, weights, context_ids), personal_bias)
