"""CKKS parameter presets and the 128-bit security check.

Security bounds come from the Homomorphic Encryption Standard (Albrecht et al., 2018,
homomorphicencryption.org, Table 1, ternary secret, classical 128-bit security), which is
also the table SEAL enforces (``CoeffModulus.MaxBitCount(N, sec_level_type.tc128)``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

#: Largest total coefficient-modulus bit count that keeps 128-bit classical security,
#: per ring dimension N (HE standard, Table 1; identical to SEAL's ``MaxBitCount`` tc128).
MAX_COEFF_BITS_128: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}

#: SEAL's hard bounds on one prime of the coefficient modulus (``SEAL_USER_MOD_BIT_COUNT_MAX``).
MIN_PRIME_BITS = 2
MAX_PRIME_BITS = 60


def check_security(poly_modulus_degree: int, coeff_bit_sizes: list[int]) -> None:
    """Raise ``ValueError`` unless (N, coeff primes) gives 128-bit security per the HE standard."""
    if poly_modulus_degree not in MAX_COEFF_BITS_128:
        raise ValueError(
            f"poly_modulus_degree must be a power of two in {sorted(MAX_COEFF_BITS_128)}, "
            f"got {poly_modulus_degree}."
        )
    sizes = list(coeff_bit_sizes)
    if not sizes:
        raise ValueError("coeff_bit_sizes must list at least one prime size.")
    for bits in sizes:
        if not isinstance(bits, int) or not MIN_PRIME_BITS <= bits <= MAX_PRIME_BITS:
            raise ValueError(
                f"Every prime must have {MIN_PRIME_BITS}..{MAX_PRIME_BITS} bits, got {bits} in {sizes}."
            )
    total = sum(sizes)
    limit = MAX_COEFF_BITS_128[poly_modulus_degree]
    if total > limit:
        raise ValueError(
            f"Coefficient modulus of {total} bits {sizes} exceeds the 128-bit security limit of {limit} bits "
            f"for poly_modulus_degree={poly_modulus_degree}; use fewer or smaller primes or a larger N."
        )


# ---------------------------------------------------------------------------------------------------------
# Parameter sets
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HEParams:
    """One CKKS parameter set; every field states its constraint and why it has its value.

    The modulus chain is ``coeff_bit_sizes = [data primes..., special prime]``. SEAL keeps the last prime
    for key switching and, when encrypting with a public key, encrypts one level up and divides by that
    prime, so a fresh ciphertext lives mod the data primes only and its noise is just the rounding term.
    """

    name: str
    """Human-readable preset name; part of ``params_id`` so two presets never share serialized data."""

    poly_modulus_degree: int
    """Ring dimension N. Constraint: power of two in ``MAX_COEFF_BITS_128``. One ciphertext carries
    N/2 complex slots = N reals (real + imaginary parts)."""

    coeff_bit_sizes: tuple[int, ...]
    """Bit sizes of the coefficient-modulus primes, data primes first, special prime last.
    Constraint: each 2..60 bits and ``sum <= MAX_COEFF_BITS_128[N]`` (128-bit security)."""

    scale_bits: int
    """log2 of the CKKS scale Δ. Constraint: ``scale_bits + 1 < data prime bits`` (SEAL refuses a scale
    that fills the modulus) and the headroom ``q / Δ`` must hold the largest summed value."""

    def __post_init__(self) -> None:
        check_security(self.poly_modulus_degree, list(self.coeff_bit_sizes))
        if len(self.coeff_bit_sizes) < 2:
            raise ValueError(
                "coeff_bit_sizes needs a data prime and a special prime: public-key encryption with a "
                "one-prime chain has ~15x more noise (no key level to divide down from)."
            )
        if not 1 <= self.scale_bits < self.data_prime_bits[0] - 1:
            raise ValueError(
                f"scale_bits must be in 1..{self.data_prime_bits[0] - 2} for a {self.data_prime_bits[0]}-bit "
                f"data prime, got {self.scale_bits}."
            )

    @property
    def data_prime_bits(self) -> tuple[int, ...]:
        """Bit sizes of the primes a fresh ciphertext lives under (all but the special prime)."""
        return self.coeff_bit_sizes[:-1]

    @property
    def scale(self) -> float:
        """The CKKS scale Δ = 2**scale_bits."""
        return float(2**self.scale_bits)

    @property
    def slot_count(self) -> int:
        """Complex slots per ciphertext (N/2)."""
        return self.poly_modulus_degree // 2

    @property
    def reals_per_ciphertext(self) -> int:
        """Reals per ciphertext: two per complex slot (real and imaginary part), N in total."""
        return self.poly_modulus_degree

    @property
    def max_l2_sum(self) -> float:
        """Provable capacity: a decrypted sum is exact when each chunk's L2 norm stays under this.

        A coefficient of the encoded polynomial is at most Δ·sqrt(2/N)·||v||_2 (inverse canonical
        embedding, Cauchy-Schwarz), and must stay under q/2 >= 2**(bits-2). Half of that budget is kept
        for the count and weight slots (see ``max_count_plus_weight``). Gaussian-like sums hold far more:
        see ``typical_rms_sum``.
        """
        q_half = float(2 ** (self.data_prime_bits[0] - 2))
        return 0.5 * q_half / (self.scale * math.sqrt(2.0 / self.poly_modulus_degree))

    @property
    def max_count_plus_weight(self) -> float:
        """Provable capacity of the reserved slots: decrypted count + total weight may reach this.

        A real in one slot moves each coefficient by at most 2Δ/N per unit; the reserved slots own half of
        the q/2 budget, so count + Σ weights <= 0.5·(q/2)·N/(2Δ).
        """
        q_half = float(2 ** (self.data_prime_bits[0] - 2))
        return 0.5 * q_half * self.poly_modulus_degree / (2.0 * self.scale)

    @property
    def typical_rms_sum(self) -> float:
        """Heuristic capacity for Gaussian-like sums: per-value rms that keeps coefficients 6σ under their
        half of q/2."""
        q_half = float(2 ** (self.data_prime_bits[0] - 2))
        return 0.5 * q_half / (6.0 * self.scale * math.sqrt(2.0 / self.poly_modulus_degree))

    @property
    def params_id(self) -> bytes:
        """8-byte fingerprint of the parameter set, written into every serialized blob."""
        text = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(text).digest()[:8]

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form (for headers, model cards and logs)."""
        return {
            "name": self.name,
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_bit_sizes": list(self.coeff_bit_sizes),
            "scale_bits": self.scale_bits,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> HEParams:
        """Inverse of ``to_dict``; validates like the constructor."""
        try:
            return cls(
                name=str(data["name"]),
                poly_modulus_degree=int(data["poly_modulus_degree"]),  # type: ignore[arg-type]
                coeff_bit_sizes=tuple(int(b) for b in data["coeff_bit_sizes"]),  # type: ignore[union-attr]
                scale_bits=int(data["scale_bits"]),  # type: ignore[arg-type]
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"Not a valid HEParams dict: {data!r} ({exc}).") from exc


#: Addition-only preset for federated aggregation (devices encrypt with the public key, the
#: aggregator only adds). Chosen by measurement (hushtype/bench_aggregate_micro.py and a sweep over N,
#: N(0, 0.1²) updates of 1.33M values):
#:
#: - One 31-bit data prime is all that is sent: bit-packed, a ciphertext is 2·N·31 bits for N reals,
#:   7.75 B/param, 1.94x fp32 (the floor is ~(log2 q)/16) whatever N is.
#: - The error floor is the rounding after SEAL divides by the special prime, r0 + r1·s: ~N/6 per slot,
#:   i.e. rms N/(6Δ) per value. Measured per single update (rms / max over 1.33M values): N=8192 2.6e-6 /
#:   2.5e-5, N=4096 1.3e-6 / 1.3e-5, N=2048 6.3e-7 / 6.7e-6. So the smallest ring keeps even a *single*
#:   update, and any mean, under the 1e-5 target (the mean of 3 measured 3.7e-6 max), at the same
#:   encryption speed (0.27 s per 1.33M params at N=2048 and 4096, 0.3 s at 8192) and the same bytes.
#: - N=2048 allows 54 bits at 128-bit security: [31, 23]. The 23-bit special prime still divides the
#:   public-key encryption noise (~2^10) to well under the rounding term.
#: - Δ = 2^29 leaves headroom q/Δ ~ 2^2, split in half: provably exact up to ``max_l2_sum`` (16) per
#:   chunk of 2048 values (50 updates clipped to C=0.3 sum to norm <= 15) and count + total weight up to
#:   ``max_count_plus_weight`` (512: 256 unit-weight devices a round); Gaussian-like sums to rms
#:   ``typical_rms_sum`` (~2.7) per value (the default round's summed DP noise is rms 0.3). An overflow
#:   corrupts every slot, and the contribution-count check then refuses the aggregate.
AGGREGATION = HEParams(
    name="aggregation-v2", poly_modulus_degree=2048, coeff_bit_sizes=(31, 23), scale_bits=29
)

#: Presets by name; the encrypted-inference preset is registered by its own module.
PRESETS: dict[str, HEParams] = {AGGREGATION.name: AGGREGATION}
