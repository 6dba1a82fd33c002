"""``hushtype bench aggregate``: the per-round CPU meter counts the run's child processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hushtype.bench_aggregate import RoundCPU

BURN = (
    "import time\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.5: pass\n"
    "print('burnt', flush=True)\n"
    "input()\n"  # alive until told to exit
)


def _burner() -> subprocess.Popen:
    """A child that burns 0.5 CPU-s, says so, and exits on a newline."""
    child = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "burnt"
    return child


def _stop(child: subprocess.Popen) -> None:
    child.communicate("\n", timeout=30)


def test_round_cpu_counts_a_child_process_between_rows(tmp_path: Path) -> None:
    # Prepare: an older child (burnt before the meter) that exits during round 1, like a finished test's
    # process; a new child that burns 0.5 CPU-s in round 1, like a Ray worker; rows 0, 1, 2
    rows = tmp_path / "rounds.jsonl"
    older = _burner()
    with RoundCPU(rows) as cpu:
        rows.write_text('{"round": 0}\n')
        time.sleep(0.3)
        _stop(older)
        worker = _burner()
        try:
            time.sleep(0.3)  # the meter samples the live worker
            rows.write_text('{"round": 0}\n{"round": 1}\n')
            time.sleep(0.3)
            rows.write_text('{"round": 0}\n{"round": 1}\n{"round": 2}\n')
            time.sleep(0.3)
        finally:
            _stop(worker)
    # Execute
    first, second = cpu.per_round()
    # Assert: the worker's seconds land in round 1 (the older child leaving takes none away), an idle
    # round costs next to nothing
    assert first >= 0.45
    assert second < 0.25


def test_round_cpu_marks_each_row_once_when_a_read_catches_the_file_mid_write(tmp_path: Path) -> None:
    # Prepare: a meter that has seen row 0 at 1.0 CPU-s
    cpu = RoundCPU(tmp_path / "rounds.jsonl")
    cpu.mark_rows(1, 1.0)
    # Execute: a read of the file while it is truncated for a rewrite, one of a row without its newline yet,
    # then the complete rows 0 and 1
    cpu.mark_rows(0, 2.0)
    cpu.mark_rows(1, 2.5)
    cpu.mark_rows(2, 3.0)
    # Assert: row 0 keeps its first reading, so round 1 costs 2.0 CPU-s rather than 0
    assert cpu.marks == {0: 1.0, 1: 3.0}
    assert cpu.per_round() == [2.0]
