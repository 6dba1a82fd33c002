"""A released model on disk: what the serving API loads and what federated runs start from.

A release directory holds ``weights.safetensors`` (the arrays of ``export_weights``),
``vocab.json`` and ``model_card.json`` (model config, provenance, privacy figures, metrics).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from models.nplm import ModelConfig
from models.vocab import Vocabulary

__all__ = ["Release", "save_release", "load_release", "weights_digest", "expected_shapes"]

_WEIGHTS, _VOCAB, _CARD = "weights.safetensors", "vocab.json", "model_card.json"


@dataclass
class Release:
    """Weights (numpy, float32), vocabulary and model card of one released model version."""

    weights: dict[str, np.ndarray]
    vocab: Vocabulary
    card: dict

    @property
    def config(self) -> ModelConfig:
        """The model shape recorded in the card."""
        return ModelConfig(**self.card["model"])

    @property
    def version(self) -> str:
        """Content hash of the weights: changes whenever any weight does."""
        return self.card["version"]


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    """Short sha256 over the weight arrays (names, shapes and bytes), used as the model version."""
    h = hashlib.sha256()
    for name in sorted(weights):
        arr = np.ascontiguousarray(weights[name], dtype=np.float32)
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every exported array for ``config`` (``models.nplm.export_weights``' contract)."""
    v, d, h = config.vocab_size, config.embed_dim, config.hidden
    return {
        "embedding": (v, d),
        "w1": (h, config.input_dim),
        "b1": (h,),
        "w2": (v, h),
        "b2": (v,),
        "beta": (),
    }


def _checked_arrays(weights: dict[str, np.ndarray], config: ModelConfig) -> dict[str, np.ndarray]:
    """float32 copies with the contract's shapes; a size-1 ``beta`` (as Flower ships scalars) becomes 0-d."""
    shapes = expected_shapes(config)
    if set(weights) != set(shapes):
        raise ValueError(f"weights must hold exactly {sorted(shapes)}, got {sorted(weights)}")
    arrays = {}
    for name, shape in shapes.items():
        arr = np.ascontiguousarray(weights[name], dtype=np.float32)
        if shape == () and arr.size == 1:
            arr = arr.reshape(())
        if arr.shape != shape:
            raise ValueError(f"{name}: expected shape {shape} for this model config, got {arr.shape}")
        arrays[name] = arr
    return arrays


def save_release(
    directory: str | Path, weights: dict[str, np.ndarray], config: ModelConfig, vocab: Vocabulary, card: dict
) -> Release:
    """Write a release; the card gets ``model`` (config) and ``version`` (weights digest) filled in."""
    if len(vocab) != config.vocab_size:
        raise ValueError(
            f"vocabulary has {len(vocab)} entries but the model has vocab_size={config.vocab_size}"
        )
    arrays = _checked_arrays(weights, config)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(out / _WEIGHTS))
    vocab.save(out / _VOCAB)
    full_card = {**card, "model": config.to_dict(), "version": weights_digest(arrays)}
    (out / _CARD).write_text(json.dumps(full_card, indent=2, sort_keys=True), encoding="utf-8")
    return Release(arrays, vocab, full_card)


def load_release(directory: str | Path) -> Release:
    """Read a release written by ``save_release``; a missing file raises ``FileNotFoundError``."""
    src = Path(directory)
    for name in (_WEIGHTS, _VOCAB, _CARD):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src} is not a hushtype release: {name} is missing")
    card = json.loads((src / _CARD).read_text(encoding="utf-8"))
    weights = _checked_arrays(load_file(str(src / _WEIGHTS)), ModelConfig(**card["model"]))
    return Release(weights, Vocabulary.load(src / _VOCAB), card)
