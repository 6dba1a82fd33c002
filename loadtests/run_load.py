"""Bounded load run of the encrypted prediction API; prints ONE JSON object.

Starts ``hushtype serve`` on a free 127.0.0.1 port (session store in a temp dir), waits for ``/healthz``,
runs ``locustfile_encrypted_predict.py`` headless for ``--seconds`` with ``--users``, reads
``PREFIX_stats.csv``, scrapes the server's ``/metrics``, stops the server (its whole process group: the
uvicorn process and its HE workers) and prints the summary. Every step has a deadline; the server is
stopped in ``finally`` whatever happens.

    .venv/bin/python loadtests/run_load.py --release runs/central--quick --seconds 30 --users 4

JSON keys: ``requests``/``failures``/``rps`` (all request types, setup included), ``predict`` (the
``/v1/sessions/{id}/predict`` row: requests, failures, rps, p50/p95/p99/avg ms), ``sessions`` (the
``POST /v1/sessions`` row), ``server`` (predictions counted and the mean server-side predict time, worker
queue included, from ``/metrics``), ``users``, ``seconds``, ``server_workers``, the locust options used,
``failure_samples`` (up to 5 rows of ``PREFIX_failures.csv``) and ``csv_prefix`` if ``--keep-csv`` was
given.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from hushtype.loadtest import read_stats
from hushtype.serve_process import free_port, start_server, stop_server, wait_healthy

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile_encrypted_predict.py"
SHAPE_FILE = HERE / "shape_ramp.py"
PREDICT_NAME = "/v1/sessions/{id}/predict"

# Re-exported: the real-server tests use these through this module.
__all__ = ["free_port", "start_server", "wait_healthy", "stop_server", "main"]


def _row_summary(row: dict | None) -> dict:
    if row is None:
        return {"requests": 0, "failures": 0, "rps": 0.0}

    def ms(key: str) -> float | None:
        value = row.get(key, "N/A")
        return None if value in ("", "N/A") else float(value)

    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "rps": round(float(row["Requests/s"]), 3),
        "p50_ms": ms("50%"),
        "p95_ms": ms("95%"),
        "p99_ms": ms("99%"),
        "avg_ms": round(float(row["Average Response Time"]), 1),
        "avg_bytes": round(float(row["Average Content Size"])),
    }


def server_metrics(url: str) -> dict:
    """Predictions served and the mean server-side predict time (worker queue + HE), from `/metrics`."""
    values: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError):
        for line in httpx.get(f"{url}/metrics", timeout=10.0).text.splitlines():
            if line.startswith("hushtype_") and " " in line:
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
    count = values.get("hushtype_predict_seconds_count", 0.0)
    mean_ms = round(1e3 * values["hushtype_predict_seconds_sum"] / count, 1) if count else None
    return {
        "predictions": int(values.get("hushtype_predictions_total", 0)),
        "sessions_created": int(values.get("hushtype_sessions_created_total", 0)),
        "predict_rejected": int(values.get("hushtype_predict_rejected_total", 0)),
        "predict_mean_ms": mean_ms,
    }


def run(args: argparse.Namespace) -> dict:
    """Server up, locust for ``args.seconds``, server down; the summary dict."""
    release = Path(args.release).resolve()
    if not (release / "model_card.json").is_file():
        raise SystemExit(f"run_load: error: {release} is not a release directory (no model_card.json)")
    with tempfile.TemporaryDirectory(prefix="hushtype-load-") as tmp:
        tmp_path = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        prefix = Path(args.keep_csv).resolve() if args.keep_csv else tmp_path / "load"
        server = start_server(
            release,
            tmp_path / "sessions.db",
            port,
            args.workers,
            tmp_path / "server.log",
            allow_non_private=True,  # a load test measures whatever release it is given, DP or not
            env={"HUSHTYPE_SESSION_CREATE_BURST": "100000"},  # every simulated device shares 127.0.0.1
        )
        try:
            health = wait_healthy(url, server, timeout=args.startup_timeout)
            files = f"{LOCUSTFILE},{SHAPE_FILE}" if args.shape else str(LOCUSTFILE)
            cmd = [
                sys.executable,
                "-m",
                "locust",
                "-f",
                files,
                "--headless",
                "-u",
                str(args.users),
                "-r",
                str(args.spawn_rate or args.users),
                "-t",
                f"{args.seconds}s",
                "--host",
                url,
                "--csv",
                str(prefix),
                "--only-summary",
                "--loglevel",
                "WARNING",
                "--device-pool",
                str(args.device_pool),
                "--think-seconds",
                str(args.think_seconds),
                "--personalize",
                str(int(not args.no_personalization)),
                "--release",
                str(release),
            ]
            env = dict(os.environ)
            if args.shape:
                env["HUSHTYPE_RAMP_PEAK"] = str(args.users)
            started = time.monotonic()
            locust = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=args.seconds + args.startup_timeout + 60
            )
            wall = time.monotonic() - started
            stats_file = Path(f"{prefix}_stats.csv")
            if not stats_file.is_file():
                raise RuntimeError(
                    f"locust wrote no {stats_file.name} (exit {locust.returncode}):\n{locust.stderr[-2000:]}"
                )
            stats = read_stats(stats_file)
            metrics = server_metrics(url)
        finally:
            stop_server(server)
        total = stats.get("Aggregated", {})
        failures_file = Path(f"{prefix}_failures.csv")
        samples = []
        if failures_file.is_file():
            with open(failures_file, newline="") as f:
                samples = [dict(row) for row in list(csv.DictReader(f))[:5]]
        return {
            "requests": int(total.get("Request Count", 0)),
            "failures": int(total.get("Failure Count", 0)),
            "rps": round(float(total.get("Requests/s", 0.0)), 3),
            "predict": _row_summary(stats.get(f"POST {PREDICT_NAME}")),
            "sessions": _row_summary(stats.get("POST /v1/sessions")),
            "server": metrics,
            "users": args.users,
            "spawn_rate": args.spawn_rate or args.users,
            "shape": "ramp" if args.shape else None,
            "seconds": args.seconds,
            "locust_wall_seconds": round(wall, 1),
            "server_workers": args.workers,
            "think_seconds": args.think_seconds,
            "device_pool": args.device_pool,
            "personalization": not args.no_personalization,
            "release": str(release),
            "model_version": health.get("model_version"),
            "cpu_count": os.cpu_count(),
            "locust_exit_code": locust.returncode,
            "failure_samples": samples,
            "csv_prefix": str(prefix) if args.keep_csv else None,
        }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", required=True, help="release directory to serve (e.g. runs/central--quick)")
    p.add_argument("--seconds", type=int, default=30, help="locust run time (default: 30)")
    p.add_argument("--users", type=int, default=4, help="simulated devices (peak users with --shape)")
    p.add_argument("--spawn-rate", type=float, default=None, help="users started per second (default: all)")
    p.add_argument("--workers", type=int, default=2, help="server HE worker processes (default: 2)")
    p.add_argument("--device-pool", type=int, default=4, help="key pairs generated by locust (default: 4)")
    p.add_argument("--think-seconds", type=float, default=0.3, help="mean wait between tasks; 0 saturates")
    p.add_argument("--no-personalization", action="store_true", help="skip the encrypted bias upload")
    p.add_argument("--shape", action="store_true", help="use loadtests/shape_ramp.py (peak = --users)")
    p.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for /healthz")
    p.add_argument("--keep-csv", metavar="PREFIX", help="write locust's CSV files here instead of a temp dir")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seconds < 1 or args.users < 1 or args.workers < 1:
        raise SystemExit("run_load: error: --seconds, --users and --workers must be >= 1")
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
