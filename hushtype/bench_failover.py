"""Failover benchmark: ``kill -9`` of one HE worker of a real ``hushtype serve`` under load.

Devices (threads, one session each) send encrypted predictions back to back for ``seconds``; a third of
the way in, one worker process is SIGKILLed. Prints one JSON object: requests answered before the kill
(the baseline, same run) and after it, how many failed and how (503 JSON with Retry-After is the only
acceptable failure: the requests the dead worker held), the longest gap without a successful answer,
and how long until ``/healthz`` reported every worker up again.

    python -m hushtype.bench_failover --release DIR [--seconds 15] [--devices 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from hushtype.serve_process import free_port, start_server, stop_server, wait_healthy

__all__ = ["run_failover_bench"]


@dataclass
class _Answer:
    sent: float
    done: float
    status: int  # 0: transport error
    json_error: bool
    retry_after: bool


def _device_loop(url: str, until: float, rng_seed: int, out: list[_Answer]) -> None:
    from keyboard_sim.api_client import PredictionClient  # the device side, as a real client would

    http = httpx.Client(base_url=url, timeout=60.0)
    device = PredictionClient(url, http=http).open()
    rng = np.random.default_rng(rng_seed)
    try:
        while time.monotonic() < until:
            query = device.encrypt_context(rng.integers(2, len(device.vocab), size=device.context))
            sent = time.monotonic()
            try:
                r = http.post(
                    f"/v1/sessions/{device.session_id}/predict", content=query, headers=device._auth()
                )
            except httpx.HTTPError:
                out.append(_Answer(sent, time.monotonic(), 0, False, False))
                continue
            is_json = r.headers.get("content-type", "").startswith("application/json")
            out.append(_Answer(sent, time.monotonic(), r.status_code, is_json, "retry-after" in r.headers))
            if r.status_code == 200:
                device.secret.decrypt_logits(r.content, len(device.vocab))  # the answer is usable
    finally:
        device.close()
        http.close()


def _summary(
    answers: list[_Answer], start: float, kill_at: float, end: float, recovered: float | None
) -> dict:
    before = [a for a in answers if a.done < kill_at]
    after = [a for a in answers if a.done >= kill_at]
    failed = [a for a in after if a.status != 200]
    ok_times = sorted(a.done for a in answers if a.status == 200 and a.done >= kill_at)
    gaps = np.diff([kill_at, *ok_times, end]) if ok_times else [end - kill_at]
    return {
        "requests_before_kill": len(before),
        "failures_before_kill": sum(a.status != 200 for a in before),
        "rate_before_kill_per_s": round(len(before) / (kill_at - start), 3),
        "requests_after_kill": len(after),
        "rate_after_kill_per_s": round(len(after) / (end - kill_at), 3),
        "failed_after_kill": len(failed),
        "failed_503_json_retry_after": sum(
            a.status == 503 and a.json_error and a.retry_after for a in failed
        ),
        "failed_other": sum(not (a.status == 503 and a.json_error and a.retry_after) for a in failed),
        "longest_gap_without_success_s": round(float(max(gaps)), 3),
        "worker_back_after_s": None if recovered is None else round(recovered - kill_at, 3),
    }


def run_failover_bench(release: Path, seconds: float = 15.0, devices: int = 2, workers: int = 2) -> dict:
    """Start the server, load it, kill one worker, measure; returns the JSON-able result."""
    with tempfile.TemporaryDirectory(prefix="hushtype-failover-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(
            release,
            Path(tmp) / "s.db",
            port,
            workers,
            Path(tmp) / "serve.log",
            allow_non_private=True,  # a measurement of the serving path, not a release to users
        )
        try:
            health = wait_healthy(url, server, timeout=180)
            victim = health["he_workers"]["pids"][0]
            answers: list[_Answer] = []
            start = time.monotonic() + 5.0  # after the sessions are open
            until = start + seconds
            threads = [
                threading.Thread(target=_device_loop, args=(url, until, i, answers)) for i in range(devices)
            ]
            for t in threads:
                t.start()
            time.sleep(max(0.0, start - time.monotonic()) + seconds / 3)
            kill_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            recovered = None
            while time.monotonic() < until + 30 and recovered is None:
                h = httpx.get(f"{url}/healthz", timeout=10).json()
                if h["status"] == "ok" and h["he_workers"]["restarts"] >= 1:
                    recovered = time.monotonic()
                time.sleep(0.05)
            for t in threads:
                t.join()
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
        finally:
            stop_server(server)
    restarts = [line for line in metrics.splitlines() if line.startswith("hushtype_worker_restarts_total")]
    return {
        "benchmark": "failover",
        "release": str(release),
        "workers": workers,
        "devices": devices,
        "seconds": seconds,
        **_summary(answers, start, kill_at, until, recovered),
        "server_worker_restarts": float(restarts[0].split()[-1]) if restarts else None,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m hushtype.bench_failover``: prints one JSON object."""
    p = argparse.ArgumentParser(prog="python -m hushtype.bench_failover", description=__doc__.split("\n")[0])
    p.add_argument("--release", required=True, help="release directory to serve")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    result = run_failover_bench(Path(args.release), args.seconds, args.devices, args.workers)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
