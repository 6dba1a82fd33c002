"""Device side of encrypted prediction: keys stay here, only ciphertexts and public keys leave.

``PredictionClient`` is a thin client: it fetches the model card and the public **encoder**
(``GET /v1/model``, ``GET /v1/model/weights``), never the head (W2, b2), which only the server
holds and runs under HE. It generates a session secret key on the device with Galois keys for only
the circuit's rotation steps, uploads the public evaluation keys (``POST /v1/sessions``) and,
optionally, the user's vocabulary bias encrypted under the same key (``PUT .../personalization``).
``suggest(text)`` runs the encoder on the last k words on the device (h), encrypts h, posts the
ciphertext and decrypts the logits: the server never sees the context or the suggestions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx
import numpy as np
from safetensors.numpy import load as load_safetensors

from ckks.nplm_circuit import query_slots
from ckks.params import HEParams
from ckks.session_keys import SessionSecret
from keyboard_sim.touch import TouchModel
from models.config import ModelConfig
from models.factory import encode
from models.nplm import client_features
from models.tokenizer import tokenize_sentences
from models.vocab import Vocabulary

__all__ = ["Suggestion", "PredictionClient", "APIError", "context_ids"]

_OCTETS = {"Content-Type": "application/octet-stream"}


class APIError(RuntimeError):
    """The server answered with an error; ``status`` and the server's ``detail`` are kept."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


@dataclass
class Suggestion:
    """One suggested next word and its probability under the (personalized) model."""

    word: str
    probability: float


def context_ids(text: str, vocab: Vocabulary, context: int) -> np.ndarray:
    """The last ``context`` word ids of the text's last sentence, left-padded with ``<s>``."""
    sentences = tokenize_sentences(text)
    stripped = text.rstrip()
    words = sentences[-1] if sentences and not (stripped and stripped[-1] in ".!?;:") else []
    ids = [vocab.bos_id] * context + vocab.encode_words(words)
    return np.asarray(ids[-context:], dtype=np.int64)


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise APIError(response.status_code, str(detail))
    return response


class PredictionClient:
    """A device's encrypted session with the prediction API."""

    def __init__(self, base_url: str, *, http: httpx.Client | None = None, timeout: float = 60.0) -> None:
        self.http = http or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        info = _check(self.http.get("/v1/model")).json()
        self.model_version: str = info["version"]
        self.vocab = Vocabulary(info["vocabulary"])
        self.he = info["he"]
        self.params = HEParams.from_dict(self.he["params"])
        self.model_config = ModelConfig(**info["card"]["model"])
        self.context = self.model_config.context
        # the public encoder only: a thin client never holds the head (w2, b2, beta)
        self.encoder = load_safetensors(_check(self.http.get(info["artifacts"]["encoder"])).content)
        self.secret = SessionSecret.generate(
            self.params, self.he["rotation_steps"], rotation_level=int(self.he.get("rotation_level", 0))
        )
        self.eval_keys = self.secret.eval_keys_bytes()
        self.session_id: str | None = None
        self.token: str | None = None
        self.bytes_sent = self.bytes_received = 0
        self._vocab_index: tuple | None = None  # ((sigma, lm weight), the Autocorrector built for them)

    # -- session ------------------------------------------------------------------
    def open(self) -> PredictionClient:
        """Create the session by uploading the public evaluation keys."""
        created = _check(self.http.post("/v1/sessions", content=self.eval_keys, headers=_OCTETS)).json()
        self.session_id, self.token = created["session_id"], created["token"]
        self.bytes_sent += len(self.eval_keys)
        return self

    def _auth(self) -> dict:
        if self.session_id is None:
            raise RuntimeError("no session: call open() first")
        return {**_OCTETS, "Authorization": f"Bearer {self.token}"}

    def upload_personalization(self, bias: np.ndarray) -> int:
        """Encrypt the user's vocabulary bias under the session key and upload it; returns its size."""
        bias = np.asarray(bias, dtype=np.float64)
        if bias.shape != (len(self.vocab),):
            raise ValueError(f"bias must have shape ({len(self.vocab)},), got {bias.shape}")
        blob = self.secret.encrypt_bias(bias, self.he["output_scale"])
        _check(
            self.http.put(
                f"/v1/sessions/{self.session_id}/personalization", content=blob, headers=self._auth()
            )
        )
        self.bytes_sent += len(blob)
        return len(blob)

    def personalize(self, history: Iterable[str], max_contexts: int = 128) -> dict:
        """Fit the user's vocabulary bias on their own earlier text, on the device, and upload it encrypted.

        ``history`` is what the user typed before (lines of text); it never leaves the device. The
        client holds no head, so the global logits the bias is fitted against come from the server,
        computed on encrypted contexts (one query per distinct context of the ``max_contexts`` most
        recent; the bias is fitted on the examples with those contexts). Call on an open session
        without personalization. Returns how many examples the bias was fitted on and its size.
        """
        from keyboard_sim.personalize import fit_bias_to_logits
        from models.data import make_examples

        sentences = [s for line in history for s in self.vocab.encode_text(line)]
        examples = make_examples(sentences, self.context, self.vocab.bos_id)
        recent: dict[tuple, int] = {}
        for row in reversed(examples.x.tolist()):
            if len(recent) < max_contexts:
                recent.setdefault(tuple(row), len(recent))
        keep = np.array([tuple(row) in recent for row in examples.x.tolist()], dtype=bool)
        contexts = sorted(recent, key=recent.__getitem__)
        base = np.stack([self.logits(np.asarray(c)) for c in contexts]) if contexts else None
        if base is None:
            bias = np.zeros(len(self.vocab), dtype=np.float32)
        else:
            rows = [recent[tuple(row)] for row in examples.x[keep].tolist()]
            bias = fit_bias_to_logits(base[rows], examples.y[keep])
        size = self.upload_personalization(bias)
        return {"examples": int(keep.sum()), "contexts": len(contexts), "adapter_bytes": size}

    def close(self) -> None:
        """Delete the session on the server (keys and adapter are forgotten)."""
        if self.session_id is not None:
            _check(self.http.delete(f"/v1/sessions/{self.session_id}", headers=self._auth()))
            self.session_id = self.token = None

    # -- prediction ---------------------------------------------------------------
    def encrypt_context(self, ids: np.ndarray) -> bytes:
        """The encrypted query for context word ids: h from the device-side encoder (mode "h"), or
        the NPLM's concatenated embeddings (mode "x")."""
        if self.he["mode"] == "h":
            x = encode(self.model_config, self.encoder, ids)
        else:
            x = client_features(self.encoder, ids)
        return self.secret.encrypt_query(
            query_slots(x, self.he["mode"], self.he["hidden"], self.params.slot_count)
        )

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Decrypted (personalized) logits for context ids, computed by the server on ciphertexts."""
        query = self.encrypt_context(ids)
        response = _check(
            self.http.post(f"/v1/sessions/{self.session_id}/predict", content=query, headers=self._auth())
        )
        self.bytes_sent += len(query)
        self.bytes_received += len(response.content)
        return self.secret.decrypt_logits(response.content, len(self.vocab))

    def autocorrect(
        self,
        text: str,
        typed: str | np.ndarray,
        k: int = 3,
        touch_model: TouchModel | None = None,
        lm_weight: float | None = None,
    ) -> list[Suggestion]:
        """Correct the word being typed after ``text``: a noisy-channel decoder (``keyboard_sim.autocorrect``)
        whose prior is the next-word distribution the server computed on ciphertexts (personalized).

        ``typed`` is the word's taps ``(n, 2)`` in key widths, or the characters a plain keyboard
        registered. ``touch_model`` is the keyboard's belief about the user's touch noise (its sigma)
        and ``lm_weight`` the prior's weight (defaults: ``AutocorrectConfig``'s). Probabilities are
        normalized over the returned candidates.
        """
        from keyboard_sim.autocorrect import AutocorrectConfig, default_autocorrector

        sigma = touch_model.config.sigma if touch_model else AutocorrectConfig().sigma
        typed = typed.lower() if isinstance(typed, str) else np.asarray(typed)
        if len(typed) == 0:
            raise ValueError("nothing typed to correct")
        if self._vocab_index is None or self._vocab_index[0] != (sigma, lm_weight):
            config = AutocorrectConfig(sigma=sigma)
            config.prior_weight = lm_weight or config.prior_weight
            self._vocab_index = ((sigma, lm_weight), default_autocorrector(config, lm_words=self.vocab.words))
        z = self.logits(context_ids(text, self.vocab, self.context))
        z[self.vocab.bos_id] = -np.inf  # <unk>'s mass goes to the words outside the model (by frequency)
        logp = z - (z.max() + np.log(np.exp(z - z.max()).sum()))  # log-softmax over the vocabulary
        found = self._vocab_index[1].candidates(typed, logp, top_k=k)
        if not found:
            return []
        scores = np.array([c.score for c in found])
        p = np.exp(scores - scores.max())
        return [Suggestion(c.word, float(q)) for c, q in zip(found, p / p.sum(), strict=True)]

    def suggest(self, text: str, k: int = 3) -> list[Suggestion]:
        """Top-k next words after ``text``, with probabilities; never ``<unk>`` or ``<s>``."""
        z = self.logits(context_ids(text, self.vocab, self.context))
        p = np.exp(z - z.max())
        p /= p.sum()
        p[[self.vocab.unk_id, self.vocab.bos_id]] = -1.0
        top = np.argsort(-p)[:k]
        return [Suggestion(self.vocab.words[i], float(p[i])) for i in top]
