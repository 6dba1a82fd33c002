"""The part every hushtype strategy shares: sample devices, collect deltas, hand the optimizer w_t + Delta_t.

Flower's server optimizers (``FedAvgM``, ``FedAdam``, ``FedYogi``; Reddi et al. 2021, "Adaptive
Federated Optimization", arXiv:2003.00295) all start their ``aggregate_train`` from
``FedAvg.aggregate_train``, the weighted mean of the *models* the clients returned, and form the
pseudo-gradient ``Delta_t = mean - w_t`` from it. Our devices send deltas, possibly encrypted, so this
class sits between those strategies and ``FedAvg`` in the method resolution order
(``class DeltaFedAdam(FedAdam, DeltaAggregation)``) and replaces only that first step::

    S_t       m devices sampled (seeded, by device id; without user-level DP also by size or by passes)
    A_t       the devices whose update was usable
    Delta_t   = MeanUpdate.mean(A_t)          plain mean, or CKKS sum decrypted by the key authority only
    returns   w_t + Delta_t                    the optimizer then steps on Delta_t (momentum, Adam, Yogi)

Messages carry w_t whole, or (``RoundSetup.base_dir``) only the arrays that differ from the run's public
base, which devices read by reference (``federation.public_base``): a head-only device's frozen encoder
is not re-sent m times a round. Round config sent to devices: user-level clip C_t, the distributed-noise
share std z_Delta * C_t / sqrt(m), and, with adaptive clipping, the clip-bit noise share std
sigma_b / sqrt(m) (Andrew et al. 2021; the bit travels inside the same, encrypted, update).
Per-device failures are counted and logged, never raised;
after each round ``on_round(server_round, stats)`` is called (the server's round recorder steps the
accountant there and decides whether the run must abort). ``stats`` holds only what concerns the round
as a whole: who was sampled and answered (participation is visible), the clip, and the devices'
statistics as their mean over A_t (``federation.wire``; decrypted with the update under HE).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from federation.passes import DEVICE_SAMPLING, PassSchedule, draws_per_pass
from federation.public_base import BASE_PATH_KEY, BASE_SHA_KEY, changed_arrays, write_base
from federation.wire import CLIP_BIT_KEY, decode_stats
from server.strategies.adaptive_clipping import QuantileClip
from server.strategies.mean_update import MeanUpdate, arrays_to_numpy

__all__ = ["DeltaAggregation", "RunRounds", "RoundSetup", "numpy_to_arrays", "arrays_to_numpy"]


def numpy_to_arrays(weights: dict[str, np.ndarray]) -> ArrayRecord:
    """Named numpy arrays -> ArrayRecord (order kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in weights.items()})


class RoundSetup:
    """The delta-collecting half of a strategy, configured once (see ``DeltaAggregation.setup_rounds``)."""

    def __init__(
        self,
        *,
        mean_update: MeanUpdate,
        devices_per_round: int,
        clip: QuantileClip | float | None = None,
        update_noise_multiplier: float = 0.0,
        clip_count_stddev: float = 0.0,
        seed: int = 0,
        base_dir: str | Path | None = None,
        device_sampling: str = "uniform",
        pass_chunk: int = 0,
    ) -> None:
        if devices_per_round < 1:
            raise ValueError(f"devices_per_round must be >= 1, got {devices_per_round}")
        if update_noise_multiplier < 0:
            raise ValueError(f"update_noise_multiplier must be >= 0, got {update_noise_multiplier}")
        if device_sampling not in DEVICE_SAMPLING:
            raise ValueError(f"device_sampling must be one of {DEVICE_SAMPLING}, got {device_sampling!r}")
        if device_sampling == "passes" and pass_chunk < 1:
            raise ValueError(f"device_sampling='passes' needs pass_chunk >= 1 window, got {pass_chunk}")
        self.mean_update = mean_update
        self.devices_per_round = devices_per_round
        self.adaptive = isinstance(clip, QuantileClip)
        self.clip: QuantileClip | None = (
            clip if isinstance(clip, QuantileClip) else QuantileClip(float(clip)) if clip else None
        )
        self.update_noise_multiplier = update_noise_multiplier
        self.clip_count_stddev = clip_count_stddev
        self.rng = random.Random(seed)
        self.base_dir = base_dir  # None: every array in every message; else see federation.public_base
        # how m devices are drawn (no user-level DP but "uniform"): "windows" in proportion to their windows,
        # "passes" each device's windows once a pass in chunks of pass_chunk (federation.passes)
        self.device_sampling = device_sampling
        self.pass_chunk = pass_chunk


class RunRounds:
    """Put first in a strategy's bases: the hooks below it see the *run's* round, not Flower's.

    After a resume Flower counts rounds from 1 again; the run's round is ``round_offset + r``, which
    seeds the devices, names the round in the key authority's audit log and drives FedAdam's bias
    correction, so a resumed run steps exactly like an uninterrupted one.
    """

    round_offset: int

    def configure_train(self, server_round, arrays, config, grid):  # noqa: ANN001, ANN201 - as Strategy
        return super().configure_train(self.round_offset + server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):  # noqa: ANN001, ANN201 - as Strategy
        return super().aggregate_train(self.round_offset + server_round, replies)


class DeltaAggregation(FedAvg):
    """FedAvg whose aggregate is ``w_t + Delta_t`` over device *deltas*; base of every hushtype strategy.

    Subclasses call ``setup_rounds(...)`` once after ``__init__``. Keys of ``w_t`` that no update carries
    (e.g. the fixed activation ``beta``, frozen layers) get ``Delta_t = 0``. If no device's update is
    usable, ``aggregate_train`` returns ``None`` and the model stays ``w_t``.
    """

    rounds_setup: RoundSetup

    def setup_rounds(self, setup: RoundSetup) -> None:
        """Attach the delta-collecting configuration (called by the concrete strategies' ``__init__``)."""
        self.rounds_setup = setup
        self.devices_per_round = setup.devices_per_round
        self.device_ids: dict[int, int] = {}  # node id -> device (partition) id, from a roll call
        self.device_windows: dict[int, int] = {}  # node id -> training windows ("windows", "passes" draws)
        self._passes: tuple[list[int], PassSchedule] | None = None  # nodes in device order, their schedule
        self.round_offset = 0  # rounds done before a resume: Flower's round r is the run's offset + r
        self.on_round: Callable[[int, dict], None] | None = None
        self._w_t: dict[str, np.ndarray] | None = None
        self._base: tuple[dict[str, np.ndarray], ConfigRecord] | None = None  # w_0 as written, its config
        self._sent: dict[int, list[int]] = {}
        self._started: dict[int, float] = {}
        self.rounds: dict[int, dict] = {}  # Flower round -> participants, dropouts, failures, metrics

    @property
    def clip(self) -> float | None:
        """C_t, the user-level clip devices apply this round (None: no clipping)."""
        return self.rounds_setup.clip.clip if self.rounds_setup.clip is not None else None

    def summary(self) -> None:
        """Log the configuration."""
        setup = self.rounds_setup
        log(
            INFO,
            "\t├── devices per round (m): %d, aggregation: %s",
            setup.devices_per_round,
            setup.mean_update.name,
        )
        log(INFO, "\t├── clip C_0: %s (adaptive: %s)", self.clip, setup.adaptive)
        super().summary()

    # ------------------------------------------------------------------ state (checkpoints)
    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The server optimizer's and the clip's state as named arrays (checkpointed with the weights)."""
        state: dict[str, np.ndarray] = {}
        for name in ("m_t", "v_t"):  # FedAdam / FedYogi moments
            for key, value in (getattr(self, name, None) or {}).items():
                state[f"{name}/{key}"] = np.asarray(value)
        for i, value in enumerate(getattr(self, "momentum_vector", None) or []):  # FedAvgM
            state[f"momentum_vector/{i}"] = np.asarray(value)
        if self.rounds_setup.clip is not None:
            state["clip"] = np.asarray(self.rounds_setup.clip.clip)
        return state

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what ``optimizer_state`` saved (a resumed run continues as if never stopped)."""
        for name in ("m_t", "v_t"):
            values = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(f"{name}/")}
            if values and hasattr(self, name):
                setattr(self, name, values)
        keys = [k for k in state if k.startswith("momentum_vector/")]
        momentum = [state[k] for k in sorted(keys, key=lambda k: int(k.split("/")[1]))]
        if momentum and hasattr(self, "momentum_vector"):
            self.momentum_vector = momentum
        if "clip" in state and self.rounds_setup.clip is not None:
            self.rounds_setup.clip.clip = float(state["clip"])

    # ------------------------------------------------------------------ configure
    def _device_rank(self, node_id: int) -> tuple[int, int, int]:
        """Sort key: nodes by device id when the roll call named it, then the others by node id."""
        device = self.device_ids.get(node_id)
        return (0, device, node_id) if device is not None else (1, 0, node_id)

    def _sample_nodes(self, grid: Grid) -> list[int]:
        """Wait for enough devices, then sample m of them (seeded, without replacement, by device id;
        ``device_sampling`` "windows": in proportion to their windows, "passes": the pass schedule)."""
        while len(node_ids := list(grid.get_node_ids())) < self.min_available_nodes:
            log(INFO, "Waiting for devices: %d connected, %d needed", len(node_ids), self.min_available_nodes)
            time.sleep(1)
        node_ids.sort(key=self._device_rank)
        if self.rounds_setup.device_sampling == "windows":
            return self._sample_by_size(node_ids)
        if self.rounds_setup.device_sampling == "passes":
            return self._sample_by_passes(node_ids)
        return self.rounds_setup.rng.sample(node_ids, self.devices_per_round)

    def _sample_by_size(self, node_ids: list[int]) -> list[int]:
        """m nodes without replacement, each draw in proportion to the node's windows w (Efraimidis and
        Spirakis 2006: the m largest keys u^(1/w), here log(u) / w, u uniform; a node without a count
        weighs 1)."""
        keys = {}
        for node in node_ids:
            u = self.rounds_setup.rng.random()
            keys[node] = math.log(u) / max(self.device_windows.get(node, 1), 1) if u > 0 else -math.inf
        return sorted(node_ids, key=keys.__getitem__, reverse=True)[: self.devices_per_round]

    def _sample_by_passes(self, node_ids: list[int]) -> list[int]:
        """The next round of the pass schedule over ``node_ids`` (built at the first round, from the
        windows the roll call reported; a node without a count is drawn once a pass)."""
        if self._passes is None:
            windows = [self.device_windows.get(node, 1) for node in node_ids]
            draws = draws_per_pass(windows, self.rounds_setup.pass_chunk)
            schedule = PassSchedule(draws, self.devices_per_round, self.rounds_setup.rng)
            for _ in range(self.round_offset):  # a resumed run: the rounds already done
                schedule.next_round()
            self._passes = node_ids, schedule
        nodes, schedule = self._passes
        dealt = schedule.passes
        chosen = [nodes[i] for i in schedule.next_round()]
        if schedule.passes > dealt:
            log(
                INFO,
                "device draws: pass %d dealt, %d draws of %d devices",
                schedule.passes,
                sum(schedule.draws),
                len(nodes),
            )
        return chosen

    def resume_after(self, rounds_done: int, devices: int) -> None:
        """Continue a run after ``rounds_done`` rounds: number rounds after them and advance the sampler."""
        self.round_offset = rounds_done
        if self.rounds_setup.device_sampling == "passes":  # _sample_by_passes replays round_offset rounds
            return
        for _ in range(rounds_done):
            if self.rounds_setup.device_sampling == "windows":  # one uniform draw per device a round
                for _ in range(devices):
                    self.rounds_setup.rng.random()
            else:
                self.rounds_setup.rng.sample(range(devices), self.devices_per_round)

    def _round_config(self, config: ConfigRecord, server_round: int) -> None:
        setup = self.rounds_setup
        setup.mean_update.configure(config)
        config["server-round"] = server_round  # the run's round (RunRounds shifts it): seeds devices' noise
        m = setup.devices_per_round
        if self.clip is not None:
            config["clip"] = self.clip
            config["noise-share-std"] = setup.update_noise_multiplier * self.clip / math.sqrt(m)
        else:
            config["clip"] = 0.0  # no user-level clipping (and then no user-level noise either)
            config["noise-share-std"] = 0.0
        config["clip-bit"] = setup.adaptive
        config["clip-bit-noise-std"] = setup.clip_count_stddev / math.sqrt(m) if setup.adaptive else 0.0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember w_t, sample m devices and send each of them w_t and the round config."""
        self._w_t = arrays_to_numpy(arrays)
        node_ids = self._sample_nodes(grid)
        self._sent[server_round] = node_ids
        self._started[server_round] = time.perf_counter()
        self._round_config(config, server_round)
        log(
            INFO,
            "configure_train: sampled %d devices (out of %d)",
            len(node_ids),
            len(list(grid.get_node_ids())),
        )
        record = RecordDict(
            {self.arrayrecord_key: self._outgoing(arrays, config), self.configrecord_key: config}
        )
        return self._construct_messages(record, node_ids, MessageType.TRAIN)

    def _outgoing(self, arrays: ArrayRecord, config: ConfigRecord) -> ArrayRecord:
        """w_t as sent: every array, or only those differing from the run's public base (written from the
        first w_t this server sends: w_0, or the checkpoint it resumed from) plus the base's path and
        sha256 in ``config`` (``federation.public_base``)."""
        base_dir = self.rounds_setup.base_dir
        if base_dir is None or self._w_t is None:
            return arrays
        if self._base is None:
            path, digest = write_base(self._w_t, base_dir)
            base = {k: np.asarray(v, dtype=np.float32) for k, v in self._w_t.items()}
            self._base = base, ConfigRecord({BASE_SHA_KEY: digest, BASE_PATH_KEY: str(path.resolve())})
        base, entries = self._base
        for key, value in entries.items():
            config[key] = value
        changed = changed_arrays(self._w_t, base)
        return ArrayRecord({k: Array(np.ascontiguousarray(self._w_t[k], dtype=np.float32)) for k in changed})

    # ------------------------------------------------------------------ aggregate
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """w_t + Delta_t over the usable replies (the optimizer above steps on it); counts dropouts."""
        replies = sorted(replies, key=lambda m: self._device_rank(m.metadata.src_node_id))
        valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
        failures = [f"node {m.metadata.src_node_id}: {m.error.reason}" for m in errors]
        w_t = self._w_t or {}
        result = self.rounds_setup.mean_update.mean(server_round, valid, w_t)
        failures += result.failures
        sent = self._sent.get(server_round, [])
        answered = {m.metadata.src_node_id for m in replies}
        failures += [f"node {n}: no reply before the round timeout" for n in sent if n not in answered]
        stats = {
            "sampled": len(sent),
            "devices": sorted(self.device_ids.get(n, -1) for n in sent),  # -1: a node without a device id
            "participants": len(result.used),
            "dropouts": len(sent) - len(result.used) if sent else len(replies) - len(result.used),
            "failures": failures,
            "clip": self.clip,
            "seconds": time.perf_counter() - self._started.get(server_round, time.perf_counter()),
        }
        for reason in failures:
            log(WARNING, "round %d dropout: %s", server_round, reason)
        mean = result.mean
        if mean is not None:  # the devices' statistics: means over A_t, decrypted with the update
            stats.update(decode_stats(mean))
        if mean is not None and CLIP_BIT_KEY in mean:
            unclipped = float(np.ravel(mean.pop(CLIP_BIT_KEY))[0])
            stats["unclipped_fraction"] = unclipped
            if self.rounds_setup.adaptive and self.rounds_setup.clip is not None:
                stats["next_clip"] = self.rounds_setup.clip.update(unclipped)
        self.rounds[server_round] = stats
        if self.on_round is not None:
            self.on_round(server_round, stats)
        out = MetricRecord({k: v for k, v in stats.items() if isinstance(v, (int, float)) and v is not None})
        if mean is None or self._w_t is None:
            log(
                WARNING,
                "round %d: no usable update (%d dropouts); the model is unchanged",
                server_round,
                stats["dropouts"],
            )
            return None, out
        aggregated = {
            k: (w.astype(np.float64) + mean[k]).astype(w.dtype) if k in mean else w for k, w in w_t.items()
        }
        return numpy_to_arrays(aggregated), out
