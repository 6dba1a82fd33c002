"""The key authority: holds the federation secret key and decrypts only aggregates.

It creates the CKKS key pair, hands out the public context (devices encrypt with it, the aggregator adds
with it), and decrypts an encrypted sum only when

1. the aggregator declares at least ``min_clients`` contributions, and
2. the decrypted contribution-count slot (each device encrypts 1.0 there, see ``ckks.packing``) agrees
   with the declared count within ``count_tolerance`` (a sum of fewer updates, or an overflowed sum,
   fails this check).

Every request, accepted or refused, is appended to a JSONL audit log. What it cannot prevent: an
aggregator that colludes with ``min_clients - 1`` devices learns the remaining device's update by
subtraction; the threat-model section of the README states this.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ckks.keys import SecretContext
from ckks.packing import DecryptedSum, EncryptedUpdate
from ckks.params import AGGREGATION, HEParams
from ckks.serialize import CiphertextFormatError

log = logging.getLogger(__name__)


class AggregateRefused(Exception):
    """The key authority refused to decrypt an aggregate; the message says why and how to fix it."""


@dataclass(frozen=True)
class AggregateResult:
    """What the key authority returns: the weighted mean and the decoded bookkeeping slots."""

    mean: np.ndarray
    count: float
    total_weight: float


class KeyAuthority:
    """Creates the federation key pair and decrypts aggregates of at least ``min_clients`` updates.

    Parameters
    ----------
    audit_log : path of the JSONL audit log (appended to, created if missing).
    min_clients : smallest number of contributions it decrypts (default: 2; a sum of one is one update).
    params : CKKS parameters for a new key pair (default: ``ckks.params.AGGREGATION``).
    secret : an existing ``SecretContext`` (e.g. from ``load``); a fresh key pair when None.
    count_tolerance : largest |decoded count - declared count| accepted (default: 0.5; noise is ~1e-5).
    """

    def __init__(
        self,
        audit_log: str | Path,
        *,
        min_clients: int = 2,
        params: HEParams = AGGREGATION,
        secret: SecretContext | None = None,
        count_tolerance: float = 0.5,
    ):
        if min_clients < 1:
            raise ValueError(f"min_clients must be at least 1, got {min_clients}.")
        if min_clients == 1:
            log.warning("min_clients=1: the key authority will decrypt single device updates.")
        if not 0 < count_tolerance < 1:
            raise ValueError(f"count_tolerance must be in (0, 1), got {count_tolerance}.")
        if secret is not None and not isinstance(secret, SecretContext):
            raise TypeError("secret must be a ckks.keys.SecretContext.")
        self._secret = secret if secret is not None else SecretContext.generate(params)
        self.min_clients = min_clients
        self.count_tolerance = count_tolerance
        self.audit_log = Path(audit_log)

    @property
    def params(self) -> HEParams:
        """The federation's CKKS parameters."""
        return self._secret.params

    def public_context_bytes(self) -> bytes:
        """The public context (params + public key, no secret key) for devices and the aggregator."""
        return self._secret.public.to_bytes()

    def decrypt_aggregate(
        self,
        encrypted_sum_bytes: bytes,
        declared_contributions: int,
        *,
        server_round: int | None = None,
        declared_total_weight: float | None = None,
    ) -> AggregateResult:
        """Decrypt an encrypted sum into the weighted mean, or raise ``AggregateRefused``.

        The request and verdict are logged whatever happens. ``declared_total_weight``, when given, is
        checked against the decrypted weight slot (relative tolerance 1e-3).
        """
        record: dict[str, object] = {
            "time": time.time(),
            "round": server_round,
            "declared_count": declared_contributions,
            "decoded_count": None,
            "declared_total_weight": declared_total_weight,
            "decoded_total_weight": None,
            "n_elements": None,
            "verdict": "refused",
            "reason": None,
        }
        try:
            if declared_contributions < self.min_clients:
                raise AggregateRefused(
                    f"Declared {declared_contributions} contributions, fewer than min_clients="
                    f"{self.min_clients}; wait for more devices before asking for decryption."
                )
            try:
                update = EncryptedUpdate.from_bytes(self._secret.public, encrypted_sum_bytes)
            except CiphertextFormatError as exc:
                raise AggregateRefused(f"The encrypted sum is malformed: {exc}") from exc
            record["n_elements"] = update.n_elements
            decrypted: DecryptedSum = update.decrypt(self._secret)
            record["decoded_count"] = round(decrypted.count, 4)
            record["decoded_total_weight"] = round(decrypted.total_weight, 6)
            # not finite: a ciphertext made under another key can decode to inf/NaN, which no
            # comparison would catch
            if not np.isfinite(decrypted.count) or abs(decrypted.count - declared_contributions) > (
                self.count_tolerance
            ):
                raise AggregateRefused(
                    f"The count slot decodes to {decrypted.count:.3f} but {declared_contributions} "
                    "contributions were declared; sum exactly the declared updates "
                    "(or the sum overflowed: clip the updates)."
                )
            if declared_total_weight is not None and not np.isclose(
                decrypted.total_weight, declared_total_weight, rtol=1e-3, atol=1e-3
            ):
                raise AggregateRefused(
                    f"The weight slot decodes to {decrypted.total_weight:.6g} but "
                    f"{declared_total_weight:.6g} was declared."
                )
            result = AggregateResult(decrypted.mean(), decrypted.count, decrypted.total_weight)
            record["verdict"] = "accepted"
            return result
        except AggregateRefused as exc:
            record["reason"] = str(exc)
            raise
        finally:
            self._audit(record)

    def _audit(self, record: dict[str, object]) -> None:
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        with self.audit_log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    # -- persistence -------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the secret context to ``path`` (mode 0600) so the authority survives restarts."""
        self._secret.save(path)

    @classmethod
    def load(cls, path: str | Path, audit_log: str | Path, **kwargs: object) -> KeyAuthority:
        """Restore an authority saved with ``save``; ``kwargs`` as for the constructor."""
        return cls(audit_log, secret=SecretContext.load(path), **kwargs)  # type: ignore[arg-type]
