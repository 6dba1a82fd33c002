"""Encrypted model updates: chunked CKKS packing, homomorphic sums, the contribution-count slot.

Layout. A device with update x (P floats) and weight w builds the real vector

    v = [1.0, w, w·x_0, ..., w·x_{P-1}, 0, ...]        (padded to a multiple of N)

``v[0]`` is the **contribution-count slot** (every device puts 1.0), ``v[1]`` the **weight slot**. Chunk c
of N reals fills the N/2 complex slots of one ciphertext, two reals per slot:
``z_j = v[cN + j] + i·v[cN + N/2 + j]``.

Weights. The chain has one data prime, so there is no rescale and no plaintext multiply after
encryption: the *device* pre-multiplies by its weight. The aggregator only adds, and after decryption
Σ_k w_k x_k is divided by the decrypted Σ_k w_k (``DecryptedSum.mean``). Keep weights O(1) (e.g.
n_k / n_expected): each chunk of the *sum* must stay under ``HEParams.max_l2_sum`` (provable; Gaussian-like
sums hold far more, see ``typical_rms_sum``); an overflow corrupts every slot, which the count check catches.

Wire format (``EncryptedUpdate.to_bytes``)::

    b"HTEU" | u8 version | u8 codec | 2 pad | 8-byte params_id | u64 n_elements | u32 n_chunks | chunks
    packed codec: each chunk is 2·N coefficients × data_prime_bits bits
    SEAL codec:   each chunk is u32 length + SEAL-saved ciphertext (zstd)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as sealapi

from ckks.keys import PublicContext, SecretContext
from ckks.serialize import (
    CODEC_PACKED,
    CODEC_SEAL,
    CiphertextFormatError,
    ciphertext_coefficients,
    ciphertext_from_coefficients,
    pack_bits,
    packed_size,
    seal_from_bytes,
    seal_to_bytes,
    unpack_bits,
)

RESERVED_SLOTS = 2  # v[0] = contribution count, v[1] = weight
COUNT_INDEX = 0
WEIGHT_INDEX = 1

_MAGIC = b"HTEU"
_VERSION = 1
_HEAD = struct.Struct("<4sBB2x8sQI")
_LEN = struct.Struct("<I")


def chunk_count(n_elements: int, reals_per_ciphertext: int) -> int:
    """Ciphertexts needed for ``n_elements`` values plus the reserved slots."""
    return -(-(n_elements + RESERVED_SLOTS) // reals_per_ciphertext)


def _require_public(context: object) -> PublicContext:
    if isinstance(context, SecretContext):
        raise TypeError(
            "Got a SecretContext where a PublicContext is expected: never hand the secret key out."
        )
    if not isinstance(context, PublicContext):
        raise TypeError("context must be a ckks.keys.PublicContext.")
    return context


class EncryptedUpdate:
    """A flat update encrypted under the federation public key, as a list of chunk ciphertexts."""

    def __init__(self, context: PublicContext, chunks: list[sealapi.Ciphertext], n_elements: int):
        self.context = _require_public(context)
        if n_elements < 0:
            raise ValueError(f"n_elements must be >= 0, got {n_elements}.")
        expected = chunk_count(n_elements, context.params.reals_per_ciphertext)
        if len(chunks) != expected:
            raise ValueError(f"{n_elements} elements need {expected} chunks, got {len(chunks)}.")
        self.chunks = chunks
        self.n_elements = n_elements

    # -- constructing ---------------------------------------------------------------------------------

    @classmethod
    def encrypt(cls, context: PublicContext, flat: np.ndarray, weight: float = 1.0) -> EncryptedUpdate:
        """Encrypt ``weight · flat`` (1-D floats) plus the count (1.0) and weight slots."""
        context = _require_public(context)
        flat = np.asarray(flat)
        if flat.ndim != 1:
            raise ValueError(f"can only encrypt a flat (1-D) update, got shape {flat.shape}.")
        if not np.isfinite(weight) or weight <= 0:
            raise ValueError(f"weight must be a positive finite number, got {weight}.")
        params = context.params
        n = params.reals_per_ciphertext
        half = params.slot_count
        n_chunks = chunk_count(flat.size, n)
        v = np.zeros(n_chunks * n, dtype=np.float64)
        v[COUNT_INDEX] = 1.0
        v[WEIGHT_INDEX] = weight
        np.multiply(flat, weight, out=v[RESERVED_SLOTS : RESERVED_SLOTS + flat.size])
        if not np.all(np.isfinite(v)):
            raise ValueError("update contains NaN or infinity.")
        v[COUNT_INDEX] = v[WEIGHT_INDEX] = 0.0  # reserved slots have their own budget (see max_l2_sum)
        peak = float(np.sqrt(np.max(np.sum(np.square(v.reshape(n_chunks, n)), axis=1))))
        v[COUNT_INDEX], v[WEIGHT_INDEX] = 1.0, weight
        if peak > params.max_l2_sum:
            raise ValueError(
                f"A chunk of weight·x has L2 norm {peak:.3g}, above the {params.max_l2_sum:.3g} this preset "
                "provably holds; clip the update or lower the weight."
            )
        v3 = v.reshape(n_chunks, 2, half)  # first half of a chunk -> real parts, second half -> imaginary
        z = v3[:, 0, :] + 1j * v3[:, 1, :]  # (chunks, N/2)
        chunks = []
        for row in z:
            pt = sealapi.Plaintext()
            context.encoder.encode(row.tolist(), params.scale, pt)
            ct = sealapi.Ciphertext()
            context.encryptor.encrypt(pt, ct)
            chunks.append(ct)
        return cls(context, chunks, flat.size)

    # -- homomorphic ops ------------------------------------------------------------------------------

    def _check_compatible(self, other: EncryptedUpdate) -> None:
        if not isinstance(other, EncryptedUpdate):
            raise TypeError("can only add an EncryptedUpdate.")
        if other.context.params.params_id != self.context.params.params_id:
            raise ValueError("cannot add updates encrypted under different parameters.")
        if other.n_elements != self.n_elements:
            raise ValueError(f"cannot add updates of {self.n_elements} and {other.n_elements} elements.")

    def add_(self, other: EncryptedUpdate) -> EncryptedUpdate:
        """Add ``other`` in place (homomorphically) and return self."""
        self._check_compatible(other)
        evaluator = self.context.evaluator
        for mine, theirs in zip(self.chunks, other.chunks, strict=True):
            evaluator.add_inplace(mine, theirs)
        return self

    def add(self, other: EncryptedUpdate) -> EncryptedUpdate:
        """Return a new update holding ``self + other``."""
        return sum_updates([self, other])

    __add__ = add
    __iadd__ = add_

    # -- decrypting (key authority only) ------------------------------------------------------------

    def decrypt(self, secret: SecretContext) -> DecryptedSum:
        """Decrypt with the secret context: the (weighted) sum, the count slot and the weight slot."""
        if not isinstance(secret, SecretContext):
            raise TypeError("decrypt needs the SecretContext (key authority).")
        if secret.params.params_id != self.context.params.params_id:
            raise ValueError("this update was encrypted under different parameters.")
        encoder = secret.public.encoder
        rows = []
        for ct in self.chunks:
            pt = sealapi.Plaintext()
            secret.decryptor.decrypt(ct, pt)
            rows.append(np.asarray(encoder.decode_complex(pt)))
        z = np.stack(rows)  # (chunks, N/2)
        v = np.concatenate([z.real, z.imag], axis=1).ravel()
        return DecryptedSum(
            values=v[RESERVED_SLOTS : RESERVED_SLOTS + self.n_elements].copy(),
            count=float(v[COUNT_INDEX]),
            total_weight=float(v[WEIGHT_INDEX]),
        )

    # -- bytes ------------------------------------------------------------------------------------------

    def to_bytes(self, codec: int = CODEC_PACKED) -> bytes:
        """Serialize (header + chunks); the packed codec is the smallest, see ``ckks.serialize``."""
        params = self.context.params
        head = _HEAD.pack(_MAGIC, _VERSION, codec, params.params_id, self.n_elements, len(self.chunks))
        out = [head]
        if codec == CODEC_PACKED:
            bits = params.data_prime_bits[0]
            for ct in self.chunks:
                if ct.size() != 2 or ct.coeff_modulus_size() != 1 or ct.scale != params.scale:
                    raise ValueError(
                        "only fresh or summed ciphertexts (size 2, one prime, scale Δ) can be packed."
                    )
                out.append(pack_bits(ciphertext_coefficients(ct), bits))
        elif codec == CODEC_SEAL:
            for ct in self.chunks:
                blob = seal_to_bytes(ct)
                out += [_LEN.pack(len(blob)), blob]
        else:
            raise ValueError(f"unknown codec {codec}; use CODEC_PACKED or CODEC_SEAL.")
        return b"".join(out)

    @classmethod
    def from_bytes(cls, context: PublicContext, data: bytes) -> EncryptedUpdate:
        """Parse and validate bytes from ``to_bytes``; raise ``CiphertextFormatError`` on anything wrong."""
        context = _require_public(context)
        params = context.params
        data = bytes(data)
        if len(data) < _HEAD.size:
            raise CiphertextFormatError(f"{len(data)} bytes is too short for an encrypted update header.")
        magic, version, codec, params_id, n_elements, n_chunks = _HEAD.unpack_from(data)
        if magic != _MAGIC:
            raise CiphertextFormatError("Not a hushtype encrypted update (bad magic).")
        if version != _VERSION:
            raise CiphertextFormatError(
                f"Unsupported encrypted-update version {version}; this build reads {_VERSION}."
            )
        if params_id != params.params_id:
            raise CiphertextFormatError(
                f"Update was encrypted under parameters {params_id.hex()}, this context is "
                f"{params.params_id.hex()} ({params.name}); use the federation's public context."
            )
        if n_chunks != chunk_count(n_elements, params.reals_per_ciphertext):
            raise CiphertextFormatError(
                f"Header says {n_chunks} chunks for {n_elements} elements: inconsistent."
            )
        pos = _HEAD.size
        chunks = []
        if codec == CODEC_PACKED:
            n_coeffs = 2 * params.poly_modulus_degree
            bits = params.data_prime_bits[0]
            size = packed_size(n_coeffs, bits)
            if len(data) != pos + n_chunks * size:
                raise CiphertextFormatError(
                    f"Expected {pos + n_chunks * size} bytes for {n_chunks} packed chunks, got {len(data)} "
                    "(truncated or padded)."
                )
            for c in range(n_chunks):
                coeffs = unpack_bits(data[pos + c * size : pos + (c + 1) * size], n_coeffs, bits)
                chunks.append(ciphertext_from_coefficients(context.seal_context, coeffs, params.scale))
        elif codec == CODEC_SEAL:
            for c in range(n_chunks):
                if pos + _LEN.size > len(data):
                    raise CiphertextFormatError(f"Truncated before chunk {c}.")
                (length,) = _LEN.unpack_from(data, pos)
                pos += _LEN.size
                if pos + length > len(data):
                    raise CiphertextFormatError(f"Truncated inside chunk {c}.")
                ct = sealapi.Ciphertext()
                seal_from_bytes(ct, context.seal_context, data[pos : pos + length], what=f"chunk {c}")
                pos += length
                if (
                    ct.size() != 2
                    or ct.parms_id() != context.seal_context.first_parms_id()
                    or ct.scale != params.scale
                ):
                    raise CiphertextFormatError(f"Chunk {c} is not a fresh/summed ciphertext at scale Δ.")
                chunks.append(ct)
            if pos != len(data):
                raise CiphertextFormatError(f"{len(data) - pos} trailing bytes after the last chunk.")
        else:
            raise CiphertextFormatError(f"Unknown codec {codec}.")
        return cls(context, chunks, n_elements)


def sum_updates(updates: Iterable[EncryptedUpdate]) -> EncryptedUpdate:
    """Homomorphic sum of whatever updates arrived (weights were applied on the devices)."""
    updates = list(updates)
    if not updates:
        raise ValueError("need at least one update to sum.")
    first = updates[0]
    for other in updates[1:]:
        first._check_compatible(other)
    evaluator = first.context.evaluator
    chunks = []
    for parts in zip(*(u.chunks for u in updates), strict=True):
        if len(parts) == 1:
            out = _copy(evaluator, parts[0])
        else:
            out = sealapi.Ciphertext()
            evaluator.add_many(list(parts), out)
        chunks.append(out)
    return EncryptedUpdate(first.context, chunks, first.n_elements)


def _copy(evaluator: sealapi.Evaluator, ct: sealapi.Ciphertext) -> sealapi.Ciphertext:
    out = sealapi.Ciphertext()
    evaluator.negate(ct, out)
    evaluator.negate_inplace(out)
    return out


@dataclass(frozen=True)
class DecryptedSum:
    """A decrypted aggregate: Σ w_k x_k, the count slot (≈ number of updates) and Σ w_k."""

    values: np.ndarray
    count: float
    total_weight: float

    def mean(self) -> np.ndarray:
        """The weighted mean Σ w_k x_k / Σ w_k (weights taken from the decrypted weight slot)."""
        if self.total_weight <= 0:
            raise ValueError(f"decrypted total weight is {self.total_weight:.3g}; cannot divide by it.")
        return self.values / self.total_weight
