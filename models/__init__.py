"""What is learned, shared by every side: tokenizer, vocabulary, the NPLM, baselines, metrics, releases."""

from models.data import Examples, make_examples
from models.metrics import next_word_metrics
from models.ngram import KneserNeyTrigram
from models.nplm import NPLM, ModelConfig, client_features, export_weights, load_weights, server_logits
from models.release import Release, load_release, save_release
from models.tokenizer import tokenize, tokenize_sentences
from models.vocab import Vocabulary, build_vocabulary

__all__ = [
    "NPLM",
    "Examples",
    "KneserNeyTrigram",
    "ModelConfig",
    "Release",
    "Vocabulary",
    "build_vocabulary",
    "client_features",
    "export_weights",
    "load_release",
    "load_weights",
    "make_examples",
    "next_word_metrics",
    "save_release",
    "server_logits",
    "tokenize",
    "tokenize_sentences",
]
