"""FedAvg whose aggregator sums CKKS-encrypted updates and never holds a key that opens one.

The same DP-FedAvg as ``plain_fedavg`` (McMahan et al. 2017, arXiv:1602.05629; server optimizer as in
Reddi et al. 2021, arXiv:2003.00295; user-level DP as in McMahan et al. 2018, arXiv:1710.06963), with the
sum computed under CKKS (Cheon, Kim, Kim, Song 2017, "Homomorphic Encryption for Arithmetic of
Approximate Numbers") using only additions, so no rescaling or relinearization is ever needed.

Round t, with A_t the devices whose ciphertexts arrived and parsed::

    device i     Delta_i = clip_C(w_i - w_t) + xi_i        xi_i ~ N(0, sigma^2 C^2 / m I); clip and noise
                                                        are applied on the device, before encryption
                 w_i^s  = 1                 (weighting="uniform")
                        = n_i / u           (weighting="examples", u = he_weight_unit keeps w_i^s O(1))
                 c_i    = Enc_pk([1, w_i^s, w_i^s * Delta_i])   count slot, weight slot, pre-scaled update
    aggregator   c      = sum_{i in A_t} c_i                    homomorphic additions only (public context)
                 k      = |A_t|,  W = sum_{i in A_t} w_i^s      declared from the replies' clear metadata
    key authr.   [K, W', S] = Dec_sk(c)                         only if k >= min_clients and |K - k| < 0.5
                 Delta_t = S / W' = sum_i w_i^s Delta_i / sum_i w_i^s     (W' checked against W)
    aggregator   v_t = beta * v_{t-1} + Delta_t,   w_{t+1} = w_t + eta_s * v_t      (as plain FedAvg)

The key authority (``server.key_authority_service``, its own process) is the only holder of sk; the
aggregator holds the public context and the handle. Replies that are errors, plain arrays, malformed
payloads or ciphertexts under other parameters are dropouts with a logged reason, never a crash. A
ciphertext that parses but was made under another key cannot be told apart before decryption: it spoils
the count slot, the authority refuses the whole aggregate, and the round keeps w_t (logged).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
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
from ckks.serialize import CiphertextFormatError
from server.key_authority import AggregateRefused, AggregateResult
from server.strategies.plain_fedavg import PlainFedAvg

__all__ = ["HEFedAvg", "KeyAuthorityLike"]


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


class HEFedAvg(PlainFedAvg):
    """PlainFedAvg with the sum done homomorphically and the division done after key-authority decryption.

    Parameters
    ----------
    key_authority : KeyAuthorityLike
        Handle to the key authority (normally ``KeyAuthorityService``, a separate process). Only its
        public context is kept here; it is checked to hold no secret key.
    public_context_path : str | None (default: None)
        Send devices this path (plus the sha256) instead of the public context bytes; fine when the
        devices share a filesystem (simulation), while the bytes work anywhere.
    he_weight_unit : float (default: 100.0)
        u, examples per unit of weight with ``weighting="examples"`` (w_i^s = n_i / u). The mean does not
        depend on u; it only keeps sum_i w_i^s Delta_i inside the CKKS headroom (see ``ckks.packing``).
    **kwargs
        As for ``PlainFedAvg`` (devices_per_round, server_lr, server_momentum, weighting, ...).
    """

    def __init__(
        self,
        *,
        key_authority: KeyAuthorityLike,
        public_context_path: str | None = None,
        he_weight_unit: float = 100.0,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if he_weight_unit <= 0:
            raise ValueError(f"he_weight_unit must be positive, got {he_weight_unit}.")
        blob = key_authority.public_context_bytes()
        assert_public_only(blob)  # the aggregator must never be handed a secret key
        self.key_authority = key_authority
        self.public_context_bytes = blob
        self.public_context_sha256 = hashlib.sha256(blob).hexdigest()
        self.public_context = PublicContext.from_bytes(blob)
        self.public_context_path = public_context_path
        self.he_weight_unit = he_weight_unit
        capacity = self.public_context.params.max_count_plus_weight
        if self.weighting == "uniform" and 2 * self.devices_per_round > capacity:
            raise ValueError(
                f"devices_per_round={self.devices_per_round} with uniform weights puts count + weight "
                f"{2 * self.devices_per_round} in the reserved slots, above the {capacity:g} CKKS preset "
                f"{self.public_context.params.name!r} provably holds; sample at most {int(capacity // 2)} "
                "devices a round."
            )

    def summary(self) -> None:
        """Log the configuration."""
        super().summary()
        name = self.public_context.params.name
        log(INFO, "\t└── aggregation: CKKS %s, sum under the public key only", name)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """As PlainFedAvg, plus what a device needs to encrypt: the public context and the weighting."""
        config["codec"] = "he"
        config[CONFIG_WEIGHTING] = self.weighting
        config[CONFIG_WEIGHT_UNIT] = self.he_weight_unit
        config[CONFIG_CONTEXT_SHA] = self.public_context_sha256
        if self.public_context_path is not None:
            config[CONFIG_CONTEXT_PATH] = self.public_context_path
        else:
            config[CONFIG_CONTEXT] = self.public_context_bytes
        return super().configure_train(server_round, arrays, config, grid)

    # ------------------------------------------------------------------ aggregate
    def _parse(self, msg: Message) -> tuple[EncryptedUpdate, Layout, float]:
        """(c_i, layout, w_i^s) of one reply; raises ValueError (incl. CiphertextFormatError) if unusable."""
        record = msg.content.array_records.get(self.arrayrecord_key)
        if record is None:
            raise ValueError(f"no ArrayRecord {self.arrayrecord_key!r} in reply")
        arrays = list(record.values())
        if len(arrays) != 1 or arrays[0].stype != HE_STYPE:
            raise ValueError(f"expected one {HE_STYPE} array (is the device using codec 'he'?)")
        update, layout = unpack_payload(self.public_context, arrays[0].data)
        if self._w_t is not None:
            for key, shape in layout:
                if key not in self._w_t or shape != self._w_t[key].shape:
                    raise ValueError(f"update key {key!r} {shape} does not match the global weights")
        if self.weighting == "examples":
            metrics = next(iter(msg.content.metric_records.values()), MetricRecord())
            n_i = float(metrics.get(self.weighted_by_key, 0.0))
            if n_i <= 0:
                raise ValueError("weighting='examples' but the reply declares no examples")
            return update, layout, n_i / self.he_weight_unit
        return update, layout, 1.0

    def _sum_updates(
        self, replies: list[Message]
    ) -> tuple[dict[str, np.ndarray] | None, list[Message], list[str]]:
        """c = sum_i c_i over usable replies; the key authority returns Delta_t = S / W'."""
        total: EncryptedUpdate | None = None
        layout: Layout | None = None
        used: list[Message] = []
        failures: list[str] = []
        declared_weight = 0.0
        for msg in replies:
            node = msg.metadata.src_node_id
            try:
                update, msg_layout, weight = self._parse(msg)
                if layout is not None and msg_layout != layout:
                    raise ValueError(f"layout {msg_layout} differs from the round's {layout}")
            except CiphertextFormatError as err:
                failures.append(f"node {node}: malformed ciphertext: {err}")
                continue
            except ValueError as err:
                failures.append(f"node {node}: malformed update: {err}")
                continue
            layout = msg_layout
            total = update if total is None else total.add_(update)  # streaming: O(1) ciphertexts held
            declared_weight += weight
            used.append(msg)
        if total is None or layout is None:
            return None, [], failures
        server_round = self.round_offset + self._current_round if self._current_round is not None else None
        try:
            result = self.key_authority.decrypt_aggregate(
                total.to_bytes(),
                len(used),
                server_round=server_round,
                declared_total_weight=declared_weight,
            )
        except AggregateRefused as err:
            log(WARNING, "key authority refused the aggregate of %d updates: %s", len(used), err)
            failures += [
                f"node {m.metadata.src_node_id}: aggregate refused by the key authority: {err}" for m in used
            ]
            return None, [], failures
        except RuntimeError as err:  # KeyAuthorityUnavailable: keep w_t, say why
            log(WARNING, "key authority unavailable: %s", err)
            failures += [f"node {m.metadata.src_node_id}: key authority unavailable: {err}" for m in used]
            return None, [], failures
        return unflatten_update(result.mean, layout), used, failures

    _current_round: int | None = None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """As PlainFedAvg (the round number is passed on to the key authority's audit log)."""
        self._current_round = server_round
        try:
            return super().aggregate_train(server_round, replies)
        finally:
            self._current_round = None
