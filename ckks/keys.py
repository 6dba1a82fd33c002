"""Public and secret CKKS contexts over ``tenseal.sealapi``.

``PublicContext`` holds the parameters and the federation public key: what devices (to encrypt) and the
aggregator (to add) hold. ``SecretContext`` adds the secret key and lives only at the key authority.
``SecretContext`` is deliberately *not* a subclass of ``PublicContext``: every aggregator-side API checks
``isinstance(ctx, PublicContext)``, so handing it the secret context is a ``TypeError``.

Serialized form (both kinds)::

    b"HTCX" | u8 version | u8 kind (1 public, 2 secret) | u32 len | params JSON | sections
    section = u8 tag (b"P" public key, b"S" secret key) | u64 len | SEAL-saved key

A public blob has exactly one ``P`` section; ``assert_public_only`` parses a blob and proves it.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import tenseal.sealapi as sealapi

from ckks.params import HEParams
from ckks.serialize import CiphertextFormatError, seal_from_bytes, seal_to_bytes

_MAGIC = b"HTCX"
_VERSION = 1
_KIND_PUBLIC = 1
_KIND_SECRET = 2
_HEAD = struct.Struct("<4sBBI")
_SECTION = struct.Struct("<cQ")
_TAG_PUBLIC = b"P"
_TAG_SECRET = b"S"


def make_seal_context(params: HEParams) -> sealapi.SEALContext:
    """Build (and validate) the SEAL context for ``params``."""
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(
        sealapi.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_bit_sizes))
    )
    context = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise ValueError(f"SEAL rejects {params.to_dict()}: {context.parameters_error_message()}.")
    return context


def make_tail_context(context: sealapi.SEALContext, drop_primes: int) -> sealapi.SEALContext:
    """The context of ``context``'s chain without its last ``drop_primes`` data primes (same special prime).

    A ciphertext rescaled ``drop_primes`` times in ``context`` lives mod exactly the tail's data primes,
    so it can move to the tail (``ckks.serialize.reparent_ciphertext``) and be evaluated there with keys
    that carry only those primes: a key-switching key has one component per data prime, each mod every
    prime of the chain, so the tail's keys are ~(fewer primes)^2 smaller. ``drop_primes=0`` returns
    ``context`` itself.
    """
    if drop_primes == 0:
        return context
    primes = list(context.key_context_data().parms().coeff_modulus())
    data, special = primes[:-1], primes[-1]
    if not 0 < drop_primes < len(data):
        raise ValueError(f"can drop 0..{len(data) - 1} of the {len(data)} data primes, not {drop_primes}.")
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(context.key_context_data().parms().poly_modulus_degree())
    parms.set_coeff_modulus(data[: len(data) - drop_primes] + [special])
    tail = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    if not tail.parameters_set():
        raise ValueError(f"SEAL rejects the tail chain: {tail.parameters_error_message()}.")
    return tail


class PublicContext:
    """Parameters + federation public key: encrypt and add, never decrypt."""

    def __init__(self, params: HEParams, public_key: sealapi.PublicKey, seal_context: sealapi.SEALContext):
        if not isinstance(params, HEParams):
            raise TypeError("params must be a ckks.params.HEParams.")
        if not isinstance(public_key, sealapi.PublicKey):
            raise TypeError("public_key must be a tenseal.sealapi.PublicKey.")
        self.params = params
        self.seal_context = seal_context
        self.public_key = public_key
        self.encoder = sealapi.CKKSEncoder(seal_context)
        self.encryptor = sealapi.Encryptor(seal_context, public_key)
        self.evaluator = sealapi.Evaluator(seal_context)

    @property
    def has_secret_key(self) -> bool:
        """Always False: a public context cannot hold a secret key (there is no field for it)."""
        return False

    @property
    def data_modulus(self) -> int:
        """The data prime q a fresh ciphertext lives under."""
        return self.seal_context.first_context_data().parms().coeff_modulus()[0].value()

    def to_bytes(self) -> bytes:
        """Serialize parameters + public key (what is sent to devices and the aggregator)."""
        return _pack(_KIND_PUBLIC, self.params, [(_TAG_PUBLIC, seal_to_bytes(self.public_key))])

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicContext:
        """Load a public context; refuses a blob with a secret key in it (ask the key authority instead)."""
        kind, params, sections = _unpack(data)
        if kind != _KIND_PUBLIC or [tag for tag, _ in sections] != [_TAG_PUBLIC]:
            raise CiphertextFormatError(
                "Not a public context: it must hold exactly one public key and nothing else."
            )
        context = make_seal_context(params)
        return cls(params, _load_public_key(context, sections[0][1]), context)


class SecretContext:
    """Parameters + public key + secret key. Only the key authority holds one."""

    def __init__(self, public: PublicContext, secret_key: sealapi.SecretKey):
        if not isinstance(public, PublicContext):
            raise TypeError("public must be a PublicContext.")
        if not isinstance(secret_key, sealapi.SecretKey):
            raise TypeError("secret_key must be a tenseal.sealapi.SecretKey.")
        self.public = public
        self.secret_key = secret_key
        self.decryptor = sealapi.Decryptor(public.seal_context, secret_key)

    @property
    def params(self) -> HEParams:
        """The parameter set."""
        return self.public.params

    @property
    def has_secret_key(self) -> bool:
        """Always True."""
        return True

    @classmethod
    def generate(cls, params: HEParams) -> SecretContext:
        """Generate a fresh federation key pair for ``params``."""
        context = make_seal_context(params)
        keygen = sealapi.KeyGenerator(context)
        public_key = sealapi.PublicKey()
        keygen.create_public_key(public_key)  # the output-argument overload (see STACK-NOTES)
        return cls(PublicContext(params, public_key, context), keygen.secret_key())

    def public_context(self) -> PublicContext:
        """The public half, safe to hand out."""
        return self.public

    def to_bytes(self) -> bytes:
        """Serialize parameters + public key + secret key. Keep these bytes secret (see ``save``)."""
        sections = [
            (_TAG_PUBLIC, seal_to_bytes(self.public.public_key)),
            (_TAG_SECRET, seal_to_bytes(self.secret_key)),
        ]
        return _pack(_KIND_SECRET, self.params, sections)

    @classmethod
    def from_bytes(cls, data: bytes) -> SecretContext:
        """Inverse of ``to_bytes``."""
        kind, params, sections = _unpack(data)
        if kind != _KIND_SECRET or [tag for tag, _ in sections] != [_TAG_PUBLIC, _TAG_SECRET]:
            raise CiphertextFormatError("Not a secret context: it must hold a public key and a secret key.")
        context = make_seal_context(params)
        secret_key = sealapi.SecretKey()
        seal_from_bytes(secret_key, context, sections[1][1], what="secret key")
        return cls(PublicContext(params, _load_public_key(context, sections[0][1]), context), secret_key)

    def save(self, path: str | Path) -> None:
        """Write the secret context to ``path`` with 0600 permissions (owner read/write only)."""
        data = self.to_bytes()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # also when the file already existed with wider permissions
            os.write(fd, data)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, path: str | Path) -> SecretContext:
        """Read a secret context written by ``save``."""
        return cls.from_bytes(Path(path).read_bytes())


def assert_public_only(data: bytes) -> HEParams:
    """Parse a serialized context and raise ``ValueError`` unless it holds only params and a public key."""
    kind, params, sections = _unpack(data)
    tags = [tag for tag, _ in sections]
    if kind != _KIND_PUBLIC or tags != [_TAG_PUBLIC]:
        raise ValueError(f"Context bytes are not public-only (kind {kind}, sections {tags}).")
    return params


# ---------------------------------------------------------------------------------------------------------
# Container format
# ---------------------------------------------------------------------------------------------------------


def _load_public_key(context: sealapi.SEALContext, data: bytes) -> sealapi.PublicKey:
    public_key = sealapi.PublicKey()
    seal_from_bytes(public_key, context, data, what="public key")
    return public_key


def _pack(kind: int, params: HEParams, sections: list[tuple[bytes, bytes]]) -> bytes:
    params_json = json.dumps(params.to_dict(), sort_keys=True).encode()
    out = [_HEAD.pack(_MAGIC, _VERSION, kind, len(params_json)), params_json]
    for tag, blob in sections:
        out += [_SECTION.pack(tag, len(blob)), blob]
    return b"".join(out)


def _unpack(data: bytes) -> tuple[int, HEParams, list[tuple[bytes, bytes]]]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("context data must be bytes.")
    data = bytes(data)
    if len(data) < _HEAD.size:
        raise CiphertextFormatError(f"{len(data)} bytes is too short for a hushtype context.")
    magic, version, kind, params_len = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise CiphertextFormatError("Not a hushtype context (bad magic).")
    if version != _VERSION:
        raise CiphertextFormatError(f"Unsupported context version {version}; this build reads {_VERSION}.")
    pos = _HEAD.size + params_len
    if pos > len(data):
        raise CiphertextFormatError("Context truncated inside the parameters.")
    try:
        params = HEParams.from_dict(json.loads(data[_HEAD.size : pos]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CiphertextFormatError(f"Context parameters are invalid: {exc}") from exc
    sections = []
    while pos < len(data):
        if pos + _SECTION.size > len(data):
            raise CiphertextFormatError("Context truncated inside a section header.")
        tag, length = _SECTION.unpack_from(data, pos)
        pos += _SECTION.size
        if pos + length > len(data):
            raise CiphertextFormatError("Context truncated inside a key.")
        sections.append((tag, data[pos : pos + length]))
        pos += length
    return kind, params, sections
