"""The serving stack on loopback: a Redis, N ``hushtype serve`` replicas and HAProxy in front of them.

One replica with SQLite (the embedded default) is just ``hushtype serve``. With ``store="redis"`` the
replicas share a ``redis-server`` started from ``deploy/redis.conf`` and sit behind ``haproxy`` started
from ``deploy/haproxy.cfg``; both configs are the repo's own files, rendered only with this run's ports.
Every process runs in its own process group and ``Stack.stop`` ends all of them. Used by
``hushtype loadtest`` and the replica tests.
"""

from __future__ import annotations

import contextlib
import csv
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hushtype.serve_process import free_port, start_server, stop_server, wait_healthy

__all__ = [
    "DEPLOY",
    "Replica",
    "Stack",
    "missing_services",
    "proxy_server_states",
    "render_haproxy_config",
    "start_proxy",
    "start_redis",
    "start_stack",
]

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
REPLICA_HEADER = "X-Hushtype-Replica"


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None
    )


def missing_services(store: str) -> list[str]:
    """Debian packages a stack with this store needs and this machine lacks (scripts/install-services)."""
    if store != "redis":
        return []
    return [name for name in ("redis-server", "haproxy") if _binary(name) is None]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not listening on 127.0.0.1:{port} after {timeout:.0f} s")


def start_redis(workdir: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """``redis-server deploy/redis.conf`` on a loopback port, data in ``workdir``, persistence off."""
    binary = _binary("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run scripts/install-services")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [binary, str(DEPLOY / "redis.conf"), "--port", str(port), "--dir", str(workdir)]
    cmd += ["--appendonly", "no", "--save", "", "--daemonize", "no", "--logfile", str(workdir / "redis.log")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    _wait_port(port, proc, "redis-server")
    return proc, f"redis://127.0.0.1:{port}/0"


def render_haproxy_config(port: int, backends: list[tuple[str, int]], stats_socket: Path) -> str:
    """``deploy/haproxy.cfg`` with this run's frontend port, replicas and stats socket."""
    lines, servers_written = [], False
    for line in (DEPLOY / "haproxy.cfg").read_text().splitlines():
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if stripped.startswith("bind "):
            line = f"{indent}bind 127.0.0.1:{port}"
        elif stripped.startswith("stats socket "):
            line = re.sub(r"stats socket \S+", f"stats socket {stats_socket}", line)
        elif stripped.startswith("server "):
            if servers_written:
                continue
            line = "\n".join(f"{indent}server {name} 127.0.0.1:{p}" for name, p in backends)
            servers_written = True
        lines.append(line)
    if not servers_written:
        raise ValueError("deploy/haproxy.cfg has no `server` line to replace")
    return "\n".join(lines) + "\n"


def start_proxy(
    workdir: Path, backends: list[tuple[str, int]], port: int | None = None
) -> tuple[subprocess.Popen, str, Path]:
    """HAProxy in the foreground with the rendered config; returns (process, url, stats socket)."""
    binary = _binary("haproxy")
    if binary is None:
        raise RuntimeError("haproxy is not installed: run scripts/install-services")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "haproxy.sock"
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(render_haproxy_config(port, backends, sock))
    check = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy rejected {cfg}: {check.stdout}{check.stderr}")
    with open(workdir / "haproxy.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    _wait_port(port, proc, "haproxy")
    return proc, f"http://127.0.0.1:{port}", sock


def proxy_server_states(sock: Path) -> dict[str, str]:
    """Each backend server's state as HAProxy sees it (``UP``, ``DOWN``, ``UP 1/2``...), via ``show stat``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        s.connect(str(sock))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = csv.DictReader(data.decode().lstrip("# ").splitlines())
    return {r["svname"]: r["status"] for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")}


@dataclass
class Replica:
    """One ``hushtype serve`` process."""

    name: str
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stack:
    """What ``start_stack`` started; ``url`` is where clients go (the proxy, or the only replica)."""

    url: str
    store: str
    replicas: list[Replica] = field(default_factory=list)
    redis: subprocess.Popen | None = None
    redis_url: str | None = None
    proxy: subprocess.Popen | None = None
    proxy_socket: Path | None = None

    def wait_proxy_sees(self, states: dict[str, str], timeout: float = 30.0) -> None:
        """Block until HAProxy reports each named server in the given state (``UP`` / ``DOWN``)."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            seen = proxy_server_states(self.proxy_socket)
            if all(seen.get(name, "").split(" ")[0] == want for name, want in states.items()):
                return
            time.sleep(0.2)
        raise TimeoutError(f"haproxy states {seen}, waited for {states}")

    def stop(self) -> None:
        """Stop the proxy, the replicas (whole process groups) and Redis."""
        procs = [self.proxy] if self.proxy else []
        for p in procs:
            stop_server(p, grace=5.0)
        for r in self.replicas:
            stop_server(r.proc)
        if self.redis is not None:
            stop_server(self.redis, grace=5.0)


def start_stack(
    release: Path,
    workdir: Path,
    *,
    replicas: int = 1,
    store: str = "sqlite",
    workers: int = 2,
    plaintext_baseline: bool = False,
    allow_non_private: bool = False,
    startup_timeout: float = 120.0,
) -> Stack:
    """Start the stack (see the module docstring); on any failure, stop what was started and raise.

    ``allow_non_private`` lets the replicas serve a release without user-level DP (a measurement, not a
    release to users). The per-address session-creation limit is lifted: every client of a loopback
    stack is 127.0.0.1.
    """
    if store not in ("sqlite", "redis"):
        raise ValueError(f"store must be 'sqlite' or 'redis', got {store!r}")
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if replicas > 1 and store != "redis":
        raise ValueError("several replicas need a shared store: use store='redis'")
    env = {
        "HUSHTYPE_PLAINTEXT_BASELINE": "1" if plaintext_baseline else "0",
        "HUSHTYPE_SESSION_CREATE_BURST": "100000",  # every simulated device shares 127.0.0.1
    }
    stack = Stack(url="", store=store)
    try:
        if store == "redis":
            stack.redis, stack.redis_url = start_redis(workdir / "redis")
            env["HUSHTYPE_STORE"] = stack.redis_url
        for i in range(1, replicas + 1):
            port = free_port()
            proc = start_server(
                release,
                workdir / "sessions.db",
                port,
                workers,
                workdir / f"r{i}.log",
                allow_non_private=allow_non_private,
                env=env,
            )
            stack.replicas.append(Replica(f"r{i}", port, proc))
        for r in stack.replicas:
            wait_healthy(r.url, r.proc, timeout=startup_timeout)
        if store == "redis":
            backends = [(r.name, r.port) for r in stack.replicas]
            stack.proxy, stack.url, stack.proxy_socket = start_proxy(workdir / "proxy", backends)
            stack.wait_proxy_sees({r.name: "UP" for r in stack.replicas})
            httpx.get(f"{stack.url}/healthz", timeout=10.0).raise_for_status()
        else:
            stack.url = stack.replicas[0].url
    except BaseException:
        stack.stop()
        raise
    return stack
