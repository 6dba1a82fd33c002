"""Central training and the no-DP federated arm at one longer data budget, side by side (issue #8).

The bench's own arms (``hushtype.bench_federated``: ``_central`` early-stopped per epoch, and ``_fl`` of
``plain_fl_config(data_epochs=E)``) on the bench's split and held-out windows, from the warm start in
``OUT/pretrained_lstm``; prints one JSON line per arm and the gaps closed.

    python scripts/fl_budget.py --epochs 2 --out /tmp/ep2   # OUT/pretrained_lstm: the bench's warm start
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hushtype.bench_federated import (  # noqa: E402 - after the path fix
    BenchConfig,
    _central,
    _fl,
    _gap,
    _warm_model,
    bench_split,
    plain_fl_config,
)
from hushtype.heldout import gap_interval  # noqa: E402
from keyboard_sim.dataset import DataConfig  # noqa: E402


def _printable(arm: dict) -> dict:
    """An arm's scores without the per-user sums (they serve the intervals)."""
    return {k: v for k, v in arm.items() if k != "by_user"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=float, required=True, help="data passes for both arms")
    parser.add_argument("--out", required=True, help="holds pretrained_lstm; runs are written here")
    args = parser.parse_args()
    out = Path(args.out)
    bench = BenchConfig(model="lstm", out=str(out))
    warm = out / "pretrained_lstm"
    split = bench_split(bench, bench.data(DataConfig()), warm, out / "dp")
    public = split.heldout.score(_warm_model(warm))
    central = _central(warm, split.pooled, split.valid, split.heldout, epochs=args.epochs, seed=0)
    print(json.dumps({"public": _printable(public), "central": _printable(central)}), flush=True)
    config = plain_fl_config(split.shipped, data_epochs=args.epochs, device_windows=split.device_windows())
    plain = _fl(dataclasses.replace(config, run_dir=str(out / "plain")), split.heldout)
    gaps = {
        "gap_closed_plain": _gap(plain["top1"], public["top1"], central["top1"]),
        "gap_closed_plain_interval": gap_interval(plain, public, central),
        "loss_gap_closed": _gap(plain["loss"], public["loss"], central["loss"]),
        "loss_gap_closed_interval": gap_interval(plain, public, central, metric="loss"),
    }
    row = {"epochs": args.epochs, "rounds": config.rounds, "plain": _printable(plain)}
    print(json.dumps({**row, **gaps}), flush=True)


if __name__ == "__main__":
    main()
