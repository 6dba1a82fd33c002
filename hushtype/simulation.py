"""Run a federated DP training job on Flower's simulation engine (Ray), on one machine.

``run_federated(FederationConfig(...))`` loads the data once, validates the configuration against it
(``validate_config``: before Ray starts, a ValueError naming the field), writes one data shard per
device, then starts ``flwr.simulation.run_simulation`` with one virtual SuperNode per device (a train
user), the ServerApp of ``server.server_app`` (handed the held-out data) and the ClientApp of
``keyboard_sim.client_app``, and returns the summary of the run directory it wrote:

    <run_dir>/rounds.jsonl        one JSON line per round (round 0 = the starting model)
    <run_dir>/progress.png        held-out accuracy and user-level epsilon vs round
    <run_dir>/checkpoints/        round_XXX.safetensors (plain export_weights arrays)
    <run_dir>/release/            the final model as a release (weights, vocab, model_card.json)
    <run_dir>/model_card.json     round, epsilons, deltas, metrics, config and its hash

The same apps run under ``flwr run .`` (deployment or simulation runtime); there the config is
read from ``[tool.flwr.app.config]`` via ``FederationConfig.from_run_config`` (``hushtype.flwr_apps``).
A run that aborts (too few usable replies) raises ``FederationFailed`` with the devices' error.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from federation import FederationConfig

__all__ = [
    "FederationConfig",
    "FederationFailed",
    "load_data",
    "validate_config",
    "run_federated",
    "BACKEND_CONFIG",
]


def load_data(config: FederationConfig) -> object:
    """The run's dataset (``keyboard_sim.federation.load_data``). The device package is imported on first
    use (it imports torch: seconds), so a configuration error is reported before that."""
    from keyboard_sim.federation import load_data as load

    return load(config)


class FederationFailed(RuntimeError):
    """The federation aborted (too few usable replies) or ended without a model card."""


def validate_config(config: FederationConfig) -> None:
    """Check what ``FederationConfig`` cannot check alone, before Ray starts; ValueError names the field.

    Devices vs eligible users (``devices``, ``min_device_examples``), the warm start's vocabulary,
    kind and shape (``warm_start``, ``model``, ``context``), the model's window (``context``) and arrays
    (``trainable``), and writes every device's own data shard. The data checks come first and load
    neither torch nor Flower (a bad ``devices`` exits in ~2 s, not after ~5 s of imports).
    """
    from keyboard_sim.federation import select_devices

    data = load_data(config)
    select_devices(data.train_users, config)  # raises naming `devices`

    from keyboard_sim.federation import trainable_arrays, write_device_shards
    from models.release import load_release
    from server.server_app import fresh_model_config

    if config.warm_start:
        try:
            release = load_release(config.warm_start)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(
                f"FederationConfig.warm_start={config.warm_start!r} is not a release: {err}"
            ) from err
        if release.vocab.words != data.vocab.words:
            raise ValueError(
                f"FederationConfig.warm_start={config.warm_start!r} was trained with another vocabulary than "
                "this run's data (vocab_size, vocab_source, split_seed, data_source must match its card)"
            )
        if release.config.kind != config.model:
            raise ValueError(
                f"FederationConfig.model={config.model!r} but the warm start {config.warm_start!r} is a "
                f"{release.config.kind!r} model"
            )
        if release.config.context != config.context:
            raise ValueError(
                f"FederationConfig.context={config.context} but the warm start {config.warm_start!r} has "
                f"context {release.config.context}"
            )
        model_config = release.config
    else:
        model_config = fresh_model_config(config, len(data.vocab))
    trainable_arrays(config, model_config)  # raises naming `trainable`
    write_device_shards(config, data)


BACKEND_CONFIG = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}}


def backend_config(config: FederationConfig) -> dict:
    """Flower's Ray backend settings: a local Ray of 2 CPUs, or ``ray.init(address=...)`` on a cluster
    (Ray refuses ``num_cpus`` when attaching: the cluster's own resources decide)."""
    backend = json.loads(json.dumps(BACKEND_CONFIG))
    if config.ray_address:
        backend["init_args"] = {"address": config.ray_address}
    return backend


# ---------------------------------------------------------------------- run
def run_federated(config: FederationConfig, *, verbose: bool = False) -> dict:
    """Run the whole federation on the simulation engine; returns the final model card."""
    if config.resume:
        from server.server_app import resume_point

        resume_point(config)  # fail fast, before Ray starts, if there is nothing (right) to resume
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    validate_config(config)  # before Flower's and the apps' imports: a bad config exits in seconds

    from flwr.simulation import run_simulation

    from hushtype import vce_feed
    from keyboard_sim.client_app import make_client_app
    from server.server_app import FederationAborted, make_server_app

    (run_dir / "abort.json").unlink(missing_ok=True)
    (run_dir / "model_card.json").unlink(missing_ok=True)
    logging.getLogger("flwr").propagate = False  # opacus' basicConfig would print every Flower line twice
    vce_feed.install()  # Flower's feeder scans every message once per node: one core busy at 777 nodes
    # Ray workers must import this project: make sure its root is on their path.
    root = str(Path(__file__).resolve().parents[1])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
    try:
        run_simulation(
            server_app=make_server_app(load_data, config),
            client_app=make_client_app(config),
            num_supernodes=config.devices,
            backend_config=backend_config(config),
            verbose_logging=verbose,
        )
    except FederationAborted as err:
        raise FederationFailed(str(err)) from err
    abort = run_dir / "abort.json"
    if abort.is_file():
        raise FederationFailed(json.loads(abort.read_text(encoding="utf-8"))["reason"])
    card_path = run_dir / "model_card.json"
    if not card_path.is_file():
        raise FederationFailed(f"the federation ended without writing {card_path}; see the log above")
    return json.loads(card_path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    """``python -m hushtype.simulation [key=value ...]``: run-config style overrides; prints a summary."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    overrides: dict = {}
    for arg in args:
        key, _, raw = arg.partition("=")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    try:
        card = run_federated(FederationConfig.from_run_config(overrides))
    except (ValueError, FederationFailed) as err:
        print(f"hushtype simulate: {err}", file=sys.stderr)
        return 2 if isinstance(err, ValueError) else 1
    summary = {
        k: card[k]
        for k in (
            "round",
            "user_epsilon",
            "user_delta",
            "max_device_example_epsilon",
            "metrics",
            "participants",
            "dropouts",
            "seconds",
            "config_hash",
        )
    }
    print(json.dumps(summary, indent=2, default=str).replace("Infinity", "null"))  # JSON has no inf
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
