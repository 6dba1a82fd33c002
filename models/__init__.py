"""What is learned, shared by every side: tokenizer, vocabulary, the models, baselines, metrics, releases.

Names are imported on first use (PEP 562), so ``import models.config`` (the CLI's parser, run
configuration checks) does not load torch and Opacus.
"""

from __future__ import annotations

from models.lazy import lazy_getattr

_HOME = {
    "Examples": "models.data",
    "HEAD_KEYS": "models.factory",
    "KINDS": "models.config",
    "KeyboardLM": "models.keyboard_lm",
    "KneserNeyTrigram": "models.ngram",
    "ModelConfig": "models.config",
    "NPLM": "models.nplm",
    "Release": "models.release",
    "SHIPPED_KIND": "models.config",
    "Vocabulary": "models.vocab",
    "build_model": "models.factory",
    "build_vocabulary": "models.vocab",
    "client_features": "models.nplm",
    "encode": "models.factory",
    "encoder_keys": "models.factory",
    "export_weights": "models.factory",
    "head_logits": "models.head",
    "load_release": "models.release",
    "load_weights": "models.factory",
    "make_examples": "models.data",
    "next_word_metrics": "models.metrics",
    "param_names": "models.factory",
    "plaintext_logits": "models.factory",
    "save_release": "models.release",
    "server_logits": "models.nplm",
    "shipped_model_config": "models.config",
    "split_weights": "models.factory",
    "tokenize": "models.tokenizer",
    "tokenize_sentences": "models.tokenizer",
    "trainable_keys": "models.factory",
}

__getattr__ = lazy_getattr(__name__, _HOME)


__all__ = sorted(_HOME)
