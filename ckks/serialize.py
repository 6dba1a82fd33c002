"""Bytes in and out of SEAL objects, with validation at the boundary.

``tenseal.sealapi`` objects only ``save``/``load`` to a file path. We give them an anonymous in-memory
file (``memfd``, Linux) or, elsewhere, a temporary file, and read the bytes back.

Ciphertexts travel in one of two codecs:

- ``CODEC_PACKED`` (default): the 2·N coefficients of the single data prime, bit-packed to exactly
  ``data_prime_bits`` bits each. This is lossless and the smallest honest encoding of a public-key
  CKKS ciphertext (its coefficients are uniform mod q). On load we rebuild SEAL's uncompressed format
  and let SEAL's own ``load`` validate it (coefficients < q, parms id, sizes).
- ``CODEC_SEAL``: SEAL's own ``save`` (zstd), ~10% larger for a 31-bit prime because zstd works on bytes.

Anything malformed raises ``CiphertextFormatError`` (a ``ValueError``); SEAL's ``RuntimeError`` never
leaks out.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

CODEC_PACKED = 1
CODEC_SEAL = 2

_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct(
    "<HBBBBHQ"
)  # magic, header size, version major/minor, compr mode, reserved, size
_SEAL_CT_META = struct.Struct("<4QBQQQdQ")  # parms_id, is_ntt_form, size, N, coeff_modulus_size, scale, corr.
_SEAL_PT_META = struct.Struct("<4QQd")  # parms_id, coeff_count, scale (Plaintext, and so SecretKey)


class CiphertextFormatError(ValueError):
    """Bytes that are not a valid hushtype/SEAL object for these parameters (truncated, garbage, foreign)."""


# ---------------------------------------------------------------------------------------------------------
# SEAL objects <-> bytes
# ---------------------------------------------------------------------------------------------------------


def _with_scratch_path(action: Callable[[str, int], Any]) -> Any:
    """Run ``action(path, fd)`` on an empty scratch file that lives in memory where possible."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("hushtype-seal")
        try:
            return action(f"/proc/self/fd/{fd}", fd)
        finally:
            os.close(fd)
    fd, path = tempfile.mkstemp(prefix="hushtype-seal-")
    try:
        return action(path, fd)
    finally:
        os.close(fd)
        os.unlink(path)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0)


def seal_to_bytes(obj: Any) -> bytes:
    """Serialize a sealapi object (Ciphertext, PublicKey, SecretKey, ...) with SEAL's own ``save``."""

    def action(path: str, fd: int) -> bytes:
        obj.save(path)
        return _read_all(fd)

    return _with_scratch_path(action)


def seal_from_bytes(obj: Any, context: sealapi.SEALContext, data: bytes, what: str = "object") -> None:
    """Load ``data`` into the sealapi object ``obj``; raise ``CiphertextFormatError`` if SEAL refuses it."""
    if len(data) < _SEAL_HEADER.size:
        raise CiphertextFormatError(f"{what}: {len(data)} bytes is too short for a SEAL header.")
    magic, header_size, *_rest, size = _SEAL_HEADER.unpack_from(data)
    if magic != _SEAL_MAGIC or header_size != _SEAL_HEADER.size or size != len(data):
        raise CiphertextFormatError(f"{what}: not a SEAL object (bad magic or size field).")

    def action(path: str, fd: int) -> None:
        os.pwrite(fd, data, 0)
        obj.load(context, path)

    try:
        _with_scratch_path(action)
    except (RuntimeError, ValueError) as exc:  # SEAL's std::exceptions surface as these
        raise CiphertextFormatError(f"{what}: SEAL refused the bytes ({exc}).") from exc
    if not sealapi.is_valid_for(obj, context):
        raise CiphertextFormatError(f"{what}: loaded, but not valid for these encryption parameters.")


# ---------------------------------------------------------------------------------------------------------
# Bit packing of ciphertext coefficients
# ---------------------------------------------------------------------------------------------------------


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers < 2**bits into ``ceil(len·bits/8)`` bytes (little-endian bit order)."""
    values = np.asarray(values, dtype=np.uint64)
    shifts = np.arange(bits, dtype=np.uint64)
    planes = ((values[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)  # (n, bits)
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def unpack_bits(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of ``pack_bits``: ``count`` integers of ``bits`` bits each, as uint64."""
    if len(data) != packed_size(count, bits):
        raise CiphertextFormatError(f"expected {packed_size(count, bits)} packed bytes, got {len(data)}.")
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits, bitorder="little")
    planes = planes.reshape(count, bits).astype(np.uint64)
    return (planes << np.arange(bits, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def packed_size(count: int, bits: int) -> int:
    """Bytes ``pack_bits`` produces for ``count`` values of ``bits`` bits."""
    return (count * bits + 7) // 8


def ciphertext_coefficients(ct: sealapi.Ciphertext) -> np.ndarray:
    """The ciphertext's raw RNS coefficients (size · coeff_modulus_size · N uint64) as a numpy copy."""
    return _dyn_array_values(ct.dyn_array())


def _dyn_array_values(arr: Any) -> np.ndarray:
    """A SEAL DynArray<uint64> (ciphertext or plaintext data) as a numpy copy."""
    n = arr.size()
    return np.fromiter((arr[i] for i in range(n)), dtype=np.uint64, count=n)


def _dyn_array_blob(context: sealapi.SEALContext, values: np.ndarray) -> bytes:
    """SEAL's uncompressed serialization of a DynArray<uint64>: header, element count, elements."""
    return _seal_blob(context, struct.pack("<Q", values.size) + values.astype("<u8", copy=False).tobytes())


def ciphertext_from_coefficients(
    context: sealapi.SEALContext, coeffs: np.ndarray, scale: float, size: int = 2
) -> sealapi.Ciphertext:
    """Rebuild an NTT-form ciphertext at the first data level from its raw coefficients (SEAL validates)."""
    data = context.first_context_data()
    n_poly = data.parms().poly_modulus_degree()
    n_mod = len(data.parms().coeff_modulus())
    if coeffs.size != size * n_mod * n_poly:
        raise CiphertextFormatError(f"expected {size * n_mod * n_poly} coefficients, got {coeffs.size}.")
    # SEAL's uncompressed layout (Ciphertext::save_members): metadata, then a nested DynArray object.
    meta = _SEAL_CT_META.pack(*context.first_parms_id(), 1, size, n_poly, n_mod, scale, 1)
    ct = sealapi.Ciphertext()
    seal_from_bytes(
        ct, context, _seal_blob(context, meta + _dyn_array_blob(context, coeffs)), what="ciphertext"
    )
    return ct


def _seal_blob(context: sealapi.SEALContext, body: bytes) -> bytes:
    """Wrap ``body`` in SEAL's outer serialization header (uncompressed)."""
    major, minor = _seal_version(context)
    return (
        _SEAL_HEADER.pack(_SEAL_MAGIC, _SEAL_HEADER.size, major, minor, 0, 0, _SEAL_HEADER.size + len(body))
        + body
    )


def _dyn_array_bytes(array: Any) -> bytes:
    """SEAL's own serialization of a DynArray (the nested object inside ciphertexts and plaintexts)."""

    def action(path: str, fd: int) -> bytes:
        array.save(path)
        return _read_all(fd)

    return _with_scratch_path(action)


def reparent_ciphertext(ct: sealapi.Ciphertext, context: sealapi.SEALContext) -> sealapi.Ciphertext:
    """The same ciphertext at ``context``'s first data level; its primes must be that level's primes.

    Used to move a ciphertext rescaled down a long chain into the shorter tail context
    (``ckks.keys.make_tail_context``) where the session's smaller keys live. The RNS data is unchanged;
    SEAL's ``load`` validates sizes and coefficient ranges against the new context.
    """
    first = context.first_context_data().parms()
    n_primes = len(first.coeff_modulus())
    if ct.coeff_modulus_size() != n_primes:
        raise CiphertextFormatError(
            f"ciphertext has {ct.coeff_modulus_size()} primes, the target level has {n_primes}."
        )
    meta = _SEAL_CT_META.pack(
        *context.first_parms_id(),
        1,
        ct.size(),
        first.poly_modulus_degree(),
        ct.coeff_modulus_size(),
        ct.scale,
        1,
    )
    out = sealapi.Ciphertext()
    seal_from_bytes(
        out, context, _seal_blob(context, meta + _dyn_array_bytes(ct.dyn_array())), what="ciphertext"
    )
    return out


def restrict_secret_key(
    secret_key: sealapi.SecretKey, context: sealapi.SEALContext, tail: sealapi.SEALContext
) -> sealapi.SecretKey:
    """The same secret s as a key of ``tail`` (a chain made of some of ``context``'s primes).

    SEAL keeps s in NTT form, one independent block of N values per prime, so dropping the blocks of
    the primes the tail lacks gives exactly s mod the tail's primes.
    """
    primes = [m.value() for m in context.key_context_data().parms().coeff_modulus()]
    keep = [m.value() for m in tail.key_context_data().parms().coeff_modulus()]
    if any(p not in primes for p in keep):
        raise ValueError("the tail context has primes the key's context lacks.")
    n = context.key_context_data().parms().poly_modulus_degree()
    blocks = _dyn_array_values(secret_key.data().dyn_array()).reshape(len(primes), n)
    kept = np.concatenate([blocks[primes.index(p)] for p in keep])
    meta = _SEAL_PT_META.pack(*tail.key_parms_id(), kept.size, 1.0)  # Plaintext::save_members, then data
    out = sealapi.SecretKey()
    seal_from_bytes(out, tail, _seal_blob(tail, meta + _dyn_array_blob(tail, kept)), what="secret key")
    return out


_VERSION_CACHE: dict[int, tuple[int, int]] = {}


def _seal_version(context: sealapi.SEALContext) -> tuple[int, int]:
    """SEAL's serialization version (major, minor), read once from a real save."""
    if not _VERSION_CACHE:
        parms = context.first_context_data().parms()
        header = seal_to_bytes(parms)[: _SEAL_HEADER.size]
        _, _, major, minor, *_ = _SEAL_HEADER.unpack(header)
        _VERSION_CACHE[0] = (major, minor)
    return _VERSION_CACHE[0]
