"""The real server over real HTTP: ``hushtype serve`` as a subprocess, the CLI client, a crash and restart,
and (slow) a short locust run through ``loadtests/run_load.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import numpy as np
import pytest

from keyboard_sim.api_client import PredictionClient
from models.nplm import plaintext_logits
from models.release import load_release
from tests.conftest import WORDS


def _crash(proc: subprocess.Popen) -> None:
    """SIGKILL the server's whole process group (uvicorn and its HE workers): no graceful shutdown."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_cli_predict_and_session_survives_server_crash(
    http_release: Path, tmp_path: Path, run_load: ModuleType
) -> None:
    db, port = tmp_path / "sessions.db", run_load.free_port()
    url = f"http://127.0.0.1:{port}"
    weights = load_release(http_release).weights
    device: PredictionClient | None = None
    server = run_load.start_server(
        http_release, db, port, 1, tmp_path / "serve-1.log", allow_non_private=True
    )
    try:
        run_load.wait_healthy(url, server, timeout=180)
        # the console client, end to end: keys, encrypted query, decrypted top-3
        history = tmp_path / "my_messages.txt"
        history.write_text("w3 w4 w5 w20\nw20 w21\n")
        cmd = [sys.executable, "-m", "hushtype.cli", "predict", "--server", url, "--json", "w3 w4 w5"]
        cmd += ["--history", str(history)]  # fitted on this machine, uploaded encrypted
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        lines = [line for line in out.stdout.splitlines() if line.strip()]
        assert len(lines) == 1
        result = json.loads(lines[0])
        suggestions = result["suggestions"]
        assert len(suggestions) == 3
        probabilities = [s["probability"] for s in suggestions]
        assert all(0.0 < p <= 1.0 for p in probabilities)
        assert probabilities == sorted(probabilities, reverse=True)
        assert {s["word"] for s in suggestions} <= set(WORDS[2:])  # never <unk> or <s>
        assert result["bytes_sent"] > 0 and result["bytes_received"] > 0
        assert result["personalized"]["examples"] == 6 and result["personalized"]["adapter_bytes"] > 0
        bad = subprocess.run([*cmd[:-1], str(tmp_path / "missing.txt")], capture_output=True, text=True)
        assert bad.returncode == 2 and "cannot read --history" in bad.stderr
        digits = subprocess.run([*cmd[:-2], "--typed", "w3"], capture_output=True, text=True, timeout=180)
        assert digits.returncode == 2 and "no key" in digits.stderr  # this keyboard has no digit keys

        # a device's session with an encrypted adapter, over real HTTP
        device = PredictionClient(url, http=httpx.Client(base_url=url, timeout=180.0)).open()
        bias = np.zeros(64)
        bias[17] = 25.0
        device.upload_personalization(bias)
        ids = np.array([5, 6, 7, 8])
        np.testing.assert_allclose(device.logits(ids), plaintext_logits(weights, ids, bias), atol=5e-3)

        _crash(server)
        with pytest.raises(httpx.TransportError):
            device.logits(ids)
        server = run_load.start_server(
            http_release, db, port, 1, tmp_path / "serve-2.log", allow_non_private=True
        )
        health = run_load.wait_healthy(url, server, timeout=180)
        assert health["sessions"] == 1  # the CLI deleted its session; the device's is still stored

        # same session, same token, same adapter: the restarted server reads them back from SQLite
        ids = np.array([9, 10, 11, 12])
        np.testing.assert_allclose(device.logits(ids), plaintext_logits(weights, ids, bias), atol=5e-3)
        assert device.suggest("w3 w4 w5")[0].word == "w15"
        device.close()
        device = None
        assert httpx.get(f"{url}/healthz").json()["sessions"] == 0
    finally:
        if device is not None:
            device.http.close()
        run_load.stop_server(server)


@pytest.mark.slow
def test_locust_smoke_run_has_no_failures(http_release: Path) -> None:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve().parents[2] / "loadtests" / "run_load.py"),
        "--release",
        str(http_release),
        "--seconds",
        "10",
        "--users",
        "2",
        "--workers",
        "1",
        "--device-pool",
        "2",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)  # run_load bounds its children
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, out.stdout
    result = json.loads(lines[0])
    assert result["failures"] == 0, result["failure_samples"]
    assert result["predict"]["requests"] > 0 and result["predict"]["failures"] == 0
    assert result["sessions"]["requests"] == 2
    assert result["server"]["predictions"] >= result["predict"]["requests"]
    assert result["server"]["predict_rejected"] == 0
