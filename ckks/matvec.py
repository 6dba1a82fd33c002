"""Encrypted matrix-vector products on ``tenseal.sealapi`` ciphertexts (CKKS, diagonal method).

Halevi & Shoup (CRYPTO 2014, "Algorithms in HElib", §4) write ``W v`` as a sum of generalized diagonals
times rotations of ``v``; the baby-step/giant-step split (Halevi & Shoup 2018, "Faster homomorphic linear
transformations in HElib", §3) needs ~2·sqrt(#diagonals) rotations instead of #diagonals. Two shapes are
used by the hushtype model (S = N/2 complex slots, all sizes powers of two):

``BlockMatVec`` -- square/wide W (m x n, m*n >= 2S), e.g. W1 (256 x 256).
    The *device* lays x out so that block j (slots [j*m, (j+1)*m)) holds x[g*j : g*j + g] repeated, and
    pairs it with its own rotation by one slot in the imaginary part (``block_layout``: free, the device
    encrypts whatever layout it likes). Then g/2 plaintext products cover all m*n weights, r = n/g blocks
    each summing a different slice of columns:
        U = Re sum_u rot(E'_u * X, 2u)          (Horner, after rescaling: g/2 - 1 rotations by 2)
        y = sum_j rot(U, j*m)                   (radix-4 stages: 6 rotations by m, 4m: tiled output)
    Cost: g/2 plaintext mults, 1 rescale, g/2 - 1 + 6 + 1 (conjugation) rotations, 1 level.
    For W1 at S=4096: g=16, r=16 -> 8 mults, 14 rotations (vs 256 mults + 30 rotations for plain BSGS).

``ReplicatedMatVec`` -- tall W (m x n, n | S, m | S), e.g. W2 (4096 x 256) on the tiled hidden vector.
    z = sum_t D_t * rot(a, t), D_t[s] = W[s mod m, (s + t) mod n]. Diagonals are paired through the
    imaginary part: C = a + i*sigma*rot(a, 1) (sigma_s = (-1)^s, the exact monomial X^(N/2)),
    E_u = (D_2u - i*sigma*D_2u+1)/2, z = C' + conj(C'),
    C' = sum_k rot(sum_b rot(E_{gk+b}, -2gk) * rot(C, 2b), 2gk)   (giant steps Horner-style, one key).
    Cost: n/2 + 1 plaintext mults, n/(2g) rescales, 1 + (g-1) + (n/(2g)-1) + 1 rotations, 1 level.
    For W2 (n=256, g=8): 129 mults, 24 rotations (16 of them at the last level, where they are cheapest).

Both classes pre-encode every plaintext once (NTT form, at the level and scale they are used at) and
list ``rotation_steps`` (0 = complex conjugation) so the device generates only those Galois keys.
Plaintext weights are encoded at scale q_l (the prime the next rescale divides by), so the ciphertext
scale is unchanged by a layer: scales never drift and biases are encoded at a known scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as sealapi

__all__ = [
    "HETools",
    "BlockMatVec",
    "ReplicatedMatVec",
    "block_layout",
    "tile",
]


@dataclass
class HETools:
    """The sealapi objects one party works with (thin bundle; keys are optional)."""

    context: sealapi.SEALContext
    encoder: sealapi.CKKSEncoder
    evaluator: sealapi.Evaluator
    galois_keys: sealapi.GaloisKeys | None = None
    relin_keys: sealapi.RelinKeys | None = None

    @classmethod
    def create(
        cls,
        context: sealapi.SEALContext,
        galois_keys: sealapi.GaloisKeys | None = None,
        relin_keys: sealapi.RelinKeys | None = None,
    ) -> HETools:
        """Make the encoder and evaluator for ``context``."""
        return cls(context, sealapi.CKKSEncoder(context), sealapi.Evaluator(context), galois_keys, relin_keys)

    @property
    def slots(self) -> int:
        """Complex slots per ciphertext, S = N/2."""
        return self.encoder.slot_count()

    def encode(self, values: np.ndarray, parms_id: list[int], scale: float) -> sealapi.Plaintext:
        """Encode a real or complex vector of length S as an NTT plaintext at ``parms_id``."""
        pt = sealapi.Plaintext()
        values = np.asarray(values)
        if np.iscomplexobj(values) and np.any(values.imag != 0):
            self.encoder.encode(values.astype(np.complex128).tolist(), parms_id, scale, pt)
        else:
            self.encoder.encode(np.real(values).astype(np.float64).tolist(), parms_id, scale, pt)
        return pt

    def rotate(self, ct: sealapi.Ciphertext, step: int) -> sealapi.Ciphertext:
        """rot(ct, step)[s] = ct[s + step]: one key switch with the Galois key for ``step``."""
        out = sealapi.Ciphertext()
        self.evaluator.rotate_vector(ct, step, self._galois(), out)
        return out

    def conjugate_add(self, ct: sealapi.Ciphertext) -> sealapi.Ciphertext:
        """ct + conj(ct) = 2*Re(ct): one key switch with the conjugation key (step 0)."""
        out = sealapi.Ciphertext()
        self.evaluator.complex_conjugate(ct, self._galois(), out)
        self.evaluator.add_inplace(out, ct)
        return out

    def level_prime(self, parms_id: list[int]) -> float:
        """The prime the next rescale of a ciphertext at ``parms_id`` divides by (its last prime)."""
        data = self.context.get_context_data(parms_id)
        return float(data.parms().coeff_modulus()[-1].value())

    def next_parms_id(self, parms_id: list[int]) -> list[int]:
        """parms_id one level down (after a rescale)."""
        return self.context.get_context_data(parms_id).next_context_data().parms_id()

    def _galois(self) -> sealapi.GaloisKeys:
        if self.galois_keys is None:
            raise ValueError("No Galois keys loaded: the session must upload its evaluation keys first.")
        return self.galois_keys


def tile(v: np.ndarray, slots: int) -> np.ndarray:
    """Repeat ``v`` (length dividing ``slots``) to fill all slots: the replicated layout."""
    v = np.asarray(v)
    if slots % v.shape[-1]:
        raise ValueError(f"length {v.shape[-1]} must divide the slot count {slots}.")
    return np.tile(v, slots // v.shape[-1])


def _block_geometry(n_out: int, n_in: int, slots: int) -> tuple[int, int]:
    """(r blocks, g columns per block) of the block layout; raises ValueError for unsupported shapes."""
    for name, value in (("n_out", n_out), ("n_in", n_in)):
        if value <= 0 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two, got {value}.")
    if n_out > slots or n_in > slots:
        raise ValueError(f"matrix {n_out}x{n_in} does not fit {slots} slots.")
    r = min(slots // n_out, n_in // 2)  # blocks; g = n_in / r >= 2 so diagonals pair up
    g = n_in // r
    if r < 1 or g > n_out:
        raise ValueError(f"matrix {n_out}x{n_in} is too wide for the block layout at {slots} slots.")
    return r, g


def _block_index(n_out: int, n_in: int, slots: int) -> np.ndarray:
    """idx[s] = which x entry slot s of the block layout holds (period r*n_out)."""
    r, g = _block_geometry(n_out, n_in, slots)
    s = np.arange(slots)
    return (s % g) + g * ((s // n_out) % r)


def block_layout(x: np.ndarray, n_out: int, slots: int) -> np.ndarray:
    """Device side: the complex slot vector to encrypt for ``BlockMatVec`` (X + i*rot(X, 1))."""
    x = np.asarray(x, dtype=np.float64)
    big_x = x[_block_index(n_out, x.shape[-1], slots)]
    return big_x + 1j * np.roll(big_x, -1)


class BlockMatVec:
    """y = W x for square/wide W (m x n) on a ``block_layout`` ciphertext; y comes out tiled (period m).

    Parameters
    ----------
    tools : HETools of the server.
    w : (m, n) float matrix.
    parms_id : level of the input ciphertext; the output is one level lower.
    cross_radix : the r block partial sums are added in stages of ``cross_radix`` (Horner within a stage):
        (radix - 1) * log_radix(r) rotations with log_radix(r) Galois keys (m, m*radix, ...). 2 is fastest
        (4 rotations, 4 keys for r = 16), r uses one key (15 rotations); 4 (default) is 6 rotations, 2 keys.
    late_rescale : rotate at the product scale Δ*q and rescale once at the end (default): key-switching
        noise becomes negligible, at the price of rotating with one more prime (~1.4x per rotation).
    """

    def __init__(
        self,
        tools: HETools,
        w: np.ndarray,
        parms_id: list[int],
        cross_radix: int = 4,
        late_rescale: bool = True,
    ):
        if cross_radix < 2 or cross_radix & (cross_radix - 1):
            raise ValueError(f"cross_radix must be a power of two >= 2, got {cross_radix}.")
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 2:
            raise ValueError(f"w must be a matrix, got shape {w.shape}.")
        self.tools = tools
        self.n_out, self.n_in = w.shape
        self.slots = tools.slots
        self.r, self.g = _block_geometry(self.n_out, self.n_in, self.slots)
        self.cross_radix = min(cross_radix, max(self.r, 2))
        self.late_rescale = late_rescale
        self.parms_id = parms_id
        self.out_parms_id = tools.next_parms_id(parms_id)
        # P_t[j*m + i] = W[i, c(i, j, t)], c = ((i + t) mod g) + g*((j + [i + t >= m]) mod r): the column
        # that rot(X, t) holds at slot j*m + i (see the module docstring); periodic with period r*m.
        s = np.arange(self.slots)
        i, j = s % self.n_out, s // self.n_out
        weight_scale = tools.level_prime(parms_id)  # rescale divides it back out: scale unchanged
        self.plaintexts: list[sealapi.Plaintext] = []
        for u in range(self.g // 2):
            p = []
            for t in (2 * u, 2 * u + 1):
                col = ((i + t) % self.g) + self.g * ((j + (i + t >= self.n_out)) % self.r)
                p.append(w[i, col])
            e = (p[0] - 1j * p[1]) / 2.0  # Re(e * (X_t + i X_t+1)) / ... pairs two diagonals in one product
            e = np.roll(e, 2 * u)  # rotate to the output side: e*rot(X, 2u) = rot(rot(e, -2u)*X, 2u)
            self.plaintexts.append(tools.encode(e, parms_id, weight_scale))

    @property
    def rotation_steps(self) -> list[int]:
        """Galois steps this layer uses (0 = conjugation)."""
        steps = {0}
        if self.g > 2:
            steps.add(2)
        steps.update(step for step, _ in self._cross_stages())
        return sorted(steps)

    def _cross_stages(self) -> list[tuple[int, int]]:
        """(rotation step, radix) of each stage of the block sum."""
        stages, span = [], 1
        while span < self.r:
            radix = min(self.cross_radix, self.r // span)
            stages.append((span * self.n_out, radix))
            span *= radix
        return stages

    def apply(self, ct: sealapi.Ciphertext, tools: HETools | None = None) -> sealapi.Ciphertext:
        """W x for an input at ``parms_id`` and scale Δ; returns y at the next level, scale Δ.

        ``tools`` carries the session's Galois keys (default: ``self.tools``).
        HE cost: g/2 plaintext mults, 1 rescale (g/2 if not ``late_rescale``); g/2 - 1 rotations (step 2)
        + (radix - 1) * log_radix(r) + 1 (conjugation) rotations.
        """
        tools = tools if tools is not None else self.tools
        ev = tools.evaluator
        acc = None
        for pt in reversed(self.plaintexts):  # Horner over u: acc = rot(acc, 2) + Y_u
            y = sealapi.Ciphertext()
            ev.multiply_plain(ct, pt, y)
            if not self.late_rescale:
                ev.rescale_to_next_inplace(y)
            if acc is None:
                acc = y
            else:
                acc = tools.rotate(acc, 2)
                ev.add_inplace(acc, y)
        for step, radix in self._cross_stages():  # per stage: acc <- sum_e rot(acc, e*step), Horner
            part = acc
            for _ in range(radix - 1):
                acc = tools.rotate(acc, step)
                ev.add_inplace(acc, part)
        out = tools.conjugate_add(acc)
        if self.late_rescale:
            ev.rescale_to_next_inplace(out)
        return out


class ReplicatedMatVec:
    """z = W a for tall W (m x n) on a tiled input (period n); z comes out tiled (period m).

    Parameters
    ----------
    tools : HETools of the server.
    w : (m, n) float matrix, m and n powers of two dividing the slot count.
    parms_id : level of the input ciphertext; the output is one level lower.
    baby : baby steps g (power of two dividing n/2).
    late_rescale : run the giant steps at the product scale and rescale once (default; key-switching
        noise negligible) instead of rescaling each giant term and rotating at the cheaper output level.
    """

    def __init__(
        self, tools: HETools, w: np.ndarray, parms_id: list[int], baby: int = 8, late_rescale: bool = True
    ):
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 2:
            raise ValueError(f"w must be a matrix, got shape {w.shape}.")
        m, n = w.shape
        slots = tools.slots
        for name, value in (("rows", m), ("columns", n)):
            if value < 1 or value & (value - 1) or value > slots:
                raise ValueError(f"W's {name} ({value}) must be a power of two <= {slots}.")
        if n < 2 or baby < 1 or baby & (baby - 1) or (n // 2) % baby:
            raise ValueError(f"baby steps ({baby}) must be a power of two dividing n/2 = {n // 2}.")
        self.tools = tools
        self.n_out, self.n_in = m, n
        self.baby, self.giant = baby, (n // 2) // baby
        self.late_rescale = late_rescale
        self.parms_id = parms_id
        self.out_parms_id = tools.next_parms_id(parms_id)
        s = np.arange(slots)
        sign = 1.0 - 2.0 * (s % 2)  # sigma_s = (-1)^s, see ``_i`` below
        weight_scale = tools.level_prime(parms_id)
        self.plaintexts: list[list[sealapi.Plaintext]] = []  # [k][b]
        for k in range(self.giant):
            row = []
            for b in range(baby):
                u = k * baby + b
                d0 = w[s % m, (s + 2 * u) % n]
                d1 = w[s % m, (s + 2 * u + 1) % n]
                e = np.roll((d0 - 1j * sign * d1) / 2.0, 2 * baby * k)  # rot(E_u, -2gk)
                row.append(tools.encode(e, parms_id, weight_scale))
            self.plaintexts.append(row)
        # SEAL orders slots by powers of 3, so the monomial X^(N/2) holds i*(-1)^s in slot s (a constant i
        # is not a monomial). Multiplying by it is exact at scale 1 and uses no level; E_u undoes the sign.
        self._i = tools.encode(1j * sign, parms_id, 1.0)

    @property
    def rotation_steps(self) -> list[int]:
        """Galois steps this layer uses (0 = conjugation)."""
        steps = {0, 1}
        if self.baby > 1:
            steps.add(2)
        if self.giant > 1:
            steps.add(2 * self.baby)
        return sorted(steps)

    def apply(self, ct: sealapi.Ciphertext, tools: HETools | None = None) -> sealapi.Ciphertext:
        """W a for a tiled real input at ``parms_id`` and scale s; returns z one level down, scale s.

        ``tools`` carries the session's Galois keys (default: ``self.tools``).
        HE cost: n/2 + 1 plaintext mults, 1 rescale (n/(2g) if not ``late_rescale``); 1 + (g - 1) baby
        rotations, n/(2g) - 1 giant rotations and 1 conjugation.
        """
        tools = tools if tools is not None else self.tools
        ev = tools.evaluator
        c = sealapi.Ciphertext()
        ev.multiply_plain(tools.rotate(ct, 1), self._i, c)  # i*rot(a, 1)
        ev.add_inplace(c, ct)  # C = a + i*rot(a, 1)
        babies = [c]
        for _ in range(1, self.baby):
            babies.append(tools.rotate(babies[-1], 2))  # rot(C, 2b)
        acc = None
        for row in reversed(self.plaintexts):  # Horner over k: acc = rot(acc, 2g) + I_k
            inner = sealapi.Ciphertext()
            ev.multiply_plain(babies[0], row[0], inner)
            tmp = sealapi.Ciphertext()
            for cb, pt in zip(babies[1:], row[1:], strict=True):
                ev.multiply_plain(cb, pt, tmp)
                ev.add_inplace(inner, tmp)
            if not self.late_rescale:
                ev.rescale_to_next_inplace(inner)
            if acc is None:
                acc = inner
            else:
                acc = tools.rotate(acc, 2 * self.baby)
                ev.add_inplace(acc, inner)
        out = tools.conjugate_add(acc)
        if self.late_rescale:
            ev.rescale_to_next_inplace(out)
        return out
