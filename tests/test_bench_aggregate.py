"""``hushtype bench aggregate``: the per-round CPU meter counts the run's child processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hushtype.bench_aggregate import RoundCPU

BURN = (
    "import sys, time\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.5: pass\n"
    "print('burnt', flush=True)\n"
    "time.sleep(30)\n"
)


def test_round_cpu_counts_a_child_process_between_rows(tmp_path: Path) -> None:
    # Prepare: rounds.jsonl gains row 0, then a child burns 0.5 CPU-s (like a Ray worker), then rows 1, 2
    rows = tmp_path / "rounds.jsonl"
    with RoundCPU(rows) as cpu:
        rows.write_text('{"round": 0}\n')
        time.sleep(0.3)
        child = subprocess.Popen([sys.executable, "-c", BURN], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "burnt"
            time.sleep(0.3)  # the meter samples the live child
            rows.write_text('{"round": 0}\n{"round": 1}\n')
            time.sleep(0.3)
            rows.write_text('{"round": 0}\n{"round": 1}\n{"round": 2}\n')
            time.sleep(0.3)
        finally:
            child.kill()
            child.wait()
    # Execute
    first, second = cpu.per_round()
    # Assert: the child's seconds land in round 1, an idle round costs next to nothing
    assert first >= 0.45
    assert second < 0.25
