"""Serialization: round trips, sizes, and clear errors for malformed, truncated or foreign bytes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from ckks.keys import PublicContext, SecretContext, assert_public_only
from ckks.packing import EncryptedUpdate
from ckks.params import AGGREGATION, HEParams
from ckks.serialize import (
    CODEC_PACKED,
    CODEC_SEAL,
    CiphertextFormatError,
    pack_bits,
    seal_to_bytes,
    unpack_bits,
)
from tests.ckks.conftest import TOL_ONE

N = AGGREGATION.reals_per_ciphertext


@pytest.fixture(scope="module")
def update_bytes(public_ctx: PublicContext) -> tuple[np.ndarray, bytes]:
    x = np.random.default_rng(3).normal(0, 0.1, 2 * N + 5).astype(np.float32)
    return x, EncryptedUpdate.encrypt(public_ctx, x, weight=0.5).to_bytes()


@pytest.mark.parametrize("bits", [1, 7, 31, 60])
def test_pack_bits_roundtrip(bits: int) -> None:
    values = np.random.default_rng(bits).integers(0, 2**bits, 1001, dtype=np.uint64)
    packed = pack_bits(values, bits)
    assert len(packed) == (1001 * bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(packed, 1001, bits), values)


@pytest.mark.parametrize("codec", [CODEC_PACKED, CODEC_SEAL])
def test_update_roundtrip(public_ctx: PublicContext, secret_ctx: SecretContext, codec: int) -> None:
    x = np.random.default_rng(4).normal(0, 0.1, N + 3)
    blob = EncryptedUpdate.encrypt(public_ctx, x, weight=2.0).to_bytes(codec)
    out = EncryptedUpdate.from_bytes(public_ctx, blob).decrypt(secret_ctx)
    assert np.max(np.abs(out.values - 2.0 * x)) < TOL_ONE
    assert abs(out.total_weight - 2.0) < TOL_ONE


def test_packed_size_is_under_two_x_fp32(update_bytes: tuple[np.ndarray, bytes]) -> None:
    _, blob = update_bytes
    chunks = 3
    per_chunk = 2 * N * AGGREGATION.data_prime_bits[0] // 8
    assert len(blob) == 28 + chunks * per_chunk
    assert per_chunk / N / 4 < 2.0  # bytes per real vs fp32, for full chunks


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:10],  # shorter than the header
        lambda b: b[:-1],  # truncated payload
        lambda b: b + b"\x00",  # trailing byte
        lambda b: b"XXXX" + b[4:],  # bad magic
        lambda b: b[:4] + b"\x09" + b[5:],  # unknown version
        lambda b: b[:5] + b"\x07" + b[6:],  # unknown codec
        lambda b: b[:16] + (10**9).to_bytes(8, "little") + b[24:],  # element count inconsistent with chunks
        lambda b: b[:28] + b"\xff" * (len(b) - 28),  # coefficients >= q: SEAL's validation, as our error
        lambda b: os.urandom(len(b)),  # garbage
        lambda b: b"",
    ],
    ids=[
        "short",
        "truncated",
        "trailing",
        "magic",
        "version",
        "codec",
        "count",
        "coeffs",
        "garbage",
        "empty",
    ],
)
def test_malformed_update_bytes(
    public_ctx: PublicContext, update_bytes: tuple[np.ndarray, bytes], mutate
) -> None:
    _, blob = update_bytes
    with pytest.raises(CiphertextFormatError):
        EncryptedUpdate.from_bytes(public_ctx, mutate(blob))


@pytest.mark.parametrize("cut", [30, 1000, -5])
def test_malformed_seal_codec(public_ctx: PublicContext, cut: int) -> None:
    blob = EncryptedUpdate.encrypt(public_ctx, np.ones(5)).to_bytes(CODEC_SEAL)
    with pytest.raises(CiphertextFormatError):
        EncryptedUpdate.from_bytes(public_ctx, blob[:cut])
    corrupted = blob[:40] + bytes(b ^ 0x5A for b in blob[40:200]) + blob[200:]
    with pytest.raises(CiphertextFormatError):
        EncryptedUpdate.from_bytes(public_ctx, corrupted)


def test_wrong_params_refused(public_ctx: PublicContext) -> None:
    other = SecretContext.generate(
        HEParams(name="other", poly_modulus_degree=4096, coeff_bit_sizes=(31, 60), scale_bits=28)
    ).public
    blob = EncryptedUpdate.encrypt(other, np.ones(5)).to_bytes()
    with pytest.raises(CiphertextFormatError, match="different|parameters"):
        EncryptedUpdate.from_bytes(public_ctx, blob)


def test_public_context_roundtrip_holds_no_secret_key(
    secret_ctx: SecretContext, public_ctx: PublicContext
) -> None:
    blob = secret_ctx.public.to_bytes()
    params = assert_public_only(blob)  # parses every section: params + public key, nothing else
    assert params == AGGREGATION
    loaded = PublicContext.from_bytes(blob)  # what the aggregator holds
    assert not loaded.has_secret_key and not hasattr(loaded, "secret_key")
    assert seal_to_bytes(secret_ctx.secret_key)[16:80] not in blob
    with pytest.raises(ValueError, match="not public-only"):
        assert_public_only(secret_ctx.to_bytes())
    with pytest.raises(CiphertextFormatError, match="Not a public context"):
        PublicContext.from_bytes(secret_ctx.to_bytes())


def test_public_context_encrypts_for_the_secret(secret_ctx: SecretContext, public_ctx: PublicContext) -> None:
    out = EncryptedUpdate.encrypt(public_ctx, np.array([0.25, -0.5])).decrypt(secret_ctx)
    np.testing.assert_allclose(out.values, [0.25, -0.5], atol=TOL_ONE)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:3],
        lambda b: b"NOPE" + b[4:],
        lambda b: b[:-10],
        lambda b: b[:4] + b"\x02" + b[5:],
        lambda b: b[:11] + b"}" + b[12:],
    ],
    ids=["short", "magic", "truncated", "version", "params-json"],
)
def test_malformed_context_bytes(secret_ctx: SecretContext, mutate) -> None:
    with pytest.raises(CiphertextFormatError):
        PublicContext.from_bytes(mutate(secret_ctx.public.to_bytes()))


def test_secret_context_roundtrip(secret_ctx: SecretContext, public_ctx: PublicContext, tmp_path) -> None:
    path = tmp_path / "federation.key"
    secret_ctx.save(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    restored = SecretContext.load(path)
    out = EncryptedUpdate.encrypt(public_ctx, np.array([0.125])).decrypt(restored)
    assert abs(out.values[0] - 0.125) < TOL_ONE
    assert restored.public.to_bytes() == secret_ctx.public.to_bytes()


def test_reparent_needs_the_same_primes() -> None:
    from ckks.keys import make_seal_context, make_tail_context
    from ckks.nplm_circuit import INFERENCE_H
    from ckks.serialize import reparent_ciphertext

    full = make_seal_context(INFERENCE_H)
    tail = make_tail_context(full, 1)
    fresh = sealapi.Ciphertext(full)
    fresh.resize(full, full.first_parms_id(), 2)  # three primes: not the tail's first level (two)
    with pytest.raises(CiphertextFormatError, match="3 primes"):
        reparent_ciphertext(fresh, tail)
    with pytest.raises(ValueError, match="data primes"):
        make_tail_context(full, 3)
