"""Throughput A/B: the same federated simulation from two source trees, alternately, on this machine.

Each arm runs ``python -m hushtype.simulation ARGS`` from its tree (``--arm name=TREE[:extra,args]``), and
each round is read off its rounds.jsonl: wall seconds (the strategy's sampling-to-aggregation time, what
``client_rounds_per_min`` divides by) and CPU seconds of the whole process tree (Ray workers, key
authority; training, aggregation and the server's evaluation, ``hushtype.bench_aggregate.RoundCPU``).
Alternating the arms spreads the shared machine's load over both; CPU per client round reads the same
under any load. Prints one JSON line per run and one summary JSON object per arm. A tree of an older
commit: ``git archive COMMIT | tar -x -C DIR``.

    python scripts/throughput_ab.py --reps 2 --arm base=/tmp/old --arm new=. -- \\
        devices=100 devices-per-round=20 rounds=4 eval-max-examples=500 model=lstm context=8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hushtype.bench_aggregate import RoundCPU  # noqa: E402 - after the path fix


def run_arm(tree: Path, args: list[str], run_dir: Path) -> list[dict]:
    """One simulation from ``tree``; per-round wall and CPU seconds, participants and loss."""
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    cmd = ["nice", "-n", "10", sys.executable, "-m", "hushtype.simulation", *args, f"run-dir={run_dir}"]
    with RoundCPU(run_dir / "rounds.jsonl") as cpu:
        subprocess.run(
            cmd, env=env, cwd=tree, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()][1:]
    return [
        {"round": r["round"], "s": r["seconds"], "cpu": c, "n": r["participants"], "loss": r["loss"]}
        for r, c in zip(rows, cpu.per_round(), strict=False)
    ]


def summary(runs: list[list[dict]]) -> dict:
    """client_rounds_per_min over every round; wall and CPU per round/client round after round 1."""
    every = [r for rows in runs for r in rows]
    later = [r for r in every if r["round"] > 1]
    return {
        "client_rounds_per_min": 60 * sum(r["n"] for r in every) / sum(r["s"] for r in every),
        "round1_s": sum(r["s"] for r in every if r["round"] == 1) / len(runs),
        "later_round_s": sum(r["s"] for r in later) / len(later),
        "cpu_s_per_client_round": sum(r["cpu"] / r["n"] for r in later) / len(later),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", action="append", required=True, help="name=TREE[:key=value,...]")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("args", nargs="*", help="hushtype.simulation key=value overrides for every arm")
    opts = parser.parse_args()
    arms = {}
    for spec in opts.arm:
        name, _, rest = spec.partition("=")
        tree, _, extra = rest.partition(":")
        arms[name] = (Path(tree).resolve(), [e for e in extra.split(",") if e])
    results: dict[str, list[list[dict]]] = {name: [] for name in arms}
    scratch = Path(tempfile.mkdtemp(prefix="hushtype-ab-"))
    try:
        for rep in range(opts.reps):
            for name, (tree, extra) in arms.items():
                rows = run_arm(tree, opts.args + extra, scratch / f"{name}_{rep}")
                results[name].append(rows)
                print(json.dumps({"arm": name, "rep": rep, "load": os.getloadavg()[0], "rounds": rows}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for name, runs in results.items():
        print(json.dumps({"arm": name, **summary(runs)}))


if __name__ == "__main__":
    main()
