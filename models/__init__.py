"""What is learned, shared by every side: tokenizer, vocabulary, the models, baselines, metrics, releases."""

from models.config import KINDS, SHIPPED_KIND, ModelConfig, shipped_model_config
from models.data import Examples, make_examples
from models.factory import (
    HEAD_KEYS,
    build_model,
    encode,
    encoder_keys,
    export_weights,
    load_weights,
    param_names,
    plaintext_logits,
    split_weights,
    trainable_keys,
)
from models.head import head_logits
from models.keyboard_lm import KeyboardLM
from models.metrics import next_word_metrics
from models.ngram import KneserNeyTrigram
from models.nplm import NPLM, client_features, server_logits
from models.release import Release, load_release, save_release
from models.tokenizer import tokenize, tokenize_sentences
from models.vocab import Vocabulary, build_vocabulary

__all__ = [
    "HEAD_KEYS",
    "KINDS",
    "NPLM",
    "SHIPPED_KIND",
    "Examples",
    "KeyboardLM",
    "KneserNeyTrigram",
    "ModelConfig",
    "Release",
    "Vocabulary",
    "build_model",
    "build_vocabulary",
    "client_features",
    "encode",
    "encoder_keys",
    "export_weights",
    "head_logits",
    "load_release",
    "load_weights",
    "make_examples",
    "next_word_metrics",
    "param_names",
    "plaintext_logits",
    "save_release",
    "server_logits",
    "shipped_model_config",
    "split_weights",
    "tokenize",
    "tokenize_sentences",
    "trainable_keys",
]
