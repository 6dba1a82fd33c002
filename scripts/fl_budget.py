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
from keyboard_sim.dataset import DataConfig  # noqa: E402
from models.train import evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=float, required=True, help="data passes for both arms")
    parser.add_argument("--out", required=True, help="holds pretrained_lstm; runs are written here")
    args = parser.parse_args()
    out = Path(args.out)
    bench = BenchConfig(model="lstm", out=str(out))
    warm = out / "pretrained_lstm"
    split = bench_split(bench, bench.data(DataConfig()), warm, out / "dp")
    public = evaluate(_warm_model(warm), split.eval_set)
    central = _central(warm, split.pooled, split.valid, split.eval_set, epochs=args.epochs, seed=0)
    print(json.dumps({"public": public, "central": central}), flush=True)
    config = plain_fl_config(split.shipped, data_epochs=args.epochs, device_windows=split.device_windows())
    plain = _fl(dataclasses.replace(config, run_dir=str(out / "plain")), split.eval_set)
    gap = _gap(plain["top1"], public["top1"], central["top1"])
    loss_gap = (public["loss"] - plain["loss"]) / (public["loss"] - central["loss"])
    row = {"epochs": args.epochs, "rounds": config.rounds, "plain": plain}
    print(json.dumps({**row, "gap_closed_plain": gap, "loss_gap_closed": loss_gap}), flush=True)


if __name__ == "__main__":
    main()
