"""The federation on Flower's deployment engine: a SuperLink and N SuperNodes as separate processes.

Same ServerApp and ClientApps as the simulation (``[tool.flwr.app.components]``: HE aggregation, DP),
but every device is its own ``flower-supernode`` process that dials the SuperLink's Fleet API, as a
phone would. On loopback, with what Flower 1.42 offers on this path:

- **TLS**: a throwaway CA signs the SuperLink's certificate (127.0.0.1); SuperNodes and ``flwr`` trust
  only that CA (``--root-certificates``).
- **SuperNode authentication**: the SuperLink runs with ``--enable-supernode-auth``; each SuperNode has
  its own EC (secp384r1) key pair (OpenSSH format) whose public key is registered with
  ``flwr supernode register`` before it connects; an unregistered node is refused.
- No runtime dependency installation (``--disable-runtime-dependency-installation``: Flower would
  ``uv sync`` a CUDA torch otherwise).

``run_deployment`` starts everything, runs ``flwr run . <connection> --stream``, asks the SuperLink how
the run ended, stops every process it started and returns a summary. ``scripts/flwr-deploy`` wraps it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hushtype.serve_process import free_port, stop_server
from hushtype.stack import _wait_port

__all__ = ["make_credentials", "run_deployment", "main"]

ROOT = Path(__file__).resolve().parents[1]
CONNECTION = "hushtype-deploy"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_credentials(out: Path, supernodes: int) -> dict[str, Path]:
    """A CA, the SuperLink's certificate for 127.0.0.1, one EC key pair per SuperNode and one spare."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = _cert("hushtype test CA", ca_key, "hushtype test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = _cert("127.0.0.1", server_key, "hushtype test CA", ca_key, ca=False)
    files = {"ca": out / "ca.crt", "cert": out / "server.pem", "key": out / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(_pem_key(server_key))
    for i in range(supernodes + 1):  # the last pair is never registered (the refused node)
        key = ec.generate_private_key(ec.SECP384R1())
        files[f"node{i}.key"] = out / f"node{i}.key"
        files[f"node{i}.pub"] = out / f"node{i}.pub"
        files[f"node{i}.key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
        )
        files[f"node{i}.pub"].write_bytes(
            key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        )
    return files


def _spawn(cmd: list[str], log: Path, env: dict, cwd: Path | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )


def _supernode(i: int, n: int, port: int, creds: dict, work: Path, env: dict) -> subprocess.Popen:
    cmd = ["flower-supernode", "--superlink", f"127.0.0.1:{port}", "--root-certificates", str(creds["ca"])]
    cmd += ["--auth-supernode-private-key", str(creds[f"node{i}.key"])]
    cmd += ["--auth-supernode-public-key", str(creds[f"node{i}.pub"])]
    cmd += ["--node-config", f"partition-id={i} num-partitions={n}", "--port", str(free_port())]
    cmd += ["--max-retries", "3", "--max-wait-time", "20"]
    return _spawn(cmd, work / f"supernode{i}.log", env)


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (Flower's SuperExec starts its own session, so killing the
    SuperLink's process group alone leaves the SuperExec and the ServerApp behind)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _stop_tree(proc: subprocess.Popen) -> None:
    """Stop ``proc`` (its process group, gracefully first) and then kill whatever it had started."""
    tree = _tree(proc.pid)
    stop_server(proc, grace=10.0)
    for pid in tree[1:]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _flwr(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["flwr", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def run_deployment(supernodes: int, run_config: str, work: Path, timeout: float = 900.0) -> dict:
    """SuperLink + ``supernodes`` SuperNodes (TLS, node auth), one ``flwr run``; everything stopped after."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env["FLWR_HOME"] = str(work / "flwr-home")
    Path(env["FLWR_HOME"]).mkdir(parents=True, exist_ok=True)
    creds = make_credentials(work / "credentials", supernodes)
    port = free_port()
    (Path(env["FLWR_HOME"]) / "config.toml").write_text(
        f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{port}"\nroot-certificates = "{creds["ca"]}"\n'
    )
    link_cmd = [
        "flower-superlink",
        "--ssl-ca-certfile",
        str(creds["ca"]),
        "--ssl-certfile",
        str(creds["cert"]),
    ]
    link_cmd += ["--ssl-keyfile", str(creds["key"]), "--enable-supernode-auth", "--isolation", "subprocess"]
    link_cmd += ["--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(port)]
    started = time.monotonic()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_spawn(link_cmd, work / "superlink.log", env, cwd=work))
        _wait_port(port, procs[0], "flower-superlink", timeout=60)
        for i in range(supernodes):
            reg = _flwr(["supernode", "register", str(creds[f"node{i}.pub"]), CONNECTION], env, 60)
            if reg.returncode != 0:
                raise RuntimeError(f"flwr supernode register failed: {reg.stdout[-800:]}{reg.stderr[-800:]}")
        procs += [_supernode(i, supernodes, port, creds, work, env) for i in range(supernodes)]
        intruder = _supernode(supernodes, supernodes, port, creds, work, env)  # key never registered
        procs.append(intruder)
        run = _flwr(["run", ".", CONNECTION, "--stream", "--run-config", run_config], env, timeout)
        (work / "flwr-run.out").write_text(run.stdout + run.stderr)
        match = re.search(r"Successfully started run (\d+)", run.stdout + run.stderr)
        if match is None:
            raise RuntimeError(f"flwr run started no run:\n{(run.stdout + run.stderr)[-2000:]}")
        listed = _flwr(["list", CONNECTION, "--run-id", match.group(1), "--format", "json"], env, 60)
        info = (json.loads(listed.stdout).get("runs") or [{}])[0]
        nodes = _flwr(["supernode", "list", CONNECTION, "--format", "json"], env, 60)
        intruder_log = (work / f"supernode{supernodes}.log").read_text(errors="replace")
    finally:
        for p in reversed(procs):
            _stop_tree(p)
    return {
        "status": info.get("status"),
        "run_id": match.group(1),
        "supernodes": supernodes,
        "tls": True,
        "supernode_auth": True,
        # a SuperNode the SuperLink accepted logs the id it was given; the unregistered one must not
        "intruder_refused": "SuperNode ID" not in intruder_log,
        "admitted": sum(
            "SuperNode ID" in (work / f"supernode{i}.log").read_text() for i in range(supernodes)
        ),
        "registered_nodes": nodes.stdout.count('"node-id"') if nodes.returncode == 0 else None,
        "network_bytes": (info.get("network-traffic") or {}).get("total-bytes"),
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernodes", type=int, default=2, help="SuperNode processes (= devices)")
    p.add_argument("--run-config", default="", help="extra key=value run config (devices is set for you)")
    p.add_argument("--work", default=None, help="directory for logs, credentials and the run (default: temp)")
    args = p.parse_args(argv)
    if args.supernodes < 1:
        p.error("--supernodes must be >= 1")
    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        config = f"devices={args.supernodes} run-dir='{work / 'run'}' {args.run_config}".strip()
        summary = run_deployment(args.supernodes, config, work.resolve())
    print(json.dumps(summary), flush=True)
    return 0 if summary["status"] == "finished:completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
