"""A released model on disk: what the serving API loads and what federated runs start from.

A release directory holds the model split at the encryption boundary (``models.factory``):

- ``encoder.safetensors``: the device-side encoder (embeddings and every array before ``h``).
  Public: it is what a thin inference client downloads (``GET /v1/model/weights``) and runs.
- ``head.safetensors``: the server head (``w2``, ``b2``, ``beta``), run by the server under HE.
  A thin client never downloads it; federated devices receive the whole model through Flower.
- ``vocab.json`` and ``model_card.json`` (model config, provenance, privacy figures, metrics,
  and ``parts``: which file holds which arrays).

Releases written before the split (one ``weights.safetensors``) still load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from models.config import ModelConfig
from models.factory import expected_shapes, split_weights
from models.vocab import Vocabulary

__all__ = [
    "ENCODER_FILE",
    "HEAD_FILE",
    "Release",
    "card_adapter_settings",
    "card_context_scope",
    "expected_shapes",
    "load_release",
    "record_card_field",
    "save_release",
    "weights_digest",
]

ENCODER_FILE, HEAD_FILE = "encoder.safetensors", "head.safetensors"
_LEGACY_WEIGHTS, _VOCAB, _CARD = "weights.safetensors", "vocab.json", "model_card.json"


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
    def context_scope(self) -> str:
        """How its training built contexts (``models.data.line_examples``); serve it the same way."""
        return card_context_scope(self.card)

    @property
    def encoder(self) -> dict[str, np.ndarray]:
        """The device-side encoder's arrays (public)."""
        return split_weights(self.weights, self.config)[0]

    @property
    def head(self) -> dict[str, np.ndarray]:
        """The server head's arrays (``w2``, ``b2``, ``beta``)."""
        return split_weights(self.weights, self.config)[1]

    @property
    def version(self) -> str:
        """Content hash of the weights: changes whenever any weight does."""
        return self.card["version"]


def card_context_scope(card: dict) -> str:
    """The card's ``data.context_scope``; "sentence" for releases made before the field existed."""
    return (card.get("data") or {}).get("context_scope", "sentence")


def card_adapter_settings(card: dict) -> dict:
    """The card's optional ``personalization`` field: the user adapter's settings chosen on train users
    (``{"scale", "prior", ...}``); empty for releases made before it (clients use their defaults)."""
    return dict(card.get("personalization") or {})


def record_card_field(directory: str | Path, key: str, value: object) -> dict:
    """Set one optional field of a release's model card in place (the weights and version are unchanged)."""
    if key in ("model", "version", "parts"):
        raise ValueError(f"the card's {key!r} is written by save_release only")
    path = Path(directory) / _CARD
    card = {**json.loads(path.read_text(encoding="utf-8")), key: value}
    path.write_text(json.dumps(card, indent=2, sort_keys=True), encoding="utf-8")
    return card


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    """Short sha256 over the weight arrays (names, shapes and bytes), used as the model version."""
    h = hashlib.sha256()
    for name in sorted(weights):
        arr = np.ascontiguousarray(weights[name], dtype=np.float32)
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


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
    encoder, head = split_weights(arrays, config)
    save_file(encoder, str(out / ENCODER_FILE))
    save_file(head, str(out / HEAD_FILE))
    (out / _LEGACY_WEIGHTS).unlink(missing_ok=True)  # an older release overwritten in place
    vocab.save(out / _VOCAB)
    parts = {"encoder": sorted(encoder), "head": sorted(head)}
    full_card = {**card, "model": config.to_dict(), "version": weights_digest(arrays), "parts": parts}
    (out / _CARD).write_text(json.dumps(full_card, indent=2, sort_keys=True), encoding="utf-8")
    return Release(arrays, vocab, full_card)


def load_release(directory: str | Path) -> Release:
    """Read a release written by ``save_release``; a missing file raises ``FileNotFoundError``."""
    src = Path(directory)
    legacy = (src / _LEGACY_WEIGHTS).is_file()
    for name in (_VOCAB, _CARD) if legacy else (ENCODER_FILE, HEAD_FILE, _VOCAB, _CARD):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src} is not a hushtype release: {name} is missing")
    card = json.loads((src / _CARD).read_text(encoding="utf-8"))
    if legacy:
        raw = load_file(str(src / _LEGACY_WEIGHTS))
    else:
        raw = {**load_file(str(src / ENCODER_FILE)), **load_file(str(src / HEAD_FILE))}
    weights = _checked_arrays(raw, ModelConfig(**card["model"]))
    return Release(weights, Vocabulary.load(src / _VOCAB), card)
