"""The simulation attached to a running Ray cluster (`ray start --head` on loopback), not a Ray of its own."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hushtype.simulation import FederationConfig, backend_config, run_federated
from tests.server.test_simulation import _tiny_federation

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_head(temp_dir: Path, port: int) -> subprocess.Popen:
    """``ray start --head --block`` in its own process group (stopped by killing that group)."""
    ray = Path(sys.executable).with_name("ray")
    cmd = [str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    cmd += ["--num-cpus", "2", "--include-dashboard", "false", "--temp-dir", str(temp_dir)]
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _wait_for_port(port: int, head: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited early"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the Ray head did not listen on {port} within {timeout} s")


def test_backend_attaches_without_resource_arguments() -> None:
    local = backend_config(FederationConfig())
    attached = backend_config(FederationConfig(ray_address="127.0.0.1:6379"))
    assert local["init_args"] == {"num_cpus": 2}
    assert attached["init_args"] == {"address": "127.0.0.1:6379"}  # Ray refuses num_cpus when attaching


def test_a_tiny_federation_runs_on_a_ray_cluster(tmp_path: Path) -> None:
    # Prepare: a Ray head on loopback with its own temp dir (short path: Ray's socket names are bounded)
    temp_dir = Path(f"/tmp/ht-ray-{os.getpid()}")
    port = _free_port()
    head = _ray_head(temp_dir, port)
    try:
        _wait_for_port(port, head)
        cfg = FederationConfig(
            **_tiny_federation(tmp_path), run_dir=str(tmp_path / "run"), ray_address=f"127.0.0.1:{port}"
        )
        # Execute
        card = run_federated(cfg)
        # Assert: the run finished, and its devices ran in the cluster's worker processes
        assert card["round"] == 2
        worker_logs = list(temp_dir.glob("session_*/logs/worker-*"))
        assert worker_logs, "no worker of the Ray cluster ran anything"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
