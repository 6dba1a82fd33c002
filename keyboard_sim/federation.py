"""A federated run's data: the dataset (``load_data``), the devices (``select_devices``) and their shards.

``FederationConfig`` lives in the neutral ``federation`` package (re-exported here). The runner
(``hushtype.simulation``) loads the data once, checks the configuration against it and writes one shard
per device (``write_device_shards``, with any audit canaries of ``keyboard_sim.canaries`` planted), so a
simulated phone reads only its own examples
(``device_examples``); the aggregator gets the held-out users from the runner, never from here.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

import numpy as np

from federation.config import FederationConfig
from keyboard_sim.canaries import plant_canaries
from keyboard_sim.dataset import DataConfig, FederatedData, UserExamples, build_federated_data
from keyboard_sim.split import SplitConfig
from models.config import ModelConfig
from models.data import Examples

__all__ = [
    "FederationConfig",
    "data_config",
    "data_config_of",
    "load_data",
    "eligible_users",
    "select_devices",
    "write_device_shards",
    "device_examples",
    "trainable_arrays",
]


# ---------------------------------------------------------------------- model
def trainable_arrays(config: FederationConfig, model_config: ModelConfig) -> tuple[str, ...]:
    """The arrays devices fine-tune: ``config.trainable`` ("default": the model's bias-like arrays,
    ``models.factory.default_trainable``; "all": every array; ``lora<r>``: the head's low-rank adapter B,
    ``models.lora.LORA_B``), checked against the model's arrays (ValueError names the field)."""
    from models.factory import default_trainable, trainable_keys  # torch: not for the data-only checks
    from models.lora import LORA_B

    if config.trainable == "default":
        return default_trainable(model_config)
    if config.trainable == "all":
        return trainable_keys(model_config)
    names = tuple(k.strip() for k in config.trainable.split(",") if k.strip())
    keys = trainable_keys(model_config)
    rank = _adapter_rank(config, model_config, names)
    unknown = [k for k in names if k not in keys and not (rank and k == f"lora{rank}")]
    if unknown or not names:
        raise ValueError(
            f"FederationConfig.trainable={config.trainable!r}: {unknown or 'nothing'} is not an array of the "
            f"{model_config.kind!r} model; use 'default', 'all', 'lora<r>[,b2]' or a comma list of "
            f"{','.join(keys)}"
        )
    return tuple(LORA_B if k == f"lora{rank}" else k for k in names)


def _adapter_rank(config: FederationConfig, model_config: ModelConfig, names: tuple[str, ...]) -> int | None:
    """r of a ``lora<r>`` among ``names`` (None: none); it trains on cached head features, so it goes
    only with head arrays (``w2``, ``b2``) and needs 1 <= r <= H (ValueError names the field)."""
    from models.lora import lora_rank

    try:
        rank = lora_rank(names)
    except ValueError as err:
        raise ValueError(f"FederationConfig.trainable={config.trainable!r}: {err}") from err
    if rank is None:
        return None
    others = [k for k in names if k != f"lora{rank}" and k not in ("w2", "b2")]
    if others or rank > model_config.hidden:
        raise ValueError(
            f"FederationConfig.trainable={config.trainable!r}: the adapter lora<r> needs 1 <= r <= "
            f"{model_config.hidden} and goes only with the head arrays w2, b2 (got {others or f'r={rank}'})"
        )
    return rank


# ---------------------------------------------------------------------- data
def data_config(config: FederationConfig) -> DataConfig:
    """The dataset this run trains and evaluates on."""
    return data_config_of(config.data_fields())


def data_config_of(fields: dict) -> DataConfig:
    """The dataset ``FederationConfig.data_fields()`` names (as a federated release's card records it):
    the split is ``SplitConfig``'s defaults with ``split_seed``."""
    return DataConfig(
        **{k: v for k, v in fields.items() if k != "split_seed"}, split=SplitConfig(seed=fields["split_seed"])
    )


def federation_fields(data: DataConfig) -> dict:
    """The ``FederationConfig`` fields that name this dataset (the inverse of ``data_config``)."""
    return dict(
        data_source=data.source,
        jsonl_path=data.jsonl_path,
        cache_dir=data.cache_dir,
        vocab_size=data.vocab_size,
        vocab_source=data.vocab_source,
        context_scope=data.context_scope,
        split_seed=data.split.seed,
    )


@lru_cache(maxsize=2)
def _load_data_cached(data_config_json: str) -> FederatedData:
    fields = json.loads(data_config_json)
    split = SplitConfig(**fields.pop("split"))
    return build_federated_data(DataConfig(**fields, split=split))


def load_data(config: FederationConfig) -> FederatedData:
    """The run's dataset, built once per process (devices and server each load it themselves)."""
    return _load_data_cached(json.dumps(data_config(config).to_dict(), sort_keys=True))


# ------------------------------------------------------------------- devices
def eligible_users(train_users: list[UserExamples], config: FederationConfig) -> list[UserExamples]:
    """The train users with at least ``min_device_examples`` windows, in user-id order."""
    return sorted(
        (u for u in train_users if len(u.train) >= config.min_device_examples), key=lambda u: u.user_id
    )


def select_devices(train_users: list[UserExamples], config: FederationConfig) -> list[UserExamples]:
    """The N train users that become devices: enough examples, seeded choice, stable order."""
    eligible = eligible_users(train_users, config)
    if len(eligible) < config.devices:
        raise ValueError(
            f"FederationConfig.devices={config.devices}, but only {len(eligible)} train users have >= "
            f"min_device_examples={config.min_device_examples} examples; lower devices (or "
            "min_device_examples, or raise max_users)"
        )
    chosen = random.Random(config.seed).sample(eligible, config.devices)
    return sorted(chosen, key=lambda u: u.user_id)


def _shard_dir(config: FederationConfig) -> Path:
    return Path(config.run_dir) / "device_data" / config.config_hash()


def write_device_shards(config: FederationConfig, data: FederatedData) -> Path:
    """One ``.npz`` per device (its own windows only), so a simulated phone never loads the corpus."""
    out = _shard_dir(config)
    out.mkdir(parents=True, exist_ok=True)
    for partition, user in enumerate(select_devices(data.train_users, config)):
        path = out / f"device_{partition:05d}.npz"
        if not path.is_file():
            user = plant_canaries(config, partition, user, data.vocab.words)  # privacy audit only
            tmp = out / f"device_{partition:05d}.tmp.npz"
            np.savez(
                tmp,
                user=np.array(user.user_id),
                x=user.train.x,
                y=user.train.y,
                lx=user.later.x,
                ly=user.later.y,
            )
            tmp.replace(path)
    return out


def device_examples(config: FederationConfig, partition: int) -> UserExamples:
    """Device ``partition``'s own examples: its shard when the runner wrote one, else from the corpus."""
    if not 0 <= partition < config.devices:
        raise ValueError(f"partition-id {partition} is outside the {config.devices} devices of this run")
    path = _shard_dir(config) / f"device_{partition:05d}.npz"
    if path.is_file():
        with np.load(path) as z:
            return UserExamples(str(z["user"]), Examples(z["x"], z["y"]), Examples(z["lx"], z["ly"]))
    data = load_data(config)  # deployment without shards
    return plant_canaries(
        config, partition, select_devices(data.train_users, config)[partition], data.vocab.words
    )
