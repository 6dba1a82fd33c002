"""``hushtype serve`` as a child process: start it on a free port, wait until healthy, stop it whole.

Used by the demo and by ``loadtests/run_load.py``. The server runs in its own process group, so
stopping it also stops its HE worker processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["free_port", "start_server", "wait_healthy", "stop_server"]


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    release: Path,
    db: Path,
    port: int,
    workers: int,
    log: Path | None = None,
    *,
    allow_non_private: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """``hushtype serve`` in its own process group; its output goes to ``log`` (default: this terminal).

    ``allow_non_private`` passes ``--allow-non-private`` (a release without user-level DP is refused
    otherwise); ``env`` adds ``HUSHTYPE_*`` settings to the server's environment, e.g.
    ``{"HUSHTYPE_STORE": "redis://127.0.0.1:6390/0"}``.
    """
    cmd = [
        sys.executable,
        "-m",
        "hushtype.cli",
        "serve",
        "--release",
        str(release),
        "--db",
        str(db),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if allow_non_private:
        cmd.append("--allow-non-private")
    full_env = {**os.environ, **(env or {})}
    if log is None:
        return subprocess.Popen(cmd, start_new_session=True, env=full_env)
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=full_env
        )


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    """Poll ``/healthz`` until it answers 200; raise if the server exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before becoming healthy")
        try:
            r = httpx.get(f"{url}/healthz", timeout=2.0)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server at {url} not healthy after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it has not exited within ``grace``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):  # HE workers left behind in the group, if any
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
