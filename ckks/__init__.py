"""Shared CKKS package (TenSEAL / SEAL): parameters, keys, packing, serialization."""

from ckks.keys import PublicContext, SecretContext, assert_public_only, make_seal_context
from ckks.packing import DecryptedSum, EncryptedUpdate, chunk_count, sum_updates
from ckks.params import AGGREGATION, MAX_COEFF_BITS_128, PRESETS, HEParams, check_security
from ckks.serialize import CODEC_PACKED, CODEC_SEAL, CiphertextFormatError

__all__ = [
    "AGGREGATION",
    "CODEC_PACKED",
    "CODEC_SEAL",
    "MAX_COEFF_BITS_128",
    "PRESETS",
    "CiphertextFormatError",
    "DecryptedSum",
    "EncryptedUpdate",
    "HEParams",
    "PublicContext",
    "SecretContext",
    "assert_public_only",
    "check_security",
    "chunk_count",
    "make_seal_context",
    "sum_updates",
]
