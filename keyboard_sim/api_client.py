"""Device side of encrypted prediction: keys stay here, only ciphertexts and public keys leave.

``PredictionClient`` is a thin client: it fetches the model card and the public **encoder**
(``GET /v1/model``, ``GET /v1/model/weights``), never the head (W2, b2), which only the server
holds and runs under HE. It generates a session secret key on the device with Galois keys for only
the circuit's rotation steps, uploads the public evaluation keys (``POST /v1/sessions``) and,
optionally, the user's vocabulary bias encrypted under the same key (``PUT .../personalization``).
``suggest(text)`` runs the encoder on the last k words on the device (h), encrypts h, posts the
ciphertext and decrypts the logits: the server never sees the context or the suggestions.

Users (``server.api.routers.users``): ``create_user()`` makes a user key on this device and registers
its public evaluation keys; ``export_user()`` gives the bytes another of the user's devices passes to
``import_user()`` (the user key and the user's id and token: keep them on the user's devices, never
upload them). ``open()`` then opens a session bound to the user, whose predictions include the user's
encrypted adapter; ``contribute(history)`` uploads the encrypted statistics of new text as an increment
and re-derives the adapter (``sync_adapter``) with the settings the release's card records (published
by ``GET /v1/model``; ``CacheAdapterConfig.from_card``). A keyboard keeps the user's adapter up to date
by calling ``sentence_sent(sentence)`` after each sentence the user sends: the increment of that
sentence, whose expected counts reuse the logits this client decrypted while it was typed.

On top of the decrypted distribution the device mixes its own cache LM (``keyboard_sim.device_cache``:
the unigram and bigram of what the user typed on this device, kept here, never uploaded), with the
weights the card records; ``suggest(text, local=False)`` gives the server's personalized distribution
alone, which every device of the user shares.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
import numpy as np
from safetensors.numpy import load as load_safetensors

from ckks.nplm_circuit import query_slots
from ckks.params import HEParams
from ckks.session_keys import KIND_STATISTICS, SessionSecret
from ckks.user_keys import UserKey
from keyboard_sim.device_cache import DeviceCache, DeviceCacheConfig
from keyboard_sim.personalize import CacheAdapterConfig, adapter_from_statistics, user_statistics
from keyboard_sim.touch import TouchModel
from models.config import ModelConfig
from models.data import last_context, line_examples
from models.factory import encode
from models.nplm import client_features
from models.release import card_context_scope
from models.tokenizer import tokenize_sentences
from models.vocab import Vocabulary

__all__ = ["Suggestion", "PredictionClient", "APIError", "context_ids"]

log = logging.getLogger(__name__)
_OCTETS = {"Content-Type": "application/octet-stream"}
_USER_FILE = struct.Struct("<4sI")  # b"HTUF" | u32 length of the JSON {"user_id", "token"} | JSON | HTUK
_ADAPTER_ATTEMPTS = 10  # re-derivations when other devices add increments meanwhile (412)
_KEPT_LOGITS = 512  # decrypted logits kept since the last adapter sync, for the next increment


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


def context_ids(text: str, vocab: Vocabulary, context: int, scope: str = "sentence") -> np.ndarray:
    """The ``context`` ids the model reads after the typed ``text`` (``models.data.last_context``)."""
    sentences = [vocab.encode_words(words) for words in tokenize_sentences(text)]
    stripped = text.rstrip()
    ended = bool(stripped) and stripped[-1] in ".!?;:"
    return np.asarray(last_context(sentences, context, vocab.bos_id, scope, ended=ended), dtype=np.int64)


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
        self.context_scope = card_context_scope(info["card"])  # contexts built as in training
        self.adapter_config = CacheAdapterConfig.from_card(info["card"])  # the user adapter's settings
        # what the user typed on this device, mixed into the decrypted distribution (never uploaded)
        self.device_cache = DeviceCache(len(self.vocab), DeviceCacheConfig.from_card(info["card"]))
        # the public encoder only: a thin client never holds the head (w2, b2, beta)
        self.encoder = load_safetensors(_check(self.http.get(info["artifacts"]["encoder"])).content)
        self.secret = SessionSecret.generate(
            self.params, self.he["rotation_steps"], rotation_level=int(self.he.get("rotation_level", 0))
        )
        self._eval_keys: bytes | None = None
        self.user_key: UserKey | None = None
        self.user_id: str | None = None
        self.user_token: str | None = None
        self.session_id: str | None = None
        self.token: str | None = None
        self.bytes_sent = self.bytes_received = 0
        self._vocab_index: tuple | None = None  # ((sigma, lm weight), the Autocorrector built for them)
        # logits decrypted since this client last stored the user's adapter (of that revision): reused
        # for the next increment's expected counts while no other device has changed the adapter
        self._decrypted: dict[tuple, np.ndarray] = {}
        self._synced_revision: int | None = None

    @property
    def eval_keys(self) -> bytes:
        """The public evaluation keys of this client's key (generated on first use, ~1 s)."""
        if self._eval_keys is None:
            self._eval_keys = self.secret.eval_keys_bytes()
        return self._eval_keys

    # -- users --------------------------------------------------------------------------------
    def _use_key(self, key: UserKey) -> None:
        self.user_key = key
        self.secret = key.session(self.he["rotation_steps"], int(self.he.get("rotation_level", 0)))
        self._eval_keys = None

    def _user_auth(self) -> dict:
        if self.user_id is None:
            raise RuntimeError("no user: call create_user() or import_user() first")
        return {**_OCTETS, "Authorization": f"Bearer {self.user_token}"}

    def create_user(self) -> PredictionClient:
        """Make a new user key on this device and register its public evaluation keys (``POST /v1/users``)."""
        self._use_key(UserKey.generate(self.params))
        created = _check(self.http.post("/v1/users", content=self.eval_keys, headers=_OCTETS)).json()
        self.user_id, self.user_token = created["user_id"], created["token"]
        self.bytes_sent += len(self.eval_keys)
        return self

    def export_user(self) -> bytes:
        """The user key with the user's id and token, for the user's other devices (secret: never upload)."""
        if self.user_key is None or self.user_id is None:
            raise RuntimeError("no user: call create_user() or import_user() first")
        ids = json.dumps({"user_id": self.user_id, "token": self.user_token}).encode()
        return _USER_FILE.pack(b"HTUF", len(ids)) + ids + self.user_key.to_bytes()

    def import_user(self, blob: bytes) -> PredictionClient:
        """Use the user exported by another of the user's devices (``export_user``): nothing is uploaded."""
        if len(blob) < _USER_FILE.size or blob[:4] != b"HTUF":
            raise ValueError("not a hushtype user file (bad magic)")
        (length,) = _USER_FILE.unpack_from(blob)[1:]
        try:
            ids = json.loads(blob[_USER_FILE.size : _USER_FILE.size + length])
            user_id, token = str(ids["user_id"]), str(ids["token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"user file: unreadable user id and token ({exc})") from None
        self._use_key(UserKey.from_bytes(blob[_USER_FILE.size + length :], self.params))
        self.user_id, self.user_token = user_id, token
        return self

    def delete_user(self) -> None:
        """Delete the user on the server: keys, statistics, adapter and its sessions."""
        _check(self.http.delete(f"/v1/users/{self.user_id}", headers=self._user_auth()))
        self.user_id = self.user_token = self.session_id = self.token = None

    def statistics_increment(self, history: Iterable[str], max_contexts: int = 128) -> bytes:
        """The encrypted statistics of ``history`` (counts + the global model's expected counts, packed
        as c + i e in one ciphertext under the user key): what ``contribute`` uploads."""
        counts, expected, _ = self._history_statistics(history, max_contexts)
        return self._encrypt_statistics(counts, expected)

    def _encrypt_statistics(self, counts: np.ndarray, expected: np.ndarray) -> bytes:
        return self.secret.encrypt_bias(
            counts + 1j * expected, self.he["statistics_scale"], kind=KIND_STATISTICS
        )

    def _remember(self, history: list[str]) -> None:
        """Count this device's text in its cache LM."""
        for line in history:
            for sentence in self.vocab.encode_text(line):
                self.device_cache.add_sentence(sentence)

    def contribute(self, history: Iterable[str], max_contexts: int = 128) -> dict:
        """Add this device's new text to the user's encrypted statistics (an increment the server adds
        under HE) and re-derive the user's adapter from the sum; the device's cache LM counts it too.
        ``history`` never leaves the device."""
        history = list(history)
        self._remember(history)
        counts, expected, queried = self._history_statistics(history, max_contexts)
        blob = self._encrypt_statistics(counts, expected)
        added = _check(
            self.http.post(f"/v1/users/{self.user_id}/increments", content=blob, headers=self._user_auth())
        ).json()
        self.bytes_sent += len(blob)
        return {
            "increment_bytes": len(blob),
            "revision": added["revision"],
            "contexts_queried": queried,
            **self.sync_adapter(),
        }

    def sentence_sent(self, sentence: str) -> dict:
        """Keep the user's adapter up to date: call it after each sentence the user sends. Uploads the
        sentence's encrypted statistics as an increment (its contexts' logits are the ones this client
        decrypted while the sentence was typed, when still valid; the others are queried) and stores
        the adapter of the new sum, so the user's other devices read it at once."""
        if self.user_id is None:
            raise RuntimeError("no user: call create_user() or import_user() first")
        return self.contribute([sentence])

    def user_statistics(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The user's decrypted statistics (counts, expected counts) and their revision."""
        r = _check(self.http.get(f"/v1/users/{self.user_id}/statistics", headers=self._user_auth()))
        self.bytes_received += len(r.content)
        z = self.secret.decrypt_bias(r.content, len(self.vocab), kind=KIND_STATISTICS, complex_values=True)
        return z.real, z.imag, int(r.headers["X-Revision"])

    def _stored_adapter(self) -> tuple[np.ndarray | None, int | None]:
        """The user's decrypted adapter as the server holds it and the revision it was derived from."""
        r = self.http.get(f"/v1/users/{self.user_id}/adapter", headers=self._user_auth())
        if r.status_code == 404:
            return None, None
        self.bytes_received += len(_check(r).content)
        return self.secret.decrypt_bias(r.content, len(self.vocab)), int(r.headers["X-Revision"])

    def user_adapter(self) -> np.ndarray | None:
        """The user's decrypted adapter as the server holds it (None before the first)."""
        return self._stored_adapter()[0]

    def sync_adapter(self) -> dict:
        """Derive the adapter from the user's current statistics (with ``adapter_config``, the card's
        settings) and store it (``If-Match`` on their revision; repeated when another device added an
        increment meanwhile)."""
        for _ in range(_ADAPTER_ATTEMPTS):
            counts, expected, revision = self.user_statistics()
            adapter = adapter_from_statistics(counts, expected, self.adapter_config)
            blob = self.secret.encrypt_bias(adapter, self.he["output_scale"])
            headers = {**self._user_auth(), "If-Match": str(revision)}
            r = self.http.put(f"/v1/users/{self.user_id}/adapter", content=blob, headers=headers)
            if r.status_code != 412:
                _check(r)
                self.bytes_sent += len(blob)
                self._decrypted.clear()  # taken with the previous adapter
                self._synced_revision = revision
                return {"adapter_revision": revision, "adapter_bytes": len(blob)}
        raise APIError(412, f"the user's statistics kept changing over {_ADAPTER_ATTEMPTS} attempts")

    # -- session ------------------------------------------------------------------
    def open(self) -> PredictionClient:
        """Create the session: bound to the user if there is one (``POST /v1/users/{id}/sessions``,
        nothing to upload), else by uploading this client's public evaluation keys."""
        if self.user_id is not None:
            r = self.http.post(f"/v1/users/{self.user_id}/sessions", headers=self._user_auth())
        else:
            r = self.http.post("/v1/sessions", content=self.eval_keys, headers=_OCTETS)
            self.bytes_sent += len(self.eval_keys)
        created = _check(r).json()
        self.session_id, self.token = created["session_id"], created["token"]
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

    def _history_statistics(
        self, history: Iterable[str], max_contexts: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """(counts, expected counts) of the user's text (``keyboard_sim.personalize.user_statistics``)
        and how many contexts were queried for them.

        The client holds no head, so the global logits come from the server, computed on encrypted
        contexts (one query per distinct context of the ``max_contexts`` most recent, unless this client
        decrypted it since its last adapter sync; the statistics cover the examples with those
        contexts); a user's own adapter is taken off them first.
        """
        lines = (self.vocab.encode_text(line) for line in history)
        examples = line_examples(lines, self.context, self.vocab.bos_id, self.context_scope)
        recent: dict[tuple, int] = {}
        for row in reversed(examples.x.tolist()):
            if len(recent) < max_contexts:
                recent.setdefault(tuple(row), len(recent))
        if not recent:
            zeros = np.zeros(len(self.vocab))
            return zeros, zeros.copy(), 0
        contexts = sorted(recent, key=recent.__getitem__)
        own, revision = self._stored_adapter() if self.user_id is not None else (None, None)
        reuse = revision is not None and revision == self._synced_revision
        known = self._decrypted if reuse else {}
        personal = [known[c] if c in known else self.logits(np.asarray(c)) for c in contexts]
        base = np.stack(personal) - (0.0 if own is None else own)
        keep = np.array([tuple(row) in recent for row in examples.x.tolist()], dtype=bool)
        rows = [recent[tuple(row)] for row in examples.x[keep].tolist()]
        return (*user_statistics(base[rows], examples.y[keep]), sum(c not in known for c in contexts))

    def personalize(self, history: Iterable[str], max_contexts: int = 128) -> dict:
        """Personalize this session from the user's earlier text, computed on the device.

        With a user (``create_user``/``import_user``): ``contribute`` (an encrypted increment the server
        adds to the user's statistics). Without: the cache adapter of the history's statistics
        (``keyboard_sim.personalize``), uploaded encrypted as the session's personalization; call it on
        an open session without personalization. Returns the sizes sent.
        """
        if self.user_id is not None:
            return self.contribute(history, max_contexts)
        history = list(history)
        self._remember(history)
        counts, expected, _ = self._history_statistics(history, max_contexts)
        size = self.upload_personalization(adapter_from_statistics(counts, expected, self.adapter_config))
        return {"examples": int(counts.sum()), "adapter_bytes": size}

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

    def predict(self, query: bytes, http: httpx.Client | None = None) -> httpx.Response:
        """``POST .../predict`` of an encrypted query (through ``http`` if given, e.g. one per thread).

        A connection that breaks before the whole reply arrives (a replica that dies mid-body, after the
        proxy can no longer retry) is asked once more: predict is a pure function of (keys, query,
        adapter), so asking twice is safe. An HTTP error answer is not retried.
        """
        http = http or self.http
        path = f"/v1/sessions/{self.session_id}/predict"
        try:
            return _check(http.post(path, content=query, headers=self._auth()))
        except httpx.TransportError as exc:
            log.warning("predict: the connection broke (%r); asking once more", exc)
        return _check(http.post(path, content=query, headers=self._auth()))

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Decrypted (personalized) logits for context ids, computed by the server on ciphertexts."""
        query = self.encrypt_context(ids)
        response = self.predict(query)
        self.bytes_sent += len(query)
        self.bytes_received += len(response.content)
        z = self.secret.decrypt_logits(response.content, len(self.vocab))
        if self.user_id is not None and len(self._decrypted) < _KEPT_LOGITS:
            self._decrypted[tuple(np.asarray(ids).tolist())] = z.copy()
        return z

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
        p = self.next_word_distribution(text)
        p[self.vocab.bos_id] = 0.0  # <unk>'s mass goes to the words outside the model (by frequency)
        with np.errstate(divide="ignore"):
            logp = np.log(p / p.sum())
        found = self._vocab_index[1].candidates(typed, logp, top_k=k)
        if not found:
            return []
        scores = np.array([c.score for c in found])
        p = np.exp(scores - scores.max())
        return [Suggestion(c.word, float(q)) for c, q in zip(found, p / p.sum(), strict=True)]

    def next_word_distribution(self, text: str, local: bool = True) -> np.ndarray:
        """The next-word distribution (V,) after ``text``: the server's personalized one (computed on
        ciphertexts), mixed with this device's cache LM unless ``local`` is False. ``text`` is the
        text field's content, not yet sent: its words count in the cache as they are typed."""
        ids = context_ids(text, self.vocab, self.context, self.context_scope)
        z = self.logits(ids)
        p = np.exp(z - z.max())
        p /= p.sum()
        if not local or not self.device_cache.config.enabled:
            return p
        typed = [w for sentence in self.vocab.encode_text(text) for w in [*sentence, self.vocab.bos_id]]
        return self.device_cache.mix(p, int(ids[-1]), typed[:-1])

    def suggest(self, text: str, k: int = 3, local: bool = True) -> list[Suggestion]:
        """Top-k next words after ``text``, with probabilities; never ``<unk>`` or ``<s>``. ``local``:
        with this device's cache LM (False: what the server's personalized model alone suggests)."""
        p = self.next_word_distribution(text, local)
        p[[self.vocab.unk_id, self.vocab.bos_id]] = -1.0
        top = np.argsort(-p)[:k]
        return [Suggestion(self.vocab.words[i], float(p[i])) for i in top]
