"""Per-session keys for encrypted inference: the device's secret, the server's evaluation keys, wire formats.

Device (``SessionSecret``): generates a fresh secret key per session, the relinearization key and Galois
keys for *only* the rotation steps the circuit lists (``EncryptedNPLM.rotation_steps``), all saved in
SEAL's seeded form (the uniform half of every key component is replaced by a PRNG seed: ~half size).
Queries are encrypted with seeded *symmetric* encryption (``Encryptor(ctx, sk).encrypt_symmetric``),
again about half the bytes of a public-key ciphertext. Logits come back at the last level only.

Server (``SessionEvalKeys``, ``load_ciphertext``): parses and validates everything it receives; malformed,
truncated or wrong-parameter bytes raise ``SessionFormatError`` (a ``ValueError``), never a SEAL crash.

Wire formats (little-endian)::

    eval keys:  b"HTEK" | u8 version | 8-byte params_id | 16-byte key_id | u16 n_steps | u8 rotation_level
                | i32 steps... | u64 len | SEAL relin keys | u64 len | SEAL Galois keys

``rotation_level`` is how many data primes the circuit has dropped before its first rotation: the Galois
keys (and the logits and personal bias) belong to the tail context without them
(``ckks.keys.make_tail_context``), which makes them smaller; the relinearization key is for the full chain.
    ciphertext: b"HTCT" | u8 version | u8 kind (1 query, 2 personal bias, 3 logits, 4 adapter statistics)
                | 8-byte params_id
                | 16-byte key_id | SEAL ciphertext

``key_id`` is random per session: the server refuses a query made under another session's key, and the
device refuses logits computed under another key (they would decrypt to noise anyway).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as sealapi

from ckks.keys import make_seal_context, make_tail_context
from ckks.params import HEParams
from ckks.serialize import CiphertextFormatError, restrict_secret_key, seal_from_bytes, seal_to_bytes

__all__ = [
    "KIND_QUERY",
    "KIND_BIAS",
    "KIND_LOGITS",
    "KIND_STATISTICS",
    "SessionFormatError",
    "SessionSecret",
    "SessionEvalKeys",
    "dump_ciphertext",
    "load_ciphertext",
]

KIND_QUERY, KIND_BIAS, KIND_LOGITS, KIND_STATISTICS = 1, 2, 3, 4
_KIND_NAMES = {
    KIND_QUERY: "query",
    KIND_BIAS: "personal bias",
    KIND_LOGITS: "logits",
    KIND_STATISTICS: "adapter statistics",
}
_VERSION = 2
_KEYS_HEAD = struct.Struct("<4sB8s16sHB")
_CT_HEAD = struct.Struct("<4sBB8s16s")
_LEN = struct.Struct("<Q")
_MAX_STEPS = 64


class SessionFormatError(CiphertextFormatError):
    """Session bytes (keys or ciphertexts) that are truncated, garbage, or made for other parameters/keys."""


def _galois_elts(context: sealapi.SEALContext, steps: list[int]) -> list[int]:
    # The int-vector overload of create_galois_keys can bind to Galois elements: convert explicitly.
    return list(context.key_context_data().galois_tool().get_elts_from_steps(list(steps)))


def dump_ciphertext(ct: object, params: HEParams, key_id: bytes, kind: int) -> bytes:
    """Header + SEAL bytes of a ciphertext (or a seeded ``SerializableCiphertext``)."""
    if kind not in _KIND_NAMES:
        raise ValueError(f"kind must be one of {sorted(_KIND_NAMES)}, got {kind}.")
    return _CT_HEAD.pack(b"HTCT", _VERSION, kind, params.params_id, key_id) + seal_to_bytes(ct)


def load_ciphertext(
    data: bytes,
    context: sealapi.SEALContext,
    params: HEParams,
    kind: int,
    key_id: bytes | None = None,
    parms_id: list[int] | None = None,
) -> sealapi.Ciphertext:
    """Parse and validate a ``dump_ciphertext`` blob; raise ``SessionFormatError`` on anything wrong.

    ``key_id`` (if given) must match the blob's; ``parms_id`` (if given) pins the level it must be at.
    """
    what = _KIND_NAMES.get(kind, "ciphertext")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes.")
    data = bytes(data)
    if len(data) < _CT_HEAD.size:
        raise SessionFormatError(f"{what}: {len(data)} bytes is too short for a hushtype ciphertext.")
    magic, version, got_kind, params_id, got_key = _CT_HEAD.unpack_from(data)
    if magic != b"HTCT":
        raise SessionFormatError(f"{what}: not a hushtype ciphertext (bad magic).")
    if version != _VERSION:
        raise SessionFormatError(f"{what}: unsupported version {version}; this build reads {_VERSION}.")
    if got_kind != kind:
        raise SessionFormatError(f"{what}: got a {_KIND_NAMES.get(got_kind, 'unknown')} ciphertext instead.")
    if params_id != params.params_id:
        raise SessionFormatError(f"{what}: made for other HE parameters than {params.name}.")
    if key_id is not None and got_key != key_id:
        raise SessionFormatError(f"{what}: encrypted under another session's key.")
    ct = sealapi.Ciphertext()
    try:
        seal_from_bytes(ct, context, data[_CT_HEAD.size :], what=what)
    except CiphertextFormatError as exc:
        raise SessionFormatError(str(exc)) from exc
    if ct.size() != 2:
        raise SessionFormatError(f"{what}: expected a 2-component ciphertext, got {ct.size()}.")
    if parms_id is not None and list(ct.parms_id()) != list(parms_id):
        raise SessionFormatError(f"{what}: ciphertext is at the wrong level.")
    return ct


class SessionSecret:
    """Device side of one inference session: secret key, encryption, decryption. Never leaves the device."""

    def __init__(
        self,
        params: HEParams,
        rotation_steps: list[int],
        seed_key_id: bytes | None = None,
        rotation_level: int = 0,
        secret_key: sealapi.SecretKey | None = None,
    ):
        """``secret_key`` (default: a fresh one) is a user's shared key (``ckks.user_keys.UserKey``)."""
        if not isinstance(params, HEParams):
            raise TypeError("params must be a ckks.params.HEParams.")
        steps = sorted({int(s) for s in rotation_steps})
        if len(steps) > _MAX_STEPS:
            raise ValueError(f"at most {_MAX_STEPS} rotation steps, got {len(steps)}.")
        slots = params.slot_count
        if any(not -slots < s < slots for s in steps):
            raise ValueError(f"rotation steps must lie in (-{slots}, {slots}), got {steps}.")
        self.params = params
        self.rotation_steps = steps
        self.key_id = seed_key_id if seed_key_id is not None else os.urandom(16)
        self.context = make_seal_context(params)
        self._keygen = (
            sealapi.KeyGenerator(self.context)
            if secret_key is None
            else sealapi.KeyGenerator(self.context, secret_key)
        )
        self._secret_key = self._keygen.secret_key()
        self.encoder = sealapi.CKKSEncoder(self.context)
        self._encryptor = sealapi.Encryptor(self.context, self._secret_key)
        # The circuit's last layer (rotations, logits, personal bias) runs in the tail context.
        self.rotation_level = int(rotation_level)
        self.tail_context = make_tail_context(self.context, self.rotation_level)
        if self.rotation_level:
            tail_key = restrict_secret_key(self._secret_key, self.context, self.tail_context)
            self._tail_keygen = sealapi.KeyGenerator(self.tail_context, tail_key)
        else:
            tail_key, self._tail_keygen = self._secret_key, self._keygen
        self.tail_encoder = sealapi.CKKSEncoder(self.tail_context)
        self._tail_encryptor = sealapi.Encryptor(self.tail_context, tail_key)
        self._tail_decryptor = sealapi.Decryptor(self.tail_context, tail_key)

    @classmethod
    def generate(cls, params: HEParams, rotation_steps: list[int], rotation_level: int = 0) -> SessionSecret:
        """A fresh session (new secret key and key_id) for ``params`` and the circuit's rotation steps.

        ``rotation_level``: data primes the circuit drops before rotating (``EncryptedNPLM.rotation_level``).
        """
        return cls(params, rotation_steps, rotation_level=rotation_level)

    def eval_keys_bytes(self) -> bytes:
        """Relinearization + Galois keys (seeded), to upload when the session is created. Public."""
        relin = seal_to_bytes(self._keygen.create_relin_keys())
        galois = seal_to_bytes(
            self._tail_keygen.create_galois_keys(_galois_elts(self.tail_context, self.rotation_steps))
        )
        head = _KEYS_HEAD.pack(
            b"HTEK",
            _VERSION,
            self.params.params_id,
            self.key_id,
            len(self.rotation_steps),
            self.rotation_level,
        )
        steps = struct.pack(f"<{len(self.rotation_steps)}i", *self.rotation_steps)
        return b"".join([head, steps, _LEN.pack(len(relin)), relin, _LEN.pack(len(galois)), galois])

    def encrypt_query(self, slots: np.ndarray) -> bytes:
        """Seeded symmetric encryption of a slot vector at the top level and scale Δ."""
        return self._encrypt(slots, self.context.first_parms_id(), self.params.scale, KIND_QUERY)

    def encrypt_bias(
        self, slots: np.ndarray, scale: float, parms_id: list[int] | None = None, kind: int = KIND_BIAS
    ) -> bytes:
        """Encrypt the personal vocabulary bias (or, ``kind=KIND_STATISTICS``, an increment of a user's
        adapter) at the circuit's output scale and level (default: the tail context's last level, where
        the logits are)."""
        if kind not in (KIND_BIAS, KIND_STATISTICS):
            raise ValueError(f"kind must be KIND_BIAS or KIND_STATISTICS, got {kind}.")
        parms_id = parms_id if parms_id is not None else self.tail_context.last_parms_id()
        return self._encrypt(slots, parms_id, scale, kind, tail=True)

    def decrypt_bias(
        self, data: bytes, vocab_size: int, kind: int = KIND_BIAS, complex_values: bool = False
    ) -> np.ndarray:
        """Decrypt a tail-context ciphertext of ``kind`` (a user's adapter as the server holds it, or
        logits): the first ``vocab_size`` slots, real parts (float64) or, with ``complex_values``, complex."""
        ct = load_ciphertext(data, self.tail_context, self.params, kind, key_id=self.key_id)
        pt = sealapi.Plaintext()
        self._tail_decryptor.decrypt(ct, pt)
        decode = self.tail_encoder.decode_complex if complex_values else self.tail_encoder.decode_double
        return np.asarray(decode(pt))[:vocab_size]

    def decrypt_logits(self, data: bytes, vocab_size: int) -> np.ndarray:
        """Decrypt a logits response: the first ``vocab_size`` slots (real parts), float64."""
        return self.decrypt_bias(data, vocab_size, kind=KIND_LOGITS)

    def _encrypt(
        self, slots: np.ndarray, parms_id: list[int], scale: float, kind: int, tail: bool = False
    ) -> bytes:
        values = np.asarray(slots)
        n = self.encoder.slot_count()
        if values.ndim != 1 or values.size > n:
            raise ValueError(f"can only encrypt a vector of at most {n} slots, got shape {values.shape}.")
        if not np.all(np.isfinite(values)):
            raise ValueError("values contain NaN or infinity.")
        encoder, encryptor = (
            (self.tail_encoder, self._tail_encryptor) if tail else (self.encoder, self._encryptor)
        )
        pt = sealapi.Plaintext()
        if np.iscomplexobj(values):
            encoder.encode(values.astype(np.complex128).tolist(), parms_id, scale, pt)
        else:
            encoder.encode(values.astype(np.float64).tolist(), parms_id, scale, pt)
        return dump_ciphertext(encryptor.encrypt_symmetric(pt), self.params, self.key_id, kind)


@dataclass
class SessionEvalKeys:
    """Server side: one session's public evaluation keys, loaded and validated."""

    params: HEParams
    key_id: bytes
    rotation_steps: list[int]
    relin_keys: sealapi.RelinKeys
    galois_keys: sealapi.GaloisKeys

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        params: HEParams,
        context: sealapi.SEALContext | None = None,
        required_steps: list[int] | None = None,
        rotation_level: int = 0,
        tail_context: sealapi.SEALContext | None = None,
    ) -> SessionEvalKeys:
        """Parse ``SessionSecret.eval_keys_bytes`` output; raise ``SessionFormatError`` if it is not valid
        for ``params``, was made for another ``rotation_level`` than the circuit's, or lacks a key for one
        of ``required_steps``. ``tail_context`` (default: derived) is where the Galois keys are loaded."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("eval keys must be bytes.")
        data = bytes(data)
        context = context if context is not None else make_seal_context(params)
        if len(data) < _KEYS_HEAD.size:
            raise SessionFormatError(f"eval keys: {len(data)} bytes is too short.")
        magic, version, params_id, key_id, n_steps, level = _KEYS_HEAD.unpack_from(data)
        if magic != b"HTEK":
            raise SessionFormatError("eval keys: not hushtype evaluation keys (bad magic).")
        if version != _VERSION:
            raise SessionFormatError(
                f"eval keys: unsupported version {version}; this build reads {_VERSION}."
            )
        if params_id != params.params_id:
            raise SessionFormatError(f"eval keys: made for other HE parameters than {params.name}.")
        if level != rotation_level:
            raise SessionFormatError(
                f"eval keys: Galois keys made for rotation level {level}, the circuit rotates at level "
                f"{rotation_level} (get the model's he.rotation_level from GET /v1/model)."
            )
        if tail_context is None:
            tail_context = make_tail_context(context, rotation_level)
        if n_steps > _MAX_STEPS:
            raise SessionFormatError(
                f"eval keys: {n_steps} rotation steps is more than the {_MAX_STEPS} allowed."
            )
        pos = _KEYS_HEAD.size
        if pos + 4 * n_steps > len(data):
            raise SessionFormatError("eval keys: truncated inside the step list.")
        steps = list(struct.unpack_from(f"<{n_steps}i", data, pos))
        pos += 4 * n_steps
        slots = params.slot_count
        if any(not -slots < s < slots for s in steps) or len(set(steps)) != len(steps):
            raise SessionFormatError(f"eval keys: invalid rotation steps {steps}.")
        blobs = []
        for what in ("relinearization keys", "Galois keys"):
            if pos + _LEN.size > len(data):
                raise SessionFormatError(f"eval keys: truncated before the {what}.")
            (length,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            if pos + length > len(data):
                raise SessionFormatError(f"eval keys: truncated inside the {what}.")
            blobs.append(data[pos : pos + length])
            pos += length
        if pos != len(data):
            raise SessionFormatError(f"eval keys: {len(data) - pos} trailing bytes.")
        relin, galois = sealapi.RelinKeys(), sealapi.GaloisKeys()
        try:
            seal_from_bytes(relin, context, blobs[0], what="relinearization keys")
            seal_from_bytes(galois, tail_context, blobs[1], what="Galois keys")
        except CiphertextFormatError as exc:
            raise SessionFormatError(str(exc)) from exc
        for step, elt in zip(steps, _galois_elts(tail_context, steps), strict=True):
            if not galois.has_key(elt):
                raise SessionFormatError(f"eval keys: the Galois key for step {step} is missing.")
        missing = sorted(set(required_steps or []) - set(steps))
        if missing:
            raise SessionFormatError(f"eval keys: no Galois keys for the circuit's rotation steps {missing}.")
        return cls(params, key_id, steps, relin, galois)
