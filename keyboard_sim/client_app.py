"""The device side of a federated round as a Flower ClientApp (Message API).

One virtual SuperNode = one device = one train user (``partition-id`` indexes the selected users).
On a train message carrying the global weights w_t and the round config, the device:

    1. runs local DP-SGD (``keyboard_sim.device.Device``: Opacus, example-level DP)  -> w_i
    2. Delta_i = w_i - w_t
    3. clips to the user-level bound:  Delta_i <- Delta_i * min(1, C / ||Delta_i||_2)
    4. adds its share of distributed DP noise:  Delta_i <- Delta_i + xi_i,
       xi_i ~ N(0, sigma^2 C^2 / m I), so the sum over the m sampled devices carries N(0, sigma^2 C^2 I)
    5. appends its own statistics (example count, loss, norm, clipped bit, example-level epsilon) as
       extra one-element arrays of the same update (``federation.wire``), encodes the update with the
       run's codec (``encode_update``: the single seam where the plain float32 ArrayRecord is swapped
       for CKKS ciphertexts) and replies with that ArrayRecord *only*: with ``aggregation="he"`` the
       aggregator receives one ciphertext per device and nothing per device in the clear.

Steps 1-4 never change with the codec. The device's example-level privacy ledger travels in
``context.state`` so it survives rounds whichever worker process runs the device, and in the device's
own storage (``<run_dir>/device_state/<run id>/``), so it survives a restarted server (``resume``).
Noise here comes from numpy's PCG64, which is fine for simulation; a deployment needs a CSPRNG.
"""

from __future__ import annotations

import json
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federation.public_base import BASE_SHA_KEY, with_base
from federation.wire import CLIP_BIT_KEY, encode_stats
from keyboard_sim.device import DEVICE_HEAD_KEYS, Device, LocalDPConfig, seed_for
from keyboard_sim.federation import FederationConfig, device_examples, select_devices, trainable_arrays
from keyboard_sim.plain_device import PlainDevice
from models.config import ModelConfig
from models.factory import config_from_weights

logging.getLogger("flwr").propagate = False  # opacus calls basicConfig: Flower lines would print twice

__all__ = [
    "UpdateCodec",
    "PlainCodec",
    "register_codec",
    "encode_update",
    "clip_update",
    "add_noise_share",
    "add_clip_bit",
    "CLIP_BIT_KEY",
    "select_devices",
    "make_client_app",
    "app",
]


# ----------------------------------------------------------------------------- codecs
class UpdateCodec(Protocol):
    """Turns a device's (clipped, noised) update into what goes on the wire."""

    name: str

    def encode(self, delta: dict[str, np.ndarray], **options) -> ArrayRecord:
        """Encode ``delta`` (float32 arrays by name) as an ArrayRecord."""


class PlainCodec:
    """float32 arrays in the clear (``Array.stype == "numpy.ndarray"``): the aggregator sees them."""

    name = "plain"

    def encode(self, delta: dict[str, np.ndarray], **options) -> ArrayRecord:
        return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.float32)) for k, v in delta.items()})


_CODECS: dict[str, Callable[[], UpdateCodec]] = {"plain": PlainCodec}


def register_codec(name: str, factory: Callable[[], UpdateCodec]) -> None:
    """Make ``factory`` the codec for ``aggregation=name`` ("he" is registered lazily, see ``_codec``)."""
    _CODECS[name] = factory


def _register_he_codec() -> None:
    """Register ``ckks.codec.HECodec`` as "he"; imported on first use (TenSEAL is heavy to load)."""
    try:
        from ckks.codec import HECodec
    except ModuleNotFoundError as err:
        raise ValueError(f"codec 'he' is not available ({err}); use aggregation='plain'") from err
    register_codec(HECodec.name, HECodec)


def _codec(name: str) -> UpdateCodec:
    if name not in _CODECS and name == "he":
        _register_he_codec()
    if name not in _CODECS:
        raise ValueError(f"unknown update codec {name!r}; registered: {sorted(_CODECS)}")
    return _CODECS[name]()


def encode_update(delta: dict[str, np.ndarray], *, codec: str = "plain", **options) -> ArrayRecord:
    """The single seam between training and the wire: ``delta`` -> ArrayRecord via ``codec``."""
    return _codec(codec).encode(delta, **options)


# ----------------------------------------------------------------------- user-level DP


def clip_update(delta: dict[str, np.ndarray], clip: float) -> tuple[dict[str, np.ndarray], float]:
    """Delta * min(1, C / ||Delta||_2) over all arrays jointly; returns (clipped, norm before).

    ``clip == 0`` means no user-level clipping (a non-private run); the norm is still returned.
    """
    if clip < 0:
        raise ValueError(f"clip must be >= 0, got {clip}")
    norm = float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in delta.values())))
    factor = min(1.0, clip / norm) if norm > 0 and clip > 0 else 1.0
    return {k: (v * factor).astype(np.float32) for k, v in delta.items()}, norm


def add_clip_bit(
    delta: dict[str, np.ndarray], norm: float, clip: float, std: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Append b_i = 1[||Delta_i|| <= C] + N(0, std^2) (Andrew et al. 2021): encrypted with the update."""
    bit = (1.0 if norm <= clip else 0.0) + (rng.normal(0.0, std) if std > 0 else 0.0)
    return {**delta, CLIP_BIT_KEY: np.array([bit], dtype=np.float32)}


def add_noise_share(
    delta: dict[str, np.ndarray], std: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Delta + N(0, std^2 I); with std = sigma * C / sqrt(m) the m shares sum to N(0, sigma^2 C^2 I)."""
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    if std == 0:
        return delta
    return {k: (v + rng.normal(0.0, std, size=v.shape)).astype(np.float32) for k, v in delta.items()}


# ----------------------------------------------------------------------- the fleet
class _Fleet:
    """Per worker process: the device list and an LRU of live ``Device`` objects."""

    def __init__(self) -> None:
        self.devices: OrderedDict[tuple[str, int], Device | PlainDevice] = OrderedDict()
        self._trainable: dict[tuple[str, str], tuple[str, ...]] = {}  # checked once per run and shape

    def trainable(self, config: FederationConfig, model_config: ModelConfig) -> tuple[str, ...]:
        """``trainable_arrays`` of the run, memoised (the check builds a model: ~30 ms)."""
        key = (config.config_hash(), repr(model_config))
        if key not in self._trainable:
            self._trainable[key] = trainable_arrays(config, model_config)
        return self._trainable[key]

    def get(
        self, config: FederationConfig, partition: int, model_config: ModelConfig
    ) -> Device | PlainDevice:
        key = (config.config_hash(), partition)
        if key in self.devices:
            self.devices.move_to_end(key)
            return self.devices[key]
        user = device_examples(config, partition)  # only this device's own data
        dp = LocalDPConfig(
            noise_multiplier=config.example_noise_multiplier,
            max_grad_norm=config.max_grad_norm,
            batch_size=config.batch_size,
            lr=config.lr,
            local_epochs=config.local_epochs,
            max_local_steps=config.max_local_steps,
            delta=config.example_delta,
            accountant=config.example_accountant,
            trainable=self.trainable(config, model_config),
            optimizer=config.local_optimizer,
        )
        device = _device_class(config)(user.user_id, user.train, model_config, dp)
        self.devices[key] = device
        while len(self.devices) > config.device_cache:
            self.devices.popitem(last=False)
        return device


def _device_class(config: FederationConfig) -> type[Device] | type[PlainDevice]:
    """Opacus' DP-SGD device, or plain torch when no example-level noise is added (epsilon inf)."""
    return PlainDevice if config.example_noise_multiplier == 0 else Device


_FLEET = _Fleet()


def _fleet() -> _Fleet:
    """This process's fleet. The simulation cloudpickles the ClientApp for every message, and a closure
    that named ``_FLEET`` directly would carry a copy of the driver's (empty) fleet each time; this
    module-level function is pickled by reference, so a worker keeps its live devices across messages."""
    return _FLEET


_STATE_KEY = "hushtype-device"


def _inject_faults(config: ConfigRecord, partition: int, server_round: int, seed: int) -> None:
    """Raise if the round config says this device fails (tests and robustness drills)."""
    failing = {int(p) for p in str(config.get("fail-partitions", "")).split(",") if p.strip()}
    if partition in failing:
        raise RuntimeError(f"injected failure on device {partition}")
    p_drop = float(config.get("drop-probability", 0.0))
    if p_drop > 0 and random.Random(seed_for(seed, "drop", server_round, partition)).random() < p_drop:
        raise ConnectionError(f"device {partition} went offline (injected, p={p_drop})")


def _device_state_path(config: FederationConfig, run_id: str, partition: int) -> Path | None:
    """The simulated phone's own storage for this run's privacy ledger (it survives a restarted server)."""
    if not run_id.isalnum():
        return None
    return Path(config.run_dir) / "device_state" / run_id / f"device_{partition:05d}.json"


def _saved_states(context: Context, config: FederationConfig, run_id: str, partition: int) -> list[dict]:
    """The device's state as Flower's node context and the device's storage hold it."""
    states = []
    if _STATE_KEY in context.state:
        states.append(json.loads(str(context.state[_STATE_KEY]["json"])))
    path = _device_state_path(config, run_id, partition)
    if path is not None and path.is_file():
        states.append(json.loads(path.read_text(encoding="utf-8")))
    return sorted(states, key=lambda s: len(s["ledger"]), reverse=True)


def _save_state(context: Context, config: FederationConfig, run_id: str, partition: int, state: dict) -> None:
    text = json.dumps(state)
    context.state[_STATE_KEY] = ConfigRecord({"json": text})
    path = _device_state_path(config, run_id, partition)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # atomic: a crash never leaves half a ledger


def _encoder_digest(round_config: ConfigRecord, received: dict[str, np.ndarray]) -> str | None:
    """The base's sha256 when the message left every encoder array (and ``beta``) to the base, else None."""
    digest = round_config.get(BASE_SHA_KEY)
    encoder_sent = any(k not in DEVICE_HEAD_KEYS or k == "beta" for k in received)  # (or its adapter)
    return None if digest is None or encoder_sent else str(digest)


_WARM: set[str] = set()


def _warm_up(config: ConfigRecord | None) -> None:
    """At the roll call, once per worker process: what a device's first round would otherwise pay.

    torch imports its optimizer machinery (``torch._dynamo``) on the first optimizer it builds, ~2 s;
    with ``codec="he"`` the roll call also carries the federation's public context, so TenSEAL is
    imported and the context parsed here (a device enrolling gets the public key once).
    """
    if "torch" not in _WARM:
        import torch

        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        _WARM.add("torch")
    if config is not None and str(config.get("codec", "")) == "he":
        _codec("he")
        from ckks.codec import load_public_context

        load_public_context(config)


def _partition(context: Context, config: FederationConfig) -> int:
    """This node's device index; a federation sized unlike ``devices`` is a clear error, not a crash later."""
    partitions = context.node_config.get("num-partitions")
    if partitions is not None and int(partitions) != config.devices:
        raise ValueError(
            f"the federation has {partitions} SuperNodes but devices={config.devices}: one SuperNode is one "
            f"device, so run it with num-supernodes={config.devices} (scripts/flwr-run sizes it for you)"
        )
    return int(context.node_config["partition-id"])


# ----------------------------------------------------------------------- the app
def make_client_app(config: FederationConfig | None = None) -> ClientApp:
    """A ClientApp bound to ``config``, or reading ``context.run_config`` when ``config`` is None."""
    client_app = ClientApp()

    def _config(context: Context) -> FederationConfig:
        return config if config is not None else FederationConfig.from_run_config(dict(context.run_config))

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = _config(context)
        partition = _partition(context, cfg)
        round_config = msg.content["config"]
        server_round = int(round_config["server-round"])
        _inject_faults(round_config, partition, server_round, cfg.seed)

        received = {k: a.numpy() for k, a in msg.content["arrays"].items()}  # what differs from the base
        global_weights = with_base(received, round_config)  # the rest: the run's public base, by reference
        model_config = config_from_weights(global_weights, context=cfg.context)  # a warm start's shape wins
        device = _fleet().get(cfg, partition, model_config)
        run_id = str(round_config.get("run-id", ""))  # the federated run (kept across a server restart)
        for saved in _saved_states(context, cfg, run_id, partition):  # the ledger may have advanced elsewhere
            if len(saved["ledger"]) > device.rounds_trained:
                device.load_state(saved)

        result = device.train(
            global_weights,
            server_round=server_round,
            seed=seed_for(cfg.seed, "train", server_round, partition),
            lr=float(round_config.get("lr", cfg.lr)),
            local_epochs=float(round_config.get("local-epochs", cfg.local_epochs)),
            encoder_digest=_encoder_digest(round_config, received),
        )
        clip = float(round_config.get("clip", cfg.clip))
        delta, norm = clip_update(result.delta, clip)
        noise_std = float(round_config.get("noise-share-std", 0.0))
        rng = np.random.default_rng(seed_for(cfg.seed, "noise", server_round, partition))
        delta = add_noise_share(delta, noise_std, rng)
        if bool(round_config.get("clip-bit", False)):
            delta = add_clip_bit(delta, norm, clip, float(round_config.get("clip-bit-noise-std", 0.0)), rng)
        stats = {
            "num-examples": result.num_examples,
            "train-loss": result.train_loss,
            "delta-norm": norm,
            "clipped": float(clip > 0 and norm > clip),
            "example-epsilon": result.example_epsilon,
        }
        record = encode_update(
            {**delta, **encode_stats(stats)},  # the statistics ride in the same (encrypted) vector
            codec=str(round_config.get("codec", cfg.aggregation)),
            config=round_config,  # the "he" codec reads the federation public context from it
            num_examples=result.num_examples,
        )
        _save_state(context, cfg, run_id, partition, device.state())
        return Message(RecordDict({"arrays": record}), reply_to=msg)  # nothing else: no clear metrics

    @client_app.query()
    def device_id(msg: Message, context: Context) -> Message:
        """Answer the server's roll call with this SuperNode's device (partition) id (and warm up); with
        ``device_sampling`` "windows" or "passes" (no user-level DP) also its count of training windows."""
        cfg = _config(context)
        partition = _partition(context, cfg)
        _warm_up(msg.content.config_records.get("config"))
        answer = {"partition-id": partition}
        if cfg.device_sampling != "uniform":
            answer["windows"] = len(device_examples(cfg, partition).train)
        return Message(RecordDict({"metrics": MetricRecord(answer)}), reply_to=msg)

    return client_app


app = make_client_app()  # for `flwr run .`: config comes from [tool.flwr.app.config]
