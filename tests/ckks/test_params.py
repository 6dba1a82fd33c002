"""Parameter presets: 128-bit security per the HE standard, validation messages."""

from __future__ import annotations

import pytest
import tenseal.sealapi as sealapi

from ckks.params import AGGREGATION, MAX_COEFF_BITS_128, PRESETS, HEParams, check_security

HE_STANDARD_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


def test_table_matches_he_standard_and_seal() -> None:
    assert MAX_COEFF_BITS_128 == HE_STANDARD_128
    for n, bits in HE_STANDARD_128.items():
        assert sealapi.CoeffModulus.MaxBitCount(n, sealapi.SEC_LEVEL_TYPE.TC128) == bits


@pytest.mark.parametrize("preset", list(PRESETS.values()), ids=list(PRESETS))
def test_presets_are_128_bit_secure(preset: HEParams) -> None:
    check_security(preset.poly_modulus_degree, list(preset.coeff_bit_sizes))
    assert sum(preset.coeff_bit_sizes) <= HE_STANDARD_128[preset.poly_modulus_degree]


@pytest.mark.parametrize(
    ("n", "bits", "match"),
    [
        (4096, [60, 50], "exceeds the 128-bit security limit of 109"),
        (8192, [60, 60, 60, 39], "exceeds the 128-bit security limit of 218"),
        (3000, [30], "power of two"),
        (4096, [], "at least one prime"),
        (4096, [61], "2..60 bits"),
        (4096, [1], "2..60 bits"),
    ],
)
def test_check_security_rejects(n: int, bits: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_security(n, bits)


@pytest.mark.parametrize(("n", "bits"), [(n, [limit]) for n, limit in HE_STANDARD_128.items() if limit <= 60])
def test_check_security_accepts_the_limit(n: int, bits: list[int]) -> None:
    check_security(n, bits)


def test_heparams_validation() -> None:
    with pytest.raises(ValueError, match="special prime"):
        HEParams(name="x", poly_modulus_degree=8192, coeff_bit_sizes=(31,), scale_bits=20)
    with pytest.raises(ValueError, match="scale_bits"):
        HEParams(name="x", poly_modulus_degree=8192, coeff_bit_sizes=(31, 60), scale_bits=30)
    with pytest.raises(ValueError, match="128-bit"):
        HEParams(name="x", poly_modulus_degree=4096, coeff_bit_sizes=(60, 60), scale_bits=30)


def test_heparams_roundtrip_and_id() -> None:
    again = HEParams.from_dict(AGGREGATION.to_dict())
    assert again == AGGREGATION and again.params_id == AGGREGATION.params_id
    other = HEParams(name="other", poly_modulus_degree=4096, coeff_bit_sizes=(31, 60), scale_bits=28)
    assert other.params_id != AGGREGATION.params_id
    with pytest.raises(ValueError, match="Not a valid HEParams"):
        HEParams.from_dict({"name": "x"})


def test_aggregation_preset_shape() -> None:
    assert AGGREGATION.reals_per_ciphertext == AGGREGATION.poly_modulus_degree == 2 * AGGREGATION.slot_count
    assert AGGREGATION.scale == 2.0**AGGREGATION.scale_bits
    # Wire cost of one ciphertext: 2 polynomials x N coefficients x data-prime bits, for N reals.
    assert 2 * sum(AGGREGATION.data_prime_bits) / 8 / 4 <= 2.0
    assert AGGREGATION.max_l2_sum >= 15  # 50 devices a round, each update clipped to C=0.3, weight 1
    assert AGGREGATION.max_count_plus_weight >= 2 * 200  # 200 unit-weight devices a round
    assert AGGREGATION.typical_rms_sum > 1.0  # the summed DP noise of a round is rms sigma*C = 0.3
