"""The server-side half of the NPLM on CKKS ciphertexts: ``EncryptedNPLM``.

It reproduces ``models.nplm.server_logits`` exactly (same arithmetic, on ciphertexts):

    mode "x" (NPLM only, depth 3):  h = W1 x + b1      BlockMatVec         1 level, 14 rotations, 8 pt-mults
    mode "h" (default, depth 2):  the device sends h, computed by the public encoder (any model kind;
                                  for the NPLM h = W1 x + b1); the server needs the head only
                                  a = h * (h + beta)  1 ct x ct mult + relinearization, 1 level
                                  z = W2 a + b2 + u   ReplicatedMatVec    1 level, 24 rotations, 129 pt-mults

Slot layouts (S = N/2 = 4096 slots): the x-mode query is ``block_layout(x)`` (complex, see ``ckks.matvec``),
h and a are tiled with period H, z is tiled with period V (one copy when V = S; a vocabulary that is not a
power of two, as a small corpus gives, runs W2 and b2 padded with zero rows to the next one, and the
device reads the first V slots). Every plaintext is
encoded once per model version, at the level and scale it is used at; weights are encoded at the scale
of the prime the following rescale removes, so the ciphertext scale after each layer is known exactly:
Δ after W1, Δ²/q_2 after the activation and after W2 (``output_scale``; the device encrypts its
personal bias u at that scale and at the last level, ``output_parms_id``).

Tail context (mode "h"): every rotation comes after the activation's rescale has removed the last data
prime, so the activation is moved (``reparent_ciphertext``, ~1 ms) into ``tail_context``, the chain
without that prime, and W2 runs there. The session's Galois keys are made for the tail (one component
fewer, each mod one prime fewer): 1.8 MB of evaluation keys instead of 2.9 MB. The logits and the
personal bias live in the tail context too; the relinearization key stays in the full context
(relinearizing after the rescale would multiply its rounding error by s^2: measured 1e-3 vs 8e-6).

Parameters (``INFERENCE`` / ``INFERENCE_H``), N = 8192 because V = 4096 logits must fit one ciphertext:

- special prime 60 bits: key-switching noise scales with q_i / P, so the largest special prime keeps
  rotations at the rounding floor (~2^13 in a slot); a 38-bit one measured ~30x more rotation noise.
- Δ = 2^30 and rescale primes of 30 bits: every rotation/rescale adds ~2^13 (max over slots) in slot units,
  ~1e-5 at Δ = 2^30; measured logit error ~1e-5 on a realistically scaled model (see bench_inference_micro).
- q_0 = 40 bits: the output scale is ~Δ, so |z| < 2^8 fits with room for noise.
- total 190 bits (x mode) / 160 bits (h mode) <= 218, the 128-bit HE-standard limit for N = 8192.
"""

from __future__ import annotations

import numpy as np
import tenseal.sealapi as sealapi

from ckks.keys import make_seal_context, make_tail_context
from ckks.matvec import BlockMatVec, HETools, ReplicatedMatVec, block_layout, tile
from ckks.params import PRESETS, HEParams, check_security
from ckks.serialize import reparent_ciphertext
from ckks.session_keys import SessionEvalKeys

__all__ = [
    "INFERENCE",
    "INFERENCE_H",
    "EncryptedNPLM",
    "circuit_weights",
    "query_slots",
    "output_scale",
]

#: Depth-3 preset: the device sends encrypted x (mode "x").
INFERENCE = HEParams(
    name="inference-v1", poly_modulus_degree=8192, coeff_bit_sizes=(40, 30, 30, 30, 60), scale_bits=30
)
#: Depth-2 preset: the device computes h = W1 x + b1 in plaintext and sends encrypted h (mode "h").
INFERENCE_H = HEParams(
    name="inference-h-v1", poly_modulus_degree=8192, coeff_bit_sizes=(40, 30, 30, 60), scale_bits=30
)
for _preset in (INFERENCE, INFERENCE_H):
    check_security(_preset.poly_modulus_degree, list(_preset.coeff_bit_sizes))
    PRESETS.setdefault(_preset.name, _preset)

_MODES = {"x": 4, "h": 3}  # mode -> data primes needed (levels + the last one)
# Mode "h" needs the head only (``models.head.HEAD_KEYS``): it serves any model kind's release.
# Mode "x" also runs the NPLM's W1 under HE, so it needs an NPLM release.
_NEEDS = {"x": ("w1", "b1", "w2", "b2", "beta"), "h": ("w2", "b2", "beta")}


def circuit_weights(weights: dict[str, np.ndarray], mode: str) -> dict[str, np.ndarray]:
    """Only the arrays the circuit of ``mode`` runs (mode "h": the head ``w2``, ``b2``, ``beta``).

    What the server hands its HE workers: never the device-side encoder it does not evaluate.
    ``ValueError`` naming the missing arrays, e.g. mode "x" on a release that is not an NPLM.
    """
    if mode not in _NEEDS:
        raise ValueError(f"mode must be 'x' or 'h', got {mode!r}.")
    missing = [key for key in _NEEDS[mode] if key not in weights]
    if missing:
        hint = " (mode 'x' runs the NPLM's W1 under HE: serve an NPLM release or use mode 'h')"
        raise ValueError(
            f"mode {mode!r} needs the arrays {', '.join(_NEEDS[mode])}; the weights lack "
            f"{', '.join(missing)}{hint if mode == 'x' else ''}"
        )
    return {key: weights[key] for key in _NEEDS[mode]}


def _check_mode(params: HEParams, mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(
            f"mode must be 'x' (encrypted context) or 'h' (encrypted hidden layer), got {mode!r}."
        )
    if len(params.data_prime_bits) != _MODES[mode]:
        raise ValueError(
            f"mode {mode!r} needs exactly {_MODES[mode]} data primes (depth {_MODES[mode] - 1}), "
            f"preset {params.name} has {len(params.data_prime_bits)}."
        )


def _padded_head(w2: np.ndarray, b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W2 (V, H) and b2 with zero rows up to the next power of two of V (the matvec tiles z by its rows)."""
    w2 = np.asarray(w2, dtype=np.float64)
    rows = 1 << max(0, (w2.shape[0] - 1).bit_length())
    pad = rows - w2.shape[0]
    return np.pad(w2, ((0, pad), (0, 0))), np.pad(np.asarray(b2, dtype=np.float64), (0, pad))


def output_scale(context: sealapi.SEALContext, params: HEParams) -> float:
    """CKKS scale of the returned logits: Δ² / q_2 (the prime the activation's rescale removes)."""
    primes = [m.value() for m in context.first_context_data().parms().coeff_modulus()]
    return params.scale**2 / float(primes[2])


def query_slots(features: np.ndarray, mode: str, hidden: int, slots: int) -> np.ndarray:
    """Device side: the slot vector to encrypt for one query (x in block layout, or h tiled)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 1:
        raise ValueError(f"features must be one vector, got shape {features.shape}.")
    if mode == "x":
        return block_layout(features, hidden, slots)
    if mode == "h":
        return tile(features, slots)
    raise ValueError(f"mode must be 'x' or 'h', got {mode!r}.")


class EncryptedNPLM:
    """The server-side NPLM (W1, activation, W2, biases) pre-encoded for one model version.

    Parameters
    ----------
    weights : exported arrays: the head (w2 (V, H), b2, beta) for mode "h", any model kind;
        mode "x" also needs the NPLM's w1 (H, k*d) and b1.
    params : HE preset; ``INFERENCE`` for mode "x", ``INFERENCE_H`` for mode "h" (default: by mode).
    mode : "x" (device sends encrypted x, depth 3) or "h" (device sends encrypted h, depth 2).
    cross_radix : W1's block sum in stages of this radix: 4 (default) = 6 rotations with 2 Galois keys,
        2 = 4 rotations with 4 keys (~1 MB more eval keys), 16 = 15 rotations with 1 key.
    baby : W2 baby steps (8: 7 baby + 15 giant rotations).
    late_rescale : rotate before rescaling (~10x smaller error, ~15% slower); see ``ckks.matvec``.
    """

    def __init__(
        self,
        weights: dict[str, np.ndarray],
        params: HEParams | None = None,
        mode: str = "x",
        cross_radix: int = 4,
        baby: int = 8,
        late_rescale: bool = True,
    ):
        params = params if params is not None else (INFERENCE if mode == "x" else INFERENCE_H)
        _check_mode(params, mode)
        for key in _NEEDS[mode]:
            if key not in weights:
                raise KeyError(f"weights lack {key!r} (mode {mode!r} needs {', '.join(_NEEDS[mode])})")
        w2, b2 = _padded_head(weights["w2"], weights["b2"])
        self.params, self.mode = params, mode
        self.vocab_size, self.hidden = np.shape(weights["w2"])
        self.input_dim = self.hidden
        if mode == "x":
            w1 = np.asarray(weights["w1"], dtype=np.float64)
            if w1.shape[0] != self.hidden:
                raise ValueError(f"w1 is {w1.shape}, expected ({self.hidden}, k*d) to match w2 {w2.shape}.")
            self.input_dim = w1.shape[1]
        self.context = make_seal_context(params)
        self.tools = HETools.create(self.context)
        slots = self.tools.slots
        if self.vocab_size > slots:
            raise ValueError(f"vocab_size {self.vocab_size} exceeds the {slots} slots of one ciphertext.")
        ev_level = self.context.first_parms_id()
        self.query_parms_id = ev_level
        if mode == "x":
            self.layer1: BlockMatVec | None = BlockMatVec(
                self.tools, w1, ev_level, cross_radix=cross_radix, late_rescale=late_rescale
            )
            ev_level = self.layer1.out_parms_id
            self._b1 = self.tools.encode(tile(weights["b1"], slots), ev_level, params.scale)
        else:
            self.layer1 = None
        self.hidden_parms_id = ev_level
        self._beta = self.tools.encode(np.full(slots, float(weights["beta"])), ev_level, params.scale)
        # Mode "h" rotates only after the activation's rescale, when the last data prime is gone: W2 runs
        # in the tail context without it, where the session's Galois keys are ~half the size.
        self.rotation_level = 1 if mode == "h" else 0
        self.tail_context = make_tail_context(self.context, self.rotation_level)
        self.tail_tools = HETools.create(self.tail_context) if self.rotation_level else self.tools
        act_level = (
            self.tail_context.first_parms_id() if self.rotation_level else self.tools.next_parms_id(ev_level)
        )
        self.layer2 = ReplicatedMatVec(self.tail_tools, w2, act_level, baby=baby, late_rescale=late_rescale)
        self.output_parms_id = self.layer2.out_parms_id
        self.output_scale = output_scale(self.context, params)
        self._b2 = self.tail_tools.encode(tile(b2, slots), self.output_parms_id, self.output_scale)

    @property
    def rotation_steps(self) -> list[int]:
        """The Galois steps the circuit needs (0 = conjugation): the device generates keys for these only."""
        steps = set(self.layer2.rotation_steps)
        if self.layer1 is not None:
            steps.update(self.layer1.rotation_steps)
        return sorted(steps)

    def load_eval_keys(self, data: bytes, require_steps: bool = True) -> SessionEvalKeys:
        """A session's uploaded evaluation keys, validated for this circuit (``SessionFormatError`` if not):
        relinearization key for the full chain, Galois keys for ``rotation_steps`` in ``tail_context``."""
        return SessionEvalKeys.from_bytes(
            data,
            self.params,
            self.context,
            self.rotation_steps if require_steps else None,
            rotation_level=self.rotation_level,
            tail_context=self.tail_context,
        )

    def query_slots(self, features: np.ndarray) -> np.ndarray:
        """Device side helper: x (mode "x") or h = W1 x + b1 (mode "h") -> slot vector to encrypt."""
        expected = self.input_dim if self.mode == "x" else self.hidden
        if np.shape(features) != (expected,):
            raise ValueError(
                f"mode {self.mode!r} expects a ({expected},) feature vector, got {np.shape(features)}."
            )
        return query_slots(features, self.mode, self.hidden, self.tools.slots)

    def evaluate(
        self,
        query_ct: sealapi.Ciphertext,
        personal_bias_ct: sealapi.Ciphertext | None = None,
        *,
        galois_keys: sealapi.GaloisKeys,
        relin_keys: sealapi.RelinKeys,
    ) -> sealapi.Ciphertext:
        """Encrypted logits z (tiled, period V rounded up to a power of two) at ``tail_context``'s last
        level and ``output_scale``.

        HE cost (mode x): 137 plaintext mults, 38 rotations, 1 ct x ct mult + relinearization, 3 levels.
        """
        self._check_input(query_ct, self.query_parms_id, self.params.scale, "query")
        if personal_bias_ct is not None:
            self._check_input(personal_bias_ct, self.output_parms_id, self.output_scale, "personal bias")
        tools = HETools(self.context, self.tools.encoder, self.tools.evaluator, galois_keys, relin_keys)
        tail = self.tail_tools
        tail_tools = HETools(self.tail_context, tail.encoder, tail.evaluator, galois_keys, relin_keys)
        ev = tools.evaluator
        if self.layer1 is not None:
            h = self.layer1.apply(query_ct, tools)  # level 1
            ev.add_plain_inplace(h, self._b1)
        else:
            h = query_ct
        h_beta = sealapi.Ciphertext()
        ev.add_plain(h, self._beta, h_beta)
        a = sealapi.Ciphertext()
        ev.multiply(h, h_beta, a)  # a = h * (h + beta): level 2
        ev.relinearize_inplace(a, relin_keys)
        ev.rescale_to_next_inplace(a)
        if self.rotation_level:
            a = reparent_ciphertext(a, self.tail_context)  # same data, now mod the tail's primes
        z = self.layer2.apply(a, tail_tools)  # level 3
        tail_tools.evaluator.add_plain_inplace(z, self._b2)
        if personal_bias_ct is not None:
            tail_tools.evaluator.add_inplace(z, personal_bias_ct)
        return z

    def _check_input(self, ct: sealapi.Ciphertext, parms_id: list[int], scale: float, what: str) -> None:
        if not isinstance(ct, sealapi.Ciphertext):
            raise TypeError(f"{what} must be a tenseal.sealapi.Ciphertext.")
        if list(ct.parms_id()) != list(parms_id):
            raise ValueError(
                f"{what} ciphertext is at the wrong level for this circuit (mode {self.mode!r})."
            )
        if ct.size() != 2:
            raise ValueError(f"{what} ciphertext must have 2 components, got {ct.size()}.")
        if not np.isclose(ct.scale, scale, rtol=1e-9, atol=0.0):
            raise ValueError(f"{what} ciphertext has scale {ct.scale:.6g}, expected {scale:.6g}.")
