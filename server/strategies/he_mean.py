"""The round's mean update summed under CKKS: the aggregator never holds a key that opens one update.

The sum uses additions only (Cheon, Kim, Kim, Song 2017, "Homomorphic Encryption for Arithmetic of
Approximate Numbers"), so no rescaling or relinearization is ever needed. Round t, with A_t the devices
whose ciphertexts arrived and parsed::

    device i     Delta_i = clip_C(w_i - w_t) + xi_i        clip and noise share applied before encryption
                 w_i^s  = 1                 (weighting="uniform")
                        = n_i / u           (weighting="examples", u = he_weight_unit keeps w_i^s O(1))
                 c_i    = Enc_pk([1, w_i^s, w_i^s * Delta_i])   count slot, weight slot, pre-scaled update
    aggregator   c      = sum_{i in A_t} c_i                    homomorphic additions only (public context)
                 k      = |A_t|                                 (W = k declared too with uniform weights)
    key authr.   [K, W', S] = Dec_sk(c)                         only if k >= min_clients and |K - k| < 0.5
                 Delta_t = S / W'                               (W' checked against W when declared)

A reply is one ciphertext and nothing else: the device's statistics (example count, loss, norm,
clipped bit, example-level epsilon; ``federation.wire``) are more slots of the same vector, so they
too are decrypted only as a (weighted) mean over A_t. With ``weighting="examples"`` the aggregator
never learns n_i: the device pre-multiplies by w_i^s = n_i / u, and only W' (decrypted) divides.

``Delta_t`` then goes to whichever server optimizer the run uses (FedAvg, FedAvgM, FedAdam, FedYogi):
the optimizer runs on the decrypted mean only. The adaptive-clipping bit, when devices send it, is one
more encrypted slot of the same vector, so its mean is decrypted with the update and never alone.

The key authority (``server.key_authority_service``, its own process) is the only holder of sk; this
object holds the public context and the handle. Replies that are errors, plain arrays, malformed payloads
or ciphertexts under other parameters are dropouts with a reason, never a crash. A ciphertext that parses
but was made under another key cannot be told apart before decryption: it spoils the count slot, the
authority refuses the whole aggregate, and the round keeps w_t (logged).
"""

from __future__ import annotations

import hashlib
from logging import WARNING
from typing import Protocol

import numpy as np
from flwr.app import ConfigRecord, Message
from flwr.supercore import log

from ckks.codec import (
    CONFIG_CONTEXT,
    CONFIG_CONTEXT_PATH,
    CONFIG_CONTEXT_SHA,
    CONFIG_WEIGHT_UNIT,
    CONFIG_WEIGHTING,
    HE_STYPE,
    Layout,
    unflatten_update,
    unpack_payload,
)
from ckks.keys import PublicContext, assert_public_only
from ckks.packing import EncryptedUpdate
from ckks.serialize import CODEC_SEAL, CiphertextFormatError
from server.key_authority import AggregateRefused, AggregateResult
from server.strategies.mean_update import RoundMean, check_keys

__all__ = ["HEMean", "KeyAuthorityLike"]


class KeyAuthorityLike(Protocol):
    """What the aggregator may ask of the key authority (``KeyAuthorityService`` or ``KeyAuthority``)."""

    def public_context_bytes(self) -> bytes: ...

    def decrypt_aggregate(
        self,
        encrypted_sum_bytes: bytes,
        declared_contributions: int,
        *,
        server_round: int | None = None,
        declared_total_weight: float | None = None,
    ) -> AggregateResult: ...


class HEMean:
    """Sum CKKS ciphertexts of the updates; the key authority decrypts only the sum and divides.

    Parameters
    ----------
    key_authority : KeyAuthorityLike
        Handle to the key authority. Only its public context is kept here (checked: no secret key).
    devices_per_round : int
        m; with uniform weights count + weight (2m) must fit the preset's reserved slots.
    weighting : str (default: "uniform")
        "uniform" or "examples" (see the module docstring).
    public_context_path : str | None (default: None)
        Send devices this path (plus the sha256) instead of the context bytes (shared filesystem only).
    he_weight_unit : float (default: 100.0)
        u, examples per unit of weight with ``weighting="examples"``; keeps the sum in CKKS headroom.
    """

    name = "he"

    def __init__(
        self,
        *,
        key_authority: KeyAuthorityLike,
        devices_per_round: int,
        weighting: str = "uniform",
        public_context_path: str | None = None,
        he_weight_unit: float = 100.0,
    ) -> None:
        if he_weight_unit <= 0:
            raise ValueError(f"he_weight_unit must be positive, got {he_weight_unit}.")
        if weighting not in ("uniform", "examples"):
            raise ValueError(f"weighting must be 'uniform' or 'examples', got {weighting!r}")
        blob = key_authority.public_context_bytes()
        assert_public_only(blob)  # the aggregator must never be handed a secret key
        self.key_authority = key_authority
        self.public_context_bytes = blob
        self.public_context_sha256 = hashlib.sha256(blob).hexdigest()
        self.public_context = PublicContext.from_bytes(blob)
        self.public_context_path = public_context_path
        self.he_weight_unit = he_weight_unit
        self.weighting = weighting
        capacity = self.public_context.params.max_count_plus_weight
        if weighting == "uniform" and 2 * devices_per_round > capacity:
            raise ValueError(
                f"devices_per_round={devices_per_round} with uniform weights puts count + weight "
                f"{2 * devices_per_round} in the reserved slots, above the {capacity:g} CKKS preset "
                f"{self.public_context.params.name!r} provably holds; sample at most {int(capacity // 2)} "
                "devices a round."
            )

    def configure(self, config: ConfigRecord) -> None:
        """What a device needs to encrypt: the codec, the weighting and the public context."""
        config["codec"] = self.name
        config[CONFIG_WEIGHTING] = self.weighting
        config[CONFIG_WEIGHT_UNIT] = self.he_weight_unit
        config[CONFIG_CONTEXT_SHA] = self.public_context_sha256
        if self.public_context_path is not None:
            config[CONFIG_CONTEXT_PATH] = self.public_context_path
        else:
            config[CONFIG_CONTEXT] = self.public_context_bytes

    def _parse(self, msg: Message, w_t: dict[str, np.ndarray]) -> tuple[EncryptedUpdate, Layout]:
        """(c_i, layout) of one reply; raises ValueError (incl. CiphertextFormatError) if unusable."""
        record = msg.content.array_records.get("arrays")
        if record is None:
            raise ValueError("no ArrayRecord 'arrays' in reply")
        arrays = list(record.values())
        if len(arrays) != 1 or arrays[0].stype != HE_STYPE:
            raise ValueError(f"expected one {HE_STYPE} array (is the device using codec 'he'?)")
        update, layout = unpack_payload(self.public_context, arrays[0].data)
        check_keys(dict(layout), w_t)
        return update, layout

    def mean(self, server_round: int, replies: list[Message], w_t: dict[str, np.ndarray]) -> RoundMean:
        """c = sum_i c_i over usable replies (streaming); the key authority returns Delta_t = S / W'."""
        total: EncryptedUpdate | None = None
        layout: Layout | None = None
        used: list[Message] = []
        failures: list[str] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            try:
                update, msg_layout = self._parse(msg, w_t)
                if layout is not None and msg_layout != layout:
                    raise ValueError(f"layout {msg_layout} differs from the round's {layout}")
            except CiphertextFormatError as err:
                failures.append(f"node {node}: malformed ciphertext: {err}")
                continue
            except ValueError as err:
                failures.append(f"node {node}: malformed update: {err}")
                continue
            layout = msg_layout
            total = update if total is None else total.add_(update)  # O(1) ciphertexts held
            used.append(msg)
        if total is None or layout is None:
            return RoundMean(None, [], failures)
        declared_weight = float(len(used)) if self.weighting == "uniform" else None  # n_i stay encrypted
        try:
            result = self.key_authority.decrypt_aggregate(
                total.to_bytes(CODEC_SEAL),  # SEAL's own save: ~10x faster to read than bit-packed
                len(used),
                server_round=server_round,
                declared_total_weight=declared_weight,
            )
        except AggregateRefused as err:
            log(WARNING, "key authority refused the aggregate of %d updates: %s", len(used), err)
            reason = f"aggregate refused by the key authority: {err}"
            return RoundMean(None, [], failures + [f"node {m.metadata.src_node_id}: {reason}" for m in used])
        except RuntimeError as err:  # KeyAuthorityUnavailable: keep w_t, say why
            log(WARNING, "key authority unavailable: %s", err)
            reason = f"key authority unavailable: {err}"
            return RoundMean(None, [], failures + [f"node {m.metadata.src_node_id}: {reason}" for m in used])
        return RoundMean(unflatten_update(result.mean, layout), used, failures)
