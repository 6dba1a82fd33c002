"""Two ``hushtype serve`` replicas sharing a real Redis behind a real HAProxy (``deploy/``).

A session made through one replica predicts through the other; a replica killed (SIGKILL, no
graceful shutdown) in the middle of a load loses no session and, thanks to the proxy's health checks
and L7 retries and the client asking once more when a reply breaks off mid-body, no request.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from hushtype.stack import REPLICA_HEADER, Stack, missing_services, render_haproxy_config, start_stack
from keyboard_sim.api_client import PredictionClient
from models.nplm import plaintext_logits
from models.release import load_release

_MISSING = ", ".join(missing_services("redis"))
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason=f"{_MISSING} not installed (scripts/install-services needs root and apt)"
)


def test_rendered_haproxy_config_keeps_the_repo_file_and_swaps_only_ports(tmp_path: Path) -> None:
    cfg = render_haproxy_config(9100, [("r1", 9101), ("r2", 9102), ("r3", 9103)], tmp_path / "s.sock")
    assert "bind 127.0.0.1:9100" in cfg and cfg.count("server r") == 3 and "127.0.0.1:9103" in cfg
    assert "127.0.0.1:8001" not in cfg and f"stats socket {tmp_path / 's.sock'}" in cfg
    for kept in ("option httpchk", "uri /healthz", "retry-on conn-failure empty-response", "tune.bufsize"):
        assert kept in cfg


def _predict(http: httpx.Client, device: PredictionClient, query: bytes) -> tuple[np.ndarray, str]:
    r = device.predict(query, http=http)
    return device.secret.decrypt_logits(r.content, len(device.vocab)), r.headers.get(REPLICA_HEADER, "")


def test_sessions_cross_replicas_and_survive_a_replica_killed_under_load(
    http_release: Path, tmp_path: Path
) -> None:
    weights = load_release(http_release).weights
    ids = np.array([5, 6, 7, 8])
    expected = plaintext_logits(weights, ids)
    stack: Stack = start_stack(
        http_release, tmp_path, replicas=2, store="redis", workers=1, allow_non_private=True
    )
    clients: list[httpx.Client] = []
    try:
        r1, r2 = stack.replicas
        # made on r1, used on r2: keys and token come from Redis
        on_r1 = PredictionClient(r1.url).open()
        clients.append(on_r1.http)
        via_r2 = httpx.Client(base_url=r2.url, timeout=60.0)
        clients.append(via_r2)
        z, _ = _predict(via_r2, on_r1, on_r1.encrypt_context(ids))
        np.testing.assert_allclose(z, expected, atol=5e-3)

        # devices through the proxy; their sessions land on both replicas
        proxy = httpx.Client(base_url=stack.url, timeout=60.0)
        clients.append(proxy)
        devices = [on_r1] + [PredictionClient(stack.url, http=proxy).open() for _ in range(3)]
        queries = [d.encrypt_context(ids) for d in devices]
        served: Counter = Counter()
        errors: list[str] = []
        stop = threading.Event()

        def typing(i: int) -> None:
            with httpx.Client(base_url=stack.url, timeout=60.0) as http:
                while not stop.is_set():
                    try:
                        z, replica = _predict(http, devices[i], queries[i])
                        served[(replica, time.monotonic() > killed_at[0])] += 1
                        if np.max(np.abs(z - expected)) > 5e-3:
                            errors.append(f"device {i}: wrong logits from {replica}")
                    except httpx.HTTPError as exc:
                        errors.append(f"device {i}: {exc!r}")
                    time.sleep(0.05)

        killed_at = [float("inf")]
        threads = [threading.Thread(target=typing, args=(i,)) for i in range(len(devices))]
        for t in threads:
            t.start()
        time.sleep(2.0)
        killed_at[0] = time.monotonic()
        os.killpg(r1.proc.pid, signal.SIGKILL)  # a crash: no graceful shutdown, requests in flight
        r1.proc.wait(timeout=10)
        stack.wait_proxy_sees({"r1": "DOWN", "r2": "UP"}, timeout=15)
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(timeout=60)

        assert errors == [], errors[:5]
        assert served[("r1", False)] > 0 and served[("r2", False)] > 0  # both served before the kill
        assert served[("r2", True)] > 0
        # every session, including the one created on the dead replica, still predicts correctly
        for d in devices:
            z, replica = _predict(proxy, d, d.encrypt_context(ids))
            assert replica == "r2"
            np.testing.assert_allclose(z, expected, atol=5e-3)
        assert proxy.get("/healthz").json()["sessions"] == len(devices)
    finally:
        for c in clients:
            c.close()
        stack.stop()
