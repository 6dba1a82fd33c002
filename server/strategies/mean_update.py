"""How the mean update of a round is formed: in the clear (``PlainMean``) or under CKKS (``HEMean``).

A server optimizer (``server.strategies.optimizers``) never sees individual updates through this seam:
it asks a ``MeanUpdate`` for ``Delta_t = sum_i p_i Delta_i`` over the replies that are usable, and gets
the mean (or ``None``), the replies it used and a reason for every reply it dropped. ``PlainMean`` reads
float arrays (the aggregator sees every update); ``HEMean`` (``server.strategies.he_mean``) sums
ciphertexts and lets the key authority decrypt only the sum.

Besides the model keys, an update carries side keys (``federation.wire``): ``CLIP_BIT_KEY`` (the
adaptive-clipping bit of Andrew et al. 2021) and the device's own statistics (``stat/...``), averaged
with the rest; ``DeltaAggregation`` strips them before the optimizer steps. A reply holds nothing else:
with ``weighting="examples"`` the weight n_i is read from the update's own ``stat/num-examples`` slot
(plain), or never seen at all (HE: the device pre-multiplies its ciphertext by it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message

from federation.wire import CLIP_BIT_KEY, STAT_PREFIX, decode_stats, is_side_key

__all__ = ["CLIP_BIT_KEY", "PLAIN_STYPE", "RoundMean", "MeanUpdate", "PlainMean", "arrays_to_numpy"]

PLAIN_STYPE = "numpy.ndarray"  # Array.stype of a plain float32 update (the "plain" codec)


def arrays_to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """ArrayRecord of plain numpy arrays -> named numpy arrays."""
    return {k: a.numpy() for k, a in record.items()}


@dataclass
class RoundMean:
    """What a ``MeanUpdate`` returns for one round."""

    mean: dict[str, np.ndarray] | None  # Delta_t by key (side keys included when devices sent them)
    used: list[Message] = field(default_factory=list)  # replies inside the mean
    failures: list[str] = field(default_factory=list)  # "node N: reason" for each dropped reply


class MeanUpdate(Protocol):
    """Forms the round's mean update from device replies."""

    name: str

    def configure(self, config: ConfigRecord) -> None:
        """Add what devices need to encode their update (codec name, public context, ...)."""

    def mean(self, server_round: int, replies: list[Message], w_t: dict[str, np.ndarray]) -> RoundMean:
        """Delta_t over the usable ``replies`` (checked against the keys and shapes of ``w_t``)."""


def check_keys(update: dict[str, tuple[int, ...]], w_t: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless every key is a model key of the same shape (or a side key)."""
    for key, shape in update.items():
        if is_side_key(key):
            continue
        if key not in w_t or tuple(shape) != tuple(w_t[key].shape):
            raise ValueError(f"update key {key!r} {tuple(shape)} does not match the global weights")


class PlainMean:
    """Delta_t = sum_i p_i Delta_i over float32 replies, p_i = 1/|A_t| or n_i / sum_j n_j.

    Everything is in the clear: the aggregator sees each update and each device's statistics. For
    non-private baselines and benchmarks; a deployment uses ``HEMean``.
    """

    name = "plain"

    def __init__(self, *, weighting: str = "uniform") -> None:
        if weighting not in ("uniform", "examples"):
            raise ValueError(f"weighting must be 'uniform' or 'examples', got {weighting!r}")
        self.weighting = weighting

    def configure(self, config: ConfigRecord) -> None:
        config["codec"] = self.name

    def _decode(self, msg: Message, w_t: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        record = msg.content.array_records.get("arrays")
        if record is None:
            raise ValueError("no ArrayRecord 'arrays' in reply")
        if any(a.stype != PLAIN_STYPE for a in record.values()):
            raise ValueError("update is not plain float arrays (encrypted updates need aggregation='he')")
        delta = arrays_to_numpy(record)
        check_keys({k: v.shape for k, v in delta.items()}, w_t)
        stats = decode_stats({k: v for k, v in delta.items() if k.startswith(STAT_PREFIX)})
        return delta, float(stats.get("num-examples", 1.0))

    def mean(self, server_round: int, replies: list[Message], w_t: dict[str, np.ndarray]) -> RoundMean:
        updates, used, failures = [], [], []
        for msg in replies:
            try:
                updates.append(self._decode(msg, w_t))
                used.append(msg)
            except ValueError as err:
                failures.append(f"node {msg.metadata.src_node_id}: malformed update: {err}")
        if not updates:
            return RoundMean(None, [], failures)
        if self.weighting == "examples":
            total = sum(n for _, n in updates)
            p = [n / total for _, n in updates]
        else:
            p = [1.0 / len(updates)] * len(updates)
        mean = {
            k: sum(p_i * d[k].astype(np.float64) for (d, _), p_i in zip(updates, p, strict=True))
            for k in updates[0][0]
        }
        return RoundMean(mean, used, failures)
