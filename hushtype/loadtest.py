"""``hushtype loadtest``: the serving stack on loopback, locust headless, one JSON object.

Starts the stack (``hushtype.stack``: one replica with SQLite by default; ``--replicas N --store redis``
puts N replicas on one Redis behind HAProxy), with the plaintext baseline route on. Runs
``loadtests/locustfile_keyboard.py``: N encrypted keyboard users and N plaintext keyboard users at the
same typing cadence, in the same run against the same servers. Stops by itself, writes locust's CSV and
HTML reports, stops the stack and returns the summary. ``--shape ramp`` steps the users up
(``loadtests/shape_ramp.py``) and reports the knee: the highest encrypted predict rate seen while its
p95 stayed within ``p95_target_ms``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hushtype.stack import missing_services, start_stack

__all__ = ["LoadConfig", "read_stats", "run_loadtest", "knee"]

LOADTESTS = Path(__file__).resolve().parents[1] / "loadtests"
ENCRYPTED_NAME = "POST /v1/sessions/{id}/predict"
PLAINTEXT_NAME = "POST /v1/baseline/predict"
RAMP_SECONDS = 90.0  # length of loadtests/shape_ramp.py's stages at time scale 1


@dataclass
class LoadConfig:
    """One load run; every field is a ``hushtype loadtest`` flag."""

    release: Path
    users: int = 2  # per class: N encrypted + N plaintext keyboard users
    seconds: int = 20
    replicas: int = 1
    store: str = "sqlite"
    workers: int | None = None  # HE workers per replica (default: 2 for one replica, else 1)
    shape: str = "constant"
    think_seconds: float = 0.3
    device_pool: int = 4
    p95_target_ms: float = 250.0
    out: Path | None = None
    startup_timeout: float = 120.0
    kill_replica_after: float | None = None  # SIGKILL replica r1 this many seconds into the run

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag that is wrong."""
        if not (self.release / "model_card.json").is_file():
            raise ValueError(f"--release: {self.release} is not a release directory (no model_card.json)")
        for name in ("users", "seconds", "replicas", "device_pool"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.store not in ("sqlite", "redis"):
            raise ValueError(f"--store must be sqlite or redis, got {self.store!r}")
        if self.replicas > 1 and self.store != "redis":
            raise ValueError("--replicas > 1 needs a shared session store: add --store redis")
        if self.shape not in ("constant", "ramp"):
            raise ValueError(f"--shape must be constant or ramp, got {self.shape!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.kill_replica_after is not None and (self.replicas < 2 or self.kill_replica_after <= 0):
            raise ValueError("--kill-replica-after needs --replicas >= 2 and a time > 0")
        if self.think_seconds < 0:
            raise ValueError(f"--think-seconds must be >= 0, got {self.think_seconds}")
        missing = missing_services(self.store)
        if missing:
            raise ValueError(f"--store {self.store} needs {', '.join(missing)}: run scripts/install-services")


def read_stats(path: Path) -> dict[str, dict]:
    """``PREFIX_stats.csv`` rows keyed by ``"METHOD NAME"`` (the total row is ``"Aggregated"``)."""
    with open(path, newline="") as f:
        return {f"{row['Type']} {row['Name']}".strip(): row for row in csv.DictReader(f)}


def _number(row: dict | None, key: str) -> float | None:
    value = (row or {}).get(key, "N/A")
    return None if value in ("", "N/A", None) else float(value)


def _path_summary(row: dict | None, prefix: str = "") -> dict:
    rps = _number(row, "Requests/s")
    return {
        f"{prefix}rps": round(rps, 3) if rps is not None else 0.0,
        f"{prefix}p50_ms": _number(row, "50%"),
        f"{prefix}p95_ms": _number(row, "95%"),
        f"{prefix}p99_ms": _number(row, "99%"),
        f"{prefix}failures": int(_number(row, "Failure Count") or 0),
    }


def knee(history_csv: Path, name: str, p95_target_ms: float) -> dict:
    """The highest current rate of ``name`` in ``PREFIX_stats_history.csv`` at p95 <= the target."""
    best = {"knee_rps": None, "knee_users": None, "knee_p95_ms": None}
    with open(history_csv, newline="") as f:
        for row in csv.DictReader(f):
            if f"{row['Type']} {row['Name']}" != name:
                continue
            rps, p95 = _number(row, "Requests/s"), _number(row, "95%")
            if rps and p95 is not None and p95 <= p95_target_ms and rps > (best["knee_rps"] or 0.0):
                users = int(row["User Count"]) // 2  # both classes, weight 1 each
                best = {"knee_rps": round(rps, 3), "knee_users": users, "knee_p95_ms": p95}
    return best


def _locust_cmd(cfg: LoadConfig, url: str, prefix: Path, counts: Path) -> list[str]:
    files = str(LOADTESTS / "locustfile_keyboard.py")
    run_time = cfg.seconds
    if cfg.shape == "ramp":
        files += f",{LOADTESTS / 'shape_ramp.py'}"
        run_time += 5  # the shape ends the run; -t only caps it
    users = 2 * cfg.users
    cmd = [sys.executable, "-m", "locust", "-f", files, "--headless", "-u", str(users), "-r", str(users)]
    cmd += ["-t", f"{run_time}s", "--host", url, "--csv", str(prefix), "--csv-full-history"]
    cmd += ["--html", f"{prefix}_report.html", "--only-summary", "--loglevel", "WARNING"]
    cmd += ["--device-pool", str(cfg.device_pool), "--think-seconds", str(cfg.think_seconds)]
    cmd += ["--release", str(cfg.release.resolve())]  # the verifier's reference logits (the head)
    return cmd + ["--counts-file", str(counts)]


def _run_locust(cfg: LoadConfig, url: str, prefix: Path) -> dict:
    counts = prefix.parent / "counts.json"
    env = dict(os.environ)
    if cfg.shape == "ramp":
        env["HUSHTYPE_RAMP_PEAK"] = str(2 * cfg.users)
        env["HUSHTYPE_RAMP_TIME_SCALE"] = str(cfg.seconds / RAMP_SECONDS)
    timeout = cfg.seconds + cfg.startup_timeout + 120
    done = subprocess.run(
        _locust_cmd(cfg, url, prefix, counts), capture_output=True, text=True, env=env, timeout=timeout
    )
    stats_file = Path(f"{prefix}_stats.csv")
    if not stats_file.is_file():
        raise RuntimeError(
            f"locust wrote no {stats_file.name} (exit {done.returncode}):\n{done.stderr[-2000:]}"
        )
    return {
        "stats": read_stats(stats_file),
        "counts": json.loads(counts.read_text()) if counts.is_file() else {},
    }


def _replica_killer(stack, after: float | None, history: Path) -> threading.Event | None:
    """SIGKILL the first replica's process group (a crash, requests in flight) ``after`` seconds into
    locust's run (its clock starts when it opens ``history``, after the key pool is built). Setting
    the returned event calls the kill off."""
    if after is None:
        return None
    cancel = threading.Event()

    def kill() -> None:
        while not history.exists():
            if cancel.wait(0.2):
                return
        if cancel.wait(after):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(stack.replicas[0].proc.pid, signal.SIGKILL)
        print(
            f"[loadtest] killed replica {stack.replicas[0].name} at {after:g} s", file=sys.stderr, flush=True
        )

    threading.Thread(target=kill, daemon=True).start()
    return cancel


def run_loadtest(cfg: LoadConfig) -> dict:
    """Stack up, locust, stack down; the summary (exactly the issue's fields, plus the knee with a ramp)."""
    cfg.validate()
    workers = cfg.workers or (2 if cfg.replicas == 1 else 1)
    out = cfg.out or Path("runs") / "loadtest" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    prefix = out.resolve() / "locust"
    with tempfile.TemporaryDirectory(prefix="hushtype-loadtest-") as tmp:
        stack = start_stack(
            cfg.release.resolve(),
            Path(tmp),
            replicas=cfg.replicas,
            store=cfg.store,
            workers=workers,
            plaintext_baseline=True,
            allow_non_private=True,  # a load test measures whatever release it is given, DP or not
            startup_timeout=cfg.startup_timeout,
        )
        history = Path(f"{prefix}_stats_history.csv")
        history.unlink(missing_ok=True)
        cancel_kill = _replica_killer(stack, cfg.kill_replica_after, history)
        try:
            result = _run_locust(cfg, stack.url, prefix)
        finally:
            if cancel_kill is not None:
                cancel_kill.set()
            stack.stop()
    stats = result["stats"]
    encrypted = _path_summary(stats.get(ENCRYPTED_NAME))
    plaintext = _path_summary(stats.get(PLAINTEXT_NAME), "plaintext_")
    total_failures = int(_number(stats.get("Aggregated"), "Failure Count") or 0)
    encrypted["failures"] = total_failures - plaintext["plaintext_failures"]  # sessions, card, health too
    ratio = encrypted["rps"] / plaintext["plaintext_rps"] if plaintext["plaintext_rps"] else None
    summary = {
        **encrypted,
        **plaintext,
        "rps_ratio": round(ratio, 3) if ratio is not None else None,
        "users": cfg.users,
        "replicas": cfg.replicas,
        "store": cfg.store,
        "cross_replica_predictions": int(result["counts"].get("cross_replica_predictions", 0)),
    }
    if cfg.kill_replica_after is not None:
        summary["replica_killed_at_s"] = cfg.kill_replica_after
    if cfg.shape == "ramp":
        summary.update(knee(Path(f"{prefix}_stats_history.csv"), ENCRYPTED_NAME, cfg.p95_target_ms))
    print(f"[loadtest] reports: {prefix}_stats.csv, {prefix}_report.html", file=sys.stderr, flush=True)
    return summary
