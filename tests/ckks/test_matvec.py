"""BlockMatVec / ReplicatedMatVec: decrypt(W enc(x)) vs numpy, rotation steps, shape checks."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from ckks.keys import make_seal_context
from ckks.matvec import BlockMatVec, HETools, ReplicatedMatVec, block_layout, tile
from ckks.nplm_circuit import INFERENCE

SLOTS = INFERENCE.slot_count
TOL = 1e-4  # absolute, for |W x| ~ 1 at Δ = 2^30 (measured ~1e-6)


@pytest.fixture(scope="module")
def he() -> dict:
    """One context + secret key for all matvec tests; Galois keys for every step used here."""
    context = make_seal_context(INFERENCE)
    keygen = sealapi.KeyGenerator(context)
    steps = [0, 1, 2, 8, 16, 64, 128, 256, 512, 1024, 2048]
    elts = context.key_context_data().galois_tool().get_elts_from_steps(steps)
    galois = sealapi.GaloisKeys()
    keygen.create_galois_keys(elts, galois)
    secret = keygen.secret_key()
    return {
        "tools": HETools.create(context, galois),
        "encryptor": sealapi.Encryptor(context, secret),
        "decryptor": sealapi.Decryptor(context, secret),
    }


def _encrypt(he: dict, slots: np.ndarray) -> sealapi.Ciphertext:
    tools = he["tools"]
    ct = sealapi.Ciphertext()
    he["encryptor"].encrypt_symmetric(
        tools.encode(slots, tools.context.first_parms_id(), INFERENCE.scale), ct
    )
    return ct


def _decrypt(he: dict, ct: sealapi.Ciphertext) -> np.ndarray:
    pt = sealapi.Plaintext()
    he["decryptor"].decrypt(ct, pt)
    return np.asarray(he["tools"].encoder.decode_double(pt))


@pytest.mark.parametrize("shape", [(256, 256), (128, 256), (64, 64), (256, 64)])
@pytest.mark.parametrize("radix", [2, 4])
def test_block_matvec_square_and_wide(he: dict, shape: tuple[int, int], radix: int) -> None:
    rng = np.random.default_rng(shape[0] + shape[1])
    w = rng.normal(size=shape) / np.sqrt(shape[1])
    x = rng.normal(size=shape[1])
    layer = BlockMatVec(he["tools"], w, he["tools"].context.first_parms_id(), cross_radix=radix)
    y = _decrypt(he, layer.apply(_encrypt(he, block_layout(x, shape[0], SLOTS))))
    np.testing.assert_allclose(y, tile(w @ x, SLOTS), atol=TOL)


@pytest.mark.parametrize("shape", [(4096, 256), (512, 64), (256, 256)])
def test_replicated_matvec_tall(he: dict, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0])
    w = rng.normal(size=shape) / np.sqrt(shape[1])
    a = rng.normal(size=shape[1])
    layer = ReplicatedMatVec(
        he["tools"], w, he["tools"].context.first_parms_id(), baby=8 if shape[1] > 64 else 4
    )
    z = _decrypt(he, layer.apply(_encrypt(he, tile(a, SLOTS))))
    np.testing.assert_allclose(z, tile(w @ a, SLOTS), atol=TOL)


def test_early_rescale_variant_is_correct(he: dict) -> None:
    rng = np.random.default_rng(7)
    w = rng.normal(size=(256, 256)) / 16
    x = rng.normal(size=256)
    parms = he["tools"].context.first_parms_id()
    layer = BlockMatVec(he["tools"], w, parms, late_rescale=False)
    y = _decrypt(he, layer.apply(_encrypt(he, block_layout(x, 256, SLOTS))))
    np.testing.assert_allclose(y, tile(w @ x, SLOTS), atol=1e-3)  # ~10x noisier than late rescale


def test_rotation_steps_are_minimal(he: dict) -> None:
    parms = he["tools"].context.first_parms_id()
    w1 = np.zeros((256, 256))
    assert BlockMatVec(he["tools"], w1, parms).rotation_steps == [0, 2, 256, 1024]
    assert BlockMatVec(he["tools"], w1, parms, cross_radix=2).rotation_steps == [0, 2, 256, 512, 1024, 2048]
    assert BlockMatVec(he["tools"], w1, parms, cross_radix=16).rotation_steps == [0, 2, 256]
    assert ReplicatedMatVec(he["tools"], np.zeros((4096, 256)), parms).rotation_steps == [0, 1, 2, 16]


def test_rejects_unsupported_shapes(he: dict) -> None:
    parms = he["tools"].context.first_parms_id()
    with pytest.raises(ValueError, match="power of two"):
        BlockMatVec(he["tools"], np.zeros((100, 256)), parms)
    with pytest.raises(ValueError, match="power of two"):
        ReplicatedMatVec(he["tools"], np.zeros((4096, 200)), parms)
    with pytest.raises(ValueError, match="baby"):
        ReplicatedMatVec(he["tools"], np.zeros((4096, 256)), parms, baby=3)
    with pytest.raises(ValueError, match="cross_radix"):
        BlockMatVec(he["tools"], np.zeros((256, 256)), parms, cross_radix=3)


def test_block_layout_holds_every_column_once_per_row() -> None:
    from ckks.matvec import _block_index

    idx = _block_index(256, 256, SLOTS)
    r, g = 16, 16
    for i in (0, 5, 255):  # columns row i sees through rotations t < g across the r blocks
        cols = {idx[(j * 256 + i + t) % SLOTS] for j in range(r) for t in range(g)}
        assert cols == set(range(256))
