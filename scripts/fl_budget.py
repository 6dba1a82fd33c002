"""Central training and the no-DP federated arm at one longer data budget, side by side (issue #8).

The bench's own arms (``hushtype.bench_federated``: ``central_arm`` early-stopped per epoch, and
``fl_arm`` of ``plain_fl_config(data_epochs=E)``) on the bench's split and held-out windows, from the
warm start in ``OUT/pretrained_lstm``; prints one JSON line per arm and the gaps closed.
``--central-arms``: one central arm per ``floor[:ema]`` (the floor of its cosine lr decay, 1 a constant
lr; ema: ``train_central``'s per-step weight average, competing with the trained weights on the valid
windows), each with its own gap;
``--server-lr-schedule``/``--server-ema``: the no-DP arm's server eta schedule and iterate average.

    python scripts/fl_budget.py --epochs 2 --out /tmp/ep2   # OUT/pretrained_lstm: the bench's warm start
    python scripts/fl_budget.py --epochs 1 --out /tmp/ep1 --central-arms 0.1,0.1:0.992,1:0.992
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hushtype.bench_federated import (  # noqa: E402 - after the path fix
    CENTRAL_EMA,
    CENTRAL_LR_FLOOR,
    BenchConfig,
    bench_split,
    central_arm,
    fl_arm,
    gap_closed,
    plain_fl_config,
    warm_model,
)
from hushtype.heldout import gap_interval  # noqa: E402
from keyboard_sim.dataset import DataConfig  # noqa: E402

BENCH_CENTRAL = f"{CENTRAL_LR_FLOOR:g}:{CENTRAL_EMA:g}"  # the bench's central arm as floor:ema


def _printable(arm: dict) -> dict:
    """An arm's scores without the per-user sums (they serve the intervals)."""
    return {k: v for k, v in arm.items() if k != "by_user"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=float, required=True, help="data passes for both arms")
    parser.add_argument("--out", required=True, help="holds pretrained_lstm; runs are written here")
    parser.add_argument(
        "--central-arms",
        default=BENCH_CENTRAL,
        help=f"comma list of floor[:ema]: cosine lr floor (1: constant), EMA; {BENCH_CENTRAL}: the bench's",
    )
    parser.add_argument(
        "--server-lr-schedule", default=None, help="the no-DP arm's eta schedule (none|cos|lin)"
    )
    parser.add_argument(
        "--server-ema", type=float, default=None, help="the no-DP arm's iterate-average decay"
    )
    args = parser.parse_args()
    out = Path(args.out)
    bench = BenchConfig(model="lstm", out=str(out))
    warm = out / "pretrained_lstm"
    split = bench_split(bench, bench.data(DataConfig()), warm, out / "dp")
    public = split.heldout.score(warm_model(warm))
    centrals = {}
    for arm in args.central_arms.split(","):
        floor, ema = (*map(float, arm.split(":")), 0.0)[:2]
        fit = dict(epochs=args.epochs, seed=0, lr_floor=floor, ema=ema)
        centrals[arm] = central_arm(warm, split.pooled, split.valid, split.heldout, **fit)
        row = {"public": _printable(public), "central": _printable(centrals[arm]), "central_arm": arm}
        print(json.dumps(row), flush=True)
    config = plain_fl_config(split.shipped, data_epochs=args.epochs, device_windows=split.device_windows())
    overrides = {"server_lr_schedule": args.server_lr_schedule, "server_ema": args.server_ema}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    plain = fl_arm(dataclasses.replace(config, run_dir=str(out / "plain")), split.heldout)
    row = {"epochs": args.epochs, "rounds": config.rounds, "plain": _printable(plain)}
    row |= {"server_lr_schedule": config.server_lr_schedule, "server_ema": config.server_ema}
    for arm, central in centrals.items():  # one gap per central arm; no suffix: the bench's
        suffix = "" if arm == BENCH_CENTRAL else f"_vs_central_{arm}"
        row[f"gap_closed_plain{suffix}"] = gap_closed(plain["top1"], public["top1"], central["top1"])
        row[f"gap_closed_plain_interval{suffix}"] = gap_interval(plain, public, central)
        row[f"loss_gap_closed{suffix}"] = gap_closed(plain["loss"], public["loss"], central["loss"])
        row[f"loss_gap_closed_interval{suffix}"] = gap_interval(plain, public, central, metric="loss")
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
