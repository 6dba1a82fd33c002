"""Process failures of the real server: ``hushtype serve`` as a subprocess over real HTTP, real kills.

- ``kill -9`` of one HE worker: later predictions succeed, the worker is replaced within 5 s, and
  ``/healthz`` and ``/metrics`` say so.
- ``kill -9`` of the server: no worker process is left alive 5 s later.
- a worker killed or hung while it holds a request: that request fails with ``WorkerLost`` (503), the
  next one succeeds.
- a client creating sessions as fast as it can does not stop a second client from creating one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from hushtype.serve_process import free_port, start_server, stop_server, wait_healthy
from keyboard_sim.api_client import PredictionClient
from models.nplm import plaintext_logits
from models.release import load_release
from server.api.he_service import HEService, WorkerLost, _ping, _sleep

OCTETS = {"Content-Type": "application/octet-stream"}


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc), zombies excluded."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(
    small_release: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """A real ``hushtype serve`` with 2 HE workers and the default per-client creation limit (burst 5)."""
    tmp = tmp_path_factory.mktemp("reliable")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(small_release, tmp / "s.db", port, 2, tmp / "serve.log", allow_non_private=True)
    try:
        wait_healthy(url, proc, timeout=90)
        yield url, proc, tmp / "serve.log"
    finally:
        stop_server(proc)


def test_killed_worker_is_replaced_and_predictions_go_on(server, small_release: Path) -> None:
    url, _, log = server
    weights = load_release(small_release).weights
    device = PredictionClient(url, http=httpx.Client(base_url=url, timeout=30.0)).open()
    try:
        ids = np.array([5, 6, 7, 8])
        np.testing.assert_allclose(device.logits(ids), plaintext_logits(weights, ids), atol=5e-3)
        before = httpx.get(f"{url}/healthz").json()["he_workers"]
        assert before["alive"] == 2 and before["restarts"] == 0
        for pid in before["pids"]:  # pure compute: workers never open the session store
            files = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            assert not [f for f in files if "s.db" in f], files
        victim = before["pids"][0]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        while _alive(victim):  # the kernel has finished it (a request it held would fail: next test)
            assert time.monotonic() - killed < 2.0
            time.sleep(0.01)
        # every prediction after the death succeeds: the dead idle worker is never handed a request
        for _ in range(4):
            np.testing.assert_allclose(device.logits(ids), plaintext_logits(weights, ids), atol=5e-3)
        while True:
            health = httpx.get(f"{url}/healthz").json()
            if health["status"] == "ok" and health["he_workers"]["restarts"] == 1:
                break
            assert time.monotonic() - killed < 5.0, f"worker not replaced within 5 s: {health}"
            time.sleep(0.1)
        assert victim not in health["he_workers"]["pids"] and len(health["he_workers"]["pids"]) == 2
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert "hushtype_worker_restarts_total 1.0" in httpx.get(f"{url}/metrics").text
        assert f"HE worker 0 (pid {victim}) lost" in log.read_text()  # the operator's log says so
    finally:
        device.close()
        device.http.close()


def test_a_flooding_client_does_not_lock_out_another(server, small_release: Path) -> None:
    url, _, _ = server
    keys = PredictionClient(url).eval_keys  # valid evaluation keys to upload
    flooder = httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    other = httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.3"))
    try:
        codes = [flooder.post("/v1/sessions", content=keys, headers=OCTETS) for _ in range(8)]
        assert [r.status_code for r in codes] == [201] * 5 + [429] * 3  # burst 5, then refused
        refused = codes[-1]
        assert int(refused.headers["retry-after"]) >= 1
        assert "too many sessions" in refused.json()["detail"] and refused.json()["request_id"]
        r = other.post("/v1/sessions", content=keys, headers=OCTETS)
        assert r.status_code == 201, r.text
    finally:
        flooder.close()
        other.close()


def test_worker_killed_or_hung_mid_request_fails_only_that_request(small_release: Path) -> None:
    async def scenario() -> None:
        he = HEService(str(small_release), workers=1, request_timeout=1.0, queue_timeout=20.0)
        await he.start()
        try:
            # killed while holding a request
            pid = he.health()["pids"][0]
            held = asyncio.ensure_future(he._run(_sleep, 10.0))
            await asyncio.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(WorkerLost, match="died"):
                await held
            assert await he._run(_ping) != pid  # the next request runs on the replacement
            # hung past the deadline: killed, replaced
            pid = he.health()["pids"][0]
            with pytest.raises(WorkerLost, match="deadline"):
                await he._run(_sleep, 10.0)
            assert await he._run(_ping) != pid and he.restarts == 2
            # a caller that gives up does not free the worker early: the next request waits for it
            abandoned = asyncio.ensure_future(he._run(_sleep, 0.8))
            await asyncio.sleep(0.2)
            abandoned.cancel()
            started = time.monotonic()
            assert await he._run(_ping) == he.health()["pids"][0]
            assert time.monotonic() - started > 0.4 and he.restarts == 2
        finally:
            he.close()

    asyncio.run(scenario())


def test_sigkill_of_the_server_leaves_no_worker(server) -> None:
    # last test of the module: it kills the shared server
    url, proc, _ = server
    health = httpx.get(f"{url}/healthz").json()
    workers = set(health["he_workers"]["pids"])
    family = _descendants(proc.pid)
    assert len(workers) == 2 and workers <= family
    os.kill(proc.pid, signal.SIGKILL)  # the server only, not its process group
    proc.wait(timeout=10)
    killed = time.monotonic()
    while any(_alive(p) for p in family) and time.monotonic() - killed < 5.0:
        time.sleep(0.1)
    assert not [p for p in family if _alive(p)], "processes of the killed server still alive after 5 s"
