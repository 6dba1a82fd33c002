"""``hushtype loadtest``: a short real run (server, locust, both keyboards), its flags, the knee finder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hushtype.loadtest import LoadConfig, knee
from hushtype.stack import missing_services

FIELDS = {
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "failures",
    "plaintext_rps",
    "plaintext_p50_ms",
    "plaintext_p95_ms",
    "plaintext_p99_ms",
    "plaintext_failures",
    "rps_ratio",
    "users",
    "replicas",
    "store",
    "cross_replica_predictions",
}


def _loadtest(*flags: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hushtype.cli", "loadtest", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _one_json(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, out.stdout
    return json.loads(lines[0])


def test_smoke_run_compares_encrypted_with_plaintext_in_one_run(http_release: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    result = _one_json(
        _loadtest("--release", str(http_release), "--users", "1", "--seconds", "4", "--out", str(out))
    )
    assert set(result) == FIELDS
    assert result["failures"] == 0 and result["plaintext_failures"] == 0
    assert result["rps"] > 0 and result["plaintext_rps"] > 0
    assert result["rps_ratio"] == pytest.approx(result["rps"] / result["plaintext_rps"], abs=1e-3)
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert (result["users"], result["replicas"], result["store"]) == (1, 1, "sqlite")
    assert result["cross_replica_predictions"] == 0  # one replica, no proxy
    assert (out / "locust_stats.csv").is_file() and (out / "locust_stats_history.csv").is_file()
    assert "<html" in (out / "locust_report.html").read_text()[:5000].lower()


def test_bad_flags_are_refused_naming_the_flag(http_release: Path, tmp_path: Path) -> None:
    cases = [
        ({"replicas": 2}, "--store redis"),
        ({"users": 0}, "--users"),
        ({"think_seconds": -1.0}, "--think-seconds"),
        ({"kill_replica_after": 5.0}, "--kill-replica-after"),
        ({"release": tmp_path / "nowhere"}, "--release"),
    ]
    for overrides, needle in cases:
        with pytest.raises(ValueError, match=needle):
            LoadConfig(**{"release": http_release, **overrides}).validate()
    out = _loadtest("--release", str(http_release), "--replicas", "3", timeout=60)  # before anything starts
    assert out.returncode == 2 and "--store redis" in out.stderr and out.stdout == ""


def test_the_knee_is_the_fastest_interval_within_the_p95_target(tmp_path: Path) -> None:
    history = tmp_path / "h.csv"
    head = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%\n"
    rows = [
        "1,2,POST,/v1/sessions/{id}/predict,3.0,0,40,90",
        "2,4,POST,/v1/sessions/{id}/predict,6.5,0,60,240",
        "3,6,POST,/v1/sessions/{id}/predict,7.9,0,150,400",  # faster, but over the target
        "4,6,POST,/v1/baseline/predict,20.0,0,2,5",  # another path
        "5,0,,Aggregated,30.0,0,10,100",
    ]
    history.write_text(head + "\n".join(rows) + "\n")
    found = knee(history, "POST /v1/sessions/{id}/predict", 250.0)
    assert found == {"knee_rps": 6.5, "knee_users": 2, "knee_p95_ms": 240.0}
    assert knee(history, "POST /v1/sessions/{id}/predict", 50.0)["knee_rps"] is None


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_services("redis")), reason="redis-server/haproxy not installed")
def test_ramp_over_two_replicas_on_redis_finds_a_knee_and_crosses_replicas(
    http_release: Path, tmp_path: Path
) -> None:
    flags = ["--release", str(http_release), "--users", "2", "--seconds", "20", "--out", str(tmp_path)]
    result = _one_json(_loadtest(*flags, "--replicas", "2", "--store", "redis", "--shape", "ramp"))
    assert set(result) == FIELDS | {"knee_rps", "knee_users", "knee_p95_ms"}
    assert result["failures"] == 0 and result["plaintext_failures"] == 0
    assert result["cross_replica_predictions"] > 0 and result["store"] == "redis" and result["replicas"] == 2
    assert result["knee_rps"] is not None and result["knee_p95_ms"] <= 250
