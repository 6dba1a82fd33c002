"""The key authority as its own process, behind a small request/response protocol.

``KeyAuthorityService`` spawns a child process that creates (or loads) the federation key pair and runs
a ``server.key_authority.KeyAuthority``. The object that stays in the caller's process (the aggregator)
is only a handle: a pipe, the child's pid and the *public* context bytes. The secret key exists only in
the child (and, if ``key_path`` is given, in that 0600 file), so nothing the aggregator holds in memory
can open a single device's update.

The child is a fresh interpreter (``python -m server.key_authority_service``, not a fork: the caller may
run Ray/gRPC threads, and nothing of the caller's memory is copied into it). Protocol over its stdin/stdout,
raw frames, never pickle (the authority does not unpickle what the aggregator sends)::

    frame   = u64 len | u32 header len | JSON header | payload bytes
    request = {"op": "public_context"}
            | {"op": "decrypt", "declared": k, "round": t, "declared_total_weight": W} + encrypted sum
            | {"op": "shutdown"}
    reply   = {"status": "ok", ...} + payload   (public context bytes, or the mean as float64)
            | {"status": "refused" | "error", "reason": "..."}

There is deliberately no request that returns the secret key or decrypts anything but an aggregate.
"""

from __future__ import annotations

import json
import logging
import os
import select
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ckks.keys import assert_public_only
from ckks.params import AGGREGATION, HEParams
from server.key_authority import AggregateRefused, AggregateResult

__all__ = ["KeyAuthorityService", "KeyAuthorityUnavailable"]

log = logging.getLogger(__name__)
_FRAME = struct.Struct("<QI")  # total length after this field, header length
MAX_FRAME = 1 << 31  # 2 GiB: far above the largest aggregate (~11 MB for 1.4M parameters)


class KeyAuthorityUnavailable(RuntimeError):
    """The key authority process did not answer (crashed, stopped or timed out)."""


def _write_frame(out: BinaryIO, header: dict[str, object], payload: bytes = b"") -> None:
    head = json.dumps(header).encode()
    out.write(_FRAME.pack(_FRAME.size - 8 + len(head) + len(payload), len(head)) + head + payload)
    out.flush()


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("stream closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: BinaryIO) -> tuple[dict[str, object], bytes]:
    total, head_len = _FRAME.unpack(_read_exact(stream, _FRAME.size))
    body_len = total - (_FRAME.size - 8)
    if not 0 <= head_len <= body_len <= MAX_FRAME:
        raise ValueError(f"bad frame lengths ({total}, {head_len})")
    body = _read_exact(stream, body_len)
    header = json.loads(body[:head_len])
    if not isinstance(header, dict):
        raise ValueError("frame header must be a JSON object")
    return header, body[head_len:]


# ------------------------------------------------------------------------------ the child process
def serve(
    stdin: BinaryIO,
    stdout: BinaryIO,
    *,
    audit_log: str,
    min_clients: int,
    params: dict[str, object],
    key_path: str | None,
    count_tolerance: float,
) -> None:
    """The key authority loop: hold the secret key, answer frames until shutdown or EOF."""
    from ckks.keys import SecretContext
    from server.key_authority import KeyAuthority

    secret = SecretContext.load(key_path) if key_path and Path(key_path).is_file() else None
    authority = KeyAuthority(
        audit_log,
        min_clients=min_clients,
        params=HEParams.from_dict(params),
        secret=secret,
        count_tolerance=count_tolerance,
    )
    if key_path and secret is None:
        authority.save(key_path)
    while True:
        try:
            header, payload = _read_frame(stdin)
        except EOFError:
            return
        except (ValueError, struct.error) as exc:  # a broken frame desynchronises the stream: stop
            _write_frame(stdout, {"status": "error", "reason": f"bad request frame: {exc}"})
            return
        op = header.get("op")
        if op == "shutdown":
            _write_frame(stdout, {"status": "ok"})
            return
        if op == "public_context":
            _write_frame(stdout, {"status": "ok"}, authority.public_context_bytes())
        elif op == "decrypt":
            try:
                weight = header.get("declared_total_weight")
                result = authority.decrypt_aggregate(
                    payload,
                    int(header["declared"]),  # type: ignore[arg-type]
                    server_round=header.get("round"),  # type: ignore[arg-type]
                    declared_total_weight=None if weight is None else float(weight),  # type: ignore[arg-type]
                )
            except AggregateRefused as exc:
                _write_frame(stdout, {"status": "refused", "reason": str(exc)})
            except Exception as exc:  # noqa: BLE001 - the authority answers every request, never dies on one
                _write_frame(stdout, {"status": "error", "reason": f"{type(exc).__name__}: {exc}"})
            else:
                mean = np.ascontiguousarray(result.mean, dtype=np.float64)
                reply = {"status": "ok", "count": result.count, "total_weight": result.total_weight}
                _write_frame(stdout, reply, mean.tobytes())
        else:
            _write_frame(stdout, {"status": "error", "reason": f"unknown request {op!r}"})


def main() -> None:
    """Child entry point: ``python -m server.key_authority_service '<json options>'``."""
    options = json.loads(sys.argv[1])
    protocol_out = os.fdopen(os.dup(1), "wb")  # frames go to the real stdout ...
    os.dup2(2, 1)  # ... and anything a library prints goes to stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    serve(sys.stdin.buffer, protocol_out, **options)


# ------------------------------------------------------------------------------ the aggregator's handle
class KeyAuthorityService:
    """Start a key authority in its own process; this handle decrypts aggregates through it.

    Parameters
    ----------
    audit_log : str | Path
        JSONL audit log the authority appends every request to.
    min_clients : int (default: 2)
        Smallest number of contributions it decrypts.
    params : HEParams (default: ``ckks.params.AGGREGATION``)
        CKKS parameters of a new key pair.
    key_path : str | Path | None (default: None)
        Where the authority keeps its secret context (0600): loaded if present, written if not.
        None keeps the key in the child's memory only (it dies with the process).
    public_context_path : str | Path | None (default: None)
        If given, the public context bytes are written there for devices and operators.
    count_tolerance : float (default: 0.5)
        As for ``KeyAuthority``.
    timeout : float (default: 600.0)
        Seconds to wait for any reply before raising ``KeyAuthorityUnavailable``.
    """

    def __init__(
        self,
        audit_log: str | Path,
        *,
        min_clients: int = 2,
        params: HEParams = AGGREGATION,
        key_path: str | Path | None = None,
        public_context_path: str | Path | None = None,
        count_tolerance: float = 0.5,
        timeout: float = 600.0,
    ) -> None:
        if min_clients < 1:
            raise ValueError(f"min_clients must be at least 1, got {min_clients}.")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}.")
        self.min_clients = min_clients
        self.timeout = timeout
        self.audit_log = Path(audit_log)
        self._lock = threading.Lock()
        options = {
            "audit_log": str(audit_log),
            "min_clients": min_clients,
            "params": params.to_dict(),
            "key_path": None if key_path is None else str(key_path),
            "count_tolerance": count_tolerance,
        }
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [root, env.get("PYTHONPATH", "")] if p)
        self._process = subprocess.Popen(  # a fresh interpreter: no memory shared with this process
            [sys.executable, "-m", "server.key_authority_service", json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        _, blob = self._request({"op": "public_context"})
        self.params = assert_public_only(blob)  # the handle refuses to hold anything but a public context
        self._public_bytes = blob
        self.public_context_path = None if public_context_path is None else Path(public_context_path)
        if self.public_context_path is not None:
            self.public_context_path.parent.mkdir(parents=True, exist_ok=True)
            self.public_context_path.write_bytes(blob)
        log.info("key authority running in process %d (this process: %d)", self.pid, os.getpid())

    @property
    def pid(self) -> int:
        """Process id of the key authority (never this process)."""
        return self._process.pid

    def public_context_bytes(self) -> bytes:
        """The federation public context (params + public key only)."""
        return self._public_bytes

    def decrypt_aggregate(
        self,
        encrypted_sum_bytes: bytes,
        declared_contributions: int,
        *,
        server_round: int | None = None,
        declared_total_weight: float | None = None,
    ) -> AggregateResult:
        """Ask the authority to decrypt an encrypted sum; same contract as ``KeyAuthority.decrypt_aggregate``.

        Raises ``AggregateRefused`` with the authority's reason, ``KeyAuthorityUnavailable`` if it is gone.
        """
        header, payload = self._request(
            {
                "op": "decrypt",
                "declared": int(declared_contributions),
                "round": server_round,
                "declared_total_weight": declared_total_weight,
            },
            bytes(encrypted_sum_bytes),
        )
        return AggregateResult(
            mean=np.frombuffer(payload, dtype=np.float64).copy(),
            count=float(header["count"]),  # type: ignore[arg-type]
            total_weight=float(header["total_weight"]),  # type: ignore[arg-type]
        )

    def _request(self, header: dict[str, object], payload: bytes = b"") -> tuple[dict[str, object], bytes]:
        with self._lock:
            stdin, stdout = self._process.stdin, self._process.stdout
            try:
                if stdin is None or stdout is None or stdin.closed:
                    raise OSError("closed")
                _write_frame(stdin, header, payload)
                ready, _, _ = select.select([stdout], [], [], self.timeout)
                if not ready:
                    raise KeyAuthorityUnavailable(f"no answer from the key authority in {self.timeout:g} s.")
                reply, data = _read_frame(stdout)
            except (EOFError, OSError, ValueError, struct.error) as exc:
                raise KeyAuthorityUnavailable(
                    f"the key authority process is gone ({exc}; exit code {self._process.poll()})."
                ) from exc
        status = reply.get("status")
        if status == "refused":
            raise AggregateRefused(str(reply.get("reason")))
        if status != "ok":
            raise KeyAuthorityUnavailable(f"the key authority failed: {reply.get('reason')}")
        return reply, data

    def close(self) -> None:
        """Stop the authority process (its in-memory secret key goes with it)."""
        if self._process.poll() is None:
            try:
                self._request({"op": "shutdown"})
            except (KeyAuthorityUnavailable, AggregateRefused):
                pass
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.terminate()
                self._process.wait(timeout=5)
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None and not stream.closed:
                stream.close()

    def __enter__(self) -> KeyAuthorityService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main()
