"""A user's key: one CKKS secret shared by the user's devices, exported and imported as bytes.

The server keeps a user's adapter encrypted under this key (``server.api`` user records) and adds the
devices' encrypted increments to it; only holders of the user key can read the adapter, queries or
suggestions. The key travels between the user's own devices (a file, a QR code, the platform's
keychain sync); it is never sent to the server, which receives only the evaluation keys derived from
it (``eval_keys_bytes``, the HTEK container of ``ckks.session_keys``).

Export format (little-endian)::

    b"HTUK" | u8 version | 8-byte params_id | 16-byte key_id | u64 len | SEAL secret key (full chain)

``key_id`` is the key's fingerprint, ``sha256(b"hushtype-user-key" | SEAL secret key bytes)[:16]``: it
goes in the header of every ciphertext made under the key (HTCT), so the server refuses a ciphertext
made under another key *that says so*. A ciphertext whose header claims the right ``key_id`` but was
encrypted under another key cannot be told apart by the server (it would need the secret key): it
decrypts to noise on the user's devices, and only a holder of the user's token can upload one.
"""

from __future__ import annotations

import hashlib
import struct

import tenseal.sealapi as sealapi

from ckks.keys import make_seal_context
from ckks.params import HEParams
from ckks.serialize import CiphertextFormatError, seal_from_bytes, seal_to_bytes
from ckks.session_keys import SessionFormatError, SessionSecret

__all__ = ["UserKey", "key_fingerprint"]

_HEAD = struct.Struct("<4sB8s16sQ")
_VERSION = 1


def key_fingerprint(secret_key_bytes: bytes) -> bytes:
    """The 16-byte ``key_id`` of a user key (see the module docstring)."""
    return hashlib.sha256(b"hushtype-user-key" + secret_key_bytes).digest()[:16]


class UserKey:
    """The user's secret, shared by their devices; ``session()`` gives a device's ``SessionSecret`` for it.

    Parameters
    ----------
    params : the HE preset of the circuit (``GET /v1/model`` -> ``he.params``).
    secret_key : the SEAL secret key (default: a fresh one).
    """

    def __init__(self, params: HEParams, secret_key: sealapi.SecretKey | None = None) -> None:
        if not isinstance(params, HEParams):
            raise TypeError("params must be a ckks.params.HEParams.")
        self.params = params
        if secret_key is None:
            secret_key = sealapi.KeyGenerator(make_seal_context(params)).secret_key()
        self._secret_key = secret_key
        self._secret_bytes = seal_to_bytes(secret_key)
        self.key_id = key_fingerprint(self._secret_bytes)

    @classmethod
    def generate(cls, params: HEParams) -> UserKey:
        """A fresh user key for ``params``."""
        return cls(params)

    def session(self, rotation_steps: list[int], rotation_level: int = 0) -> SessionSecret:
        """Encrypt/decrypt and evaluation-key generation under this key, for the circuit's steps and level."""
        return SessionSecret(
            self.params,
            rotation_steps,
            seed_key_id=self.key_id,
            rotation_level=rotation_level,
            secret_key=self._secret_key,
        )

    def to_bytes(self) -> bytes:
        """The export (secret: keep it on the user's devices; never upload it)."""
        head = _HEAD.pack(b"HTUK", _VERSION, self.params.params_id, self.key_id, len(self._secret_bytes))
        return head + self._secret_bytes

    @classmethod
    def from_bytes(cls, data: bytes, params: HEParams) -> UserKey:
        """Import ``to_bytes`` output made for ``params``; ``SessionFormatError`` on anything wrong."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("a user key must be bytes.")
        data = bytes(data)
        if len(data) < _HEAD.size:
            raise SessionFormatError(f"user key: {len(data)} bytes is too short.")
        magic, version, params_id, key_id, length = _HEAD.unpack_from(data)
        if magic != b"HTUK":
            raise SessionFormatError("user key: not a hushtype user key (bad magic).")
        if version != _VERSION:
            raise SessionFormatError(f"user key: unsupported version {version}; this build reads {_VERSION}.")
        if params_id != params.params_id:
            raise SessionFormatError(f"user key: made for other HE parameters than {params.name}.")
        body = data[_HEAD.size :]
        if len(body) != length:
            raise SessionFormatError(f"user key: {len(body)} key bytes, the header says {length}.")
        if key_fingerprint(body) != key_id:
            raise SessionFormatError("user key: the fingerprint does not match the key (corrupted).")
        secret_key = sealapi.SecretKey()
        try:
            seal_from_bytes(secret_key, make_seal_context(params), body, what="user key")
        except CiphertextFormatError as exc:
            raise SessionFormatError(str(exc)) from exc
        key = cls(params, secret_key)
        key._secret_bytes, key.key_id = body, key_id  # keep the exact bytes the fingerprint covers
        return key
