"""FedAvg over model *deltas* with a server optimizer, in the clear (no encryption).

Federated Averaging (McMahan et al. 2017, arXiv:1602.05629) in the "server optimizer" form of
Reddi et al. 2021 ("Adaptive Federated Optimization", arXiv:2003.00295) with SGD (+ momentum) on
the server, which is also the aggregation of DP-FedAvg (McMahan et al. 2018, arXiv:1710.06963).
Devices send ``Delta_i = w_i - w_t`` (already clipped to ``||Delta_i|| <= C`` and, with distributed
DP, already carrying their noise share ``xi_i ~ N(0, sigma^2 C^2 / m I)``); this strategy only
averages what arrives and steps the server optimizer. Nothing here is encrypted: the aggregator
sees every device's update. The homomorphic variant replaces ``_sum_updates`` only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

__all__ = ["PlainFedAvg", "arrays_to_numpy", "numpy_to_arrays"]

PLAIN_STYPE = "numpy.ndarray"  # Array.stype of a plain float32 update (the "plain" codec)


def numpy_to_arrays(weights: dict[str, np.ndarray]) -> ArrayRecord:
    """Named numpy arrays -> ArrayRecord (order kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in weights.items()})


def arrays_to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """ArrayRecord of plain numpy arrays -> named numpy arrays."""
    return {k: a.numpy() for k, a in record.items()}


class PlainFedAvg(FedAvg):
    """Average the deltas of whichever sampled devices answered, then step a server optimizer.

    Update rule for round t, with S_t the m sampled devices and A_t ⊆ S_t those that answered::

        p_i       = 1 / |A_t|                     (weighting="uniform")
                  = n_i / sum_{j in A_t} n_j      (weighting="examples")
        Delta_t   = sum_{i in A_t} p_i * Delta_i          (Delta_i = clip_C(w_i - w_t) [+ xi_i])
        v_t       = beta * v_{t-1} + Delta_t              (v_0 = 0; beta = server_momentum)
        w_{t+1}   = w_t + eta_s * v_t                     (eta_s = server_lr)

    Keys of ``w_t`` that no update carries (e.g. the fixed activation ``beta``) pass unchanged.
    If no device answers, ``w_{t+1} = w_t`` and the round is recorded with zero participants.
    Per-device failures (error replies, malformed updates, devices that never replied before the
    round timeout) are logged and counted as dropouts, never raised.

    Parameters
    ----------
    devices_per_round : int
        m, devices sampled per round (uniformly without replacement, seeded).
    server_lr : float (default: 1.0)
        eta_s. With 1.0 and no momentum this is plain FedAvg on deltas.
    server_momentum : float (default: 0.0)
        beta in [0, 1).
    weighting : str (default: "uniform")
        "uniform" or "examples". Uniform keeps every user's influence <= C / |A_t|, which the
        user-level DP analysis assumes; "examples" weights by n_i and breaks that bound.
    min_available_nodes : int (default: 2)
        Wait until this many devices are connected before sampling.
    seed : int (default: 0)
        Seed of the device sampler.
    """

    def __init__(
        self,
        *,
        devices_per_round: int,
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        weighting: str = "uniform",
        min_available_nodes: int = 2,
        seed: int = 0,
    ) -> None:
        if devices_per_round < 1:
            raise ValueError(f"devices_per_round must be >= 1, got {devices_per_round}")
        if server_lr <= 0:
            raise ValueError(f"The server learning rate should be positive, got {server_lr}.")
        if not 0.0 <= server_momentum < 1.0:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum}")
        if weighting not in ("uniform", "examples"):
            raise ValueError(f"weighting must be 'uniform' or 'examples', got {weighting!r}")
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=0.0,  # evaluation is server-side, on held-out users
            min_train_nodes=devices_per_round,
            min_available_nodes=max(min_available_nodes, devices_per_round),
        )
        if weighting == "examples":
            log(
                WARNING,
                "weighting='examples': a user's influence is no longer bounded by C / m; "
                "user-level DP accounting assumes weighting='uniform'.",
            )
        self.devices_per_round = devices_per_round
        self.server_lr = server_lr
        self.server_momentum = server_momentum
        self.weighting = weighting
        self._rng = random.Random(seed)
        self.device_ids: dict[int, int] = {}  # node id -> device (partition) id, from a roll call
        self.round_offset = 0  # rounds done before a resume: Flower's round r is the run's round offset + r
        self._w_t: dict[str, np.ndarray] | None = None  # current global weights, set by configure_train
        self._v_t: dict[str, np.ndarray] = {}  # server momentum buffer
        self._sent: dict[int, list[int]] = {}  # round -> node ids sent a train message
        self._started: dict[int, float] = {}
        self.rounds: dict[int, dict] = {}  # round -> participants, dropouts, failures, metrics

    def summary(self) -> None:
        """Log the configuration."""
        log(INFO, "\t├── devices per round (m): %d", self.devices_per_round)
        log(INFO, "\t├── server optimizer: SGD, eta_s=%s, momentum=%s", self.server_lr, self.server_momentum)
        log(INFO, "\t└── weighting: %s", self.weighting)

    # ------------------------------------------------------------------ configure
    def _sample_nodes(self, grid: Grid) -> list[int]:
        """Wait for enough devices, then sample m of them (seeded, without replacement).

        Nodes are ordered by their device id when ``device_ids`` knows it (see ``server_app.roll_call``),
        so the same seed samples the same devices in every run although node ids are random; unknown
        nodes follow in node-id order.
        """
        while len(node_ids := list(grid.get_node_ids())) < self.min_available_nodes:
            log(INFO, "Waiting for devices: %d connected, %d needed", len(node_ids), self.min_available_nodes)
            time.sleep(1)
        node_ids.sort(key=self._device_rank)
        return self._rng.sample(node_ids, self.devices_per_round)

    def resume_after(self, rounds_done: int, devices: int) -> None:
        """Continue a run that finished ``rounds_done`` rounds: number rounds after them, and advance the
        seeded sampler past their draws so round t samples the devices an uninterrupted run would."""
        self.round_offset = rounds_done
        for _ in range(rounds_done):
            self._rng.sample(range(devices), self.devices_per_round)

    def _device_rank(self, node_id: int) -> tuple[int, int, int]:
        """Sort key: nodes by device id when the roll call named it, then the others by node id."""
        device = self.device_ids.get(node_id)
        return (0, device, node_id) if device is not None else (1, 0, node_id)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember w_t, sample m devices and send each of them w_t and the round config."""
        self._w_t = arrays_to_numpy(arrays)
        node_ids = self._sample_nodes(grid)
        self._sent[server_round] = node_ids
        self._started[server_round] = time.perf_counter()
        config["server-round"] = self.round_offset + server_round  # seeds the devices' DP noise
        log(
            INFO,
            "configure_train: sampled %d devices (out of %d)",
            len(node_ids),
            len(list(grid.get_node_ids())),
        )
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, MessageType.TRAIN)

    # ------------------------------------------------------------------ aggregate
    def _decode(self, msg: Message) -> tuple[dict[str, np.ndarray], float]:
        """(Delta_i, n_i) of one reply; raises ValueError if it is not a plain update."""
        record = msg.content.array_records.get(self.arrayrecord_key)
        if record is None:
            raise ValueError(f"no ArrayRecord {self.arrayrecord_key!r} in reply")
        if any(a.stype != PLAIN_STYPE for a in record.values()):
            raise ValueError("update is not plain float arrays (encrypted updates need aggregation='he')")
        metrics = next(iter(msg.content.metric_records.values()), MetricRecord())
        return arrays_to_numpy(record), float(metrics.get(self.weighted_by_key, 1.0))

    def _sum_updates(
        self, replies: list[Message]
    ) -> tuple[dict[str, np.ndarray] | None, list[Message], list[str]]:
        """sum_i p_i Delta_i over usable replies -> (mean delta, used replies, failure reasons)."""
        updates, used, failures = [], [], []
        for msg in replies:
            try:
                delta, n_i = self._decode(msg)
                if self._w_t is not None:
                    for key, value in delta.items():
                        if key not in self._w_t or value.shape != self._w_t[key].shape:
                            raise ValueError(f"update key {key!r} does not match the global weights")
                updates.append((delta, n_i))
                used.append(msg)
            except ValueError as err:
                failures.append(f"node {msg.metadata.src_node_id}: malformed update: {err}")
        if not updates:
            return None, used, failures
        if self.weighting == "examples":
            total = sum(n for _, n in updates)
            weights = [n / total for _, n in updates]
        else:
            weights = [1.0 / len(updates)] * len(updates)
        keys = list(updates[0][0])
        mean = {
            k: sum(p * d[k].astype(np.float64) for (d, _), p in zip(updates, weights, strict=True))
            for k in keys
        }
        return mean, used, failures

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """w_{t+1} = w_t + eta_s * v_t over the deltas that arrived; counts dropouts."""
        replies = sorted(replies, key=lambda m: self._device_rank(m.metadata.src_node_id))  # arrival order
        valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
        failures = [f"node {m.metadata.src_node_id}: {m.error.reason}" for m in errors]
        mean_delta, used, bad = self._sum_updates(valid)
        failures += bad
        sent = self._sent.get(server_round, [])
        answered = {m.metadata.src_node_id for m in replies}
        silent = [n for n in sent if n not in answered]
        failures += [f"node {n}: no reply before the round timeout" for n in silent]
        stats = {
            "sampled": len(sent),
            "devices": sorted(self.device_ids.get(n, -1) for n in sent),  # -1: a node without a device id
            "participants": len(used),
            "dropouts": len(sent) - len(used) if sent else len(replies) - len(used),
            "failures": failures,
            "seconds": time.perf_counter() - self._started.get(server_round, time.perf_counter()),
        }
        for reason in failures:
            log(WARNING, "round %d dropout: %s", server_round, reason)
        metrics = self._train_metrics(used)
        stats.update(metrics)
        self.rounds[server_round] = stats
        out = MetricRecord({k: v for k, v in stats.items() if isinstance(v, (int, float))})
        if mean_delta is None or self._w_t is None:
            log(
                WARNING,
                "round %d: no usable update (%d dropouts); the global model is unchanged",
                server_round,
                stats["dropouts"],
            )
            return None, out
        w_next = {}
        for key, w in self._w_t.items():
            if key in mean_delta:
                v = self.server_momentum * self._v_t.get(key, 0.0) + mean_delta[key]
                self._v_t[key] = v
                w_next[key] = (w.astype(np.float64) + self.server_lr * v).astype(w.dtype)
            else:
                w_next[key] = w
        return numpy_to_arrays(w_next), out

    def _train_metrics(self, used: list[Message]) -> dict[str, float]:
        """Summaries of the devices' own metrics (means; example epsilon as a max)."""
        rows = [next(iter(m.content.metric_records.values()), MetricRecord()) for m in used]
        out: dict[str, float] = {}
        for key in ("train-loss", "delta-norm", "clipped"):
            values = [float(r[key]) for r in rows if key in r]
            if values:
                out[key] = float(np.nanmean(values)) if not all(np.isnan(values)) else float("nan")
        eps = [float(r["example-epsilon"]) for r in rows if "example-epsilon" in r]
        if eps:
            out["max-example-epsilon"] = max(eps)
        return out
