"""HE work for the API, in supervised worker processes (TenSEAL never releases the GIL).

Each worker is its own one-process pool that pre-encodes the circuit (``ckks.nplm_circuit``) once, from
the arrays the main process hands it: the main process loads and checks the release (any model kind,
split or single-file) and passes only what the circuit runs (mode "h": the head ``w2``, ``b2``, ``beta``).
Workers are pure compute: the main process reads the session store and hands them bytes (a query, the
session's encrypted personalization, and the session's evaluation keys the first time a worker meets
the session; each worker keeps parsed keys in an LRU cache).

Supervision: a request waits in the main process for an idle worker, so a worker holds at most one
request. A worker that dies (``kill -9``, a crash in SEAL) or misses the per-request deadline (it is
then killed) fails only the request it held, with ``WorkerLost`` (the API answers 503 + Retry-After);
its pool is replaced in the background and the other workers keep serving. Workers ask the kernel to
kill them when the server process dies (``PR_SET_PDEATHSIG``), so a SIGKILLed server leaves no orphans.

What a worker holds per session: public evaluation keys and ciphertexts. No secret key ever reaches
this process; a query under another session's key is refused by its key id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

__all__ = [
    "HEService",
    "InvalidPayload",
    "WorkerLost",
    "PoolBusy",
    "STATISTICS_SCALE",
    "add_statistics",
    "load_tail",
    "public_parameters",
]

log = logging.getLogger("hushtype.api.he")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_EVAL_KEY_CACHE = 32  # sessions whose parsed eval keys a worker keeps (~6 MB each)
# Scale of a user's adapter statistics (counts): at the logits' level (one 40-bit prime) values up to
# 2^19 fit, to ~1e-4. Not the output scale: the statistics are never added to logits.
STATISTICS_SCALE = 2.0**20


class InvalidPayload(ValueError):
    """A client's bytes were rejected (malformed, wrong parameters, wrong key); the message says why."""


class WorkerLost(RuntimeError):
    """The worker running this request died or missed its deadline; it is being replaced: retry."""


class PoolBusy(RuntimeError):
    """No HE worker became free within the queue deadline: retry later."""


class _KeysNeeded(Exception):
    """Worker -> main process: this worker has no evaluation keys cached for the session; send them."""


# ---------------------------------------------------------------------------------------------------------
# Worker side (runs in the worker processes)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _WorkerState:
    circuit: object
    eval_keys: OrderedDict = field(default_factory=OrderedDict)


_STATE: _WorkerState | None = None


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if the parent is already gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent-pid check below still runs at start-up
        log.warning("PR_SET_PDEATHSIG unavailable: HE workers may outlive a killed server")
    if os.getppid() != parent_pid:  # the parent died between fork and prctl
        os._exit(1)


def _init_worker(weights: dict, mode: str, parent_pid: int) -> None:
    """Per-process start-up: die with the server, pre-encode the circuit of the weights it hands over
    (the main process loaded and checked the release; the worker imports neither torch nor FastAPI)."""
    global _STATE
    _die_with_parent(parent_pid)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ckks.nplm_circuit import EncryptedNPLM

    _STATE = _WorkerState(EncryptedNPLM(weights, mode=mode))


def _state() -> _WorkerState:
    assert _STATE is not None, "worker not initialised"
    return _STATE


def _ping() -> int:
    _state()
    return os.getpid()


def _sleep(seconds: float) -> None:  # tests: a worker that hangs past the deadline
    time.sleep(seconds)


def _check_eval_keys(blob: bytes) -> bytes:
    """Validate evaluation keys for the circuit; returns their key id (the key's fingerprint)."""
    from ckks.session_keys import SessionFormatError

    try:
        return _state().circuit.load_eval_keys(blob).key_id
    except (SessionFormatError, TypeError) as exc:
        raise InvalidPayload(str(exc)) from None


def _eval_keys_for(session_id: str, blob: bytes | None):
    from ckks.session_keys import SessionFormatError

    state = _state()
    keys = state.eval_keys.get(session_id)
    if keys is not None:
        state.eval_keys.move_to_end(session_id)
        return keys
    if blob is None:
        raise _KeysNeeded(session_id)
    try:
        keys = state.circuit.load_eval_keys(blob, require_steps=False)
    except SessionFormatError as exc:  # stored by an older server build or for another circuit
        raise InvalidPayload(f"session {session_id!r} cannot be used, create a new one: {exc}") from None
    state.eval_keys[session_id] = keys
    while len(state.eval_keys) > _EVAL_KEY_CACHE:
        state.eval_keys.popitem(last=False)
    return keys


def load_tail(circuit, blob: bytes, kind: int, key_id: bytes, scale: float):
    """A ciphertext of ``kind`` at ``circuit``'s logits level (tail context, last level) and exactly
    ``scale``, under ``key_id``; ``InvalidPayload`` saying what is wrong otherwise."""
    from ckks.session_keys import SessionFormatError, load_ciphertext

    try:
        ct = load_ciphertext(
            blob, circuit.tail_context, circuit.params, kind, key_id, circuit.output_parms_id
        )
    except (SessionFormatError, TypeError) as exc:
        raise InvalidPayload(str(exc)) from None
    if abs(ct.scale / scale - 1) > 1e-6:
        raise InvalidPayload(f"encrypted at scale {ct.scale:.6g}, expected {scale:.6g} (see GET /v1/model)")
    return ct


def add_statistics(circuit, statistics: bytes | None, increment: bytes, key_id: bytes) -> bytes:
    """A user's encrypted statistics plus a device's encrypted increment: one ciphertext addition.

    What cannot be checked: an increment whose header carries the user's key id but that was encrypted
    under another key adds noise the server cannot see (only the token's holder can send one)."""
    from ckks.session_keys import KIND_STATISTICS, dump_ciphertext

    total = load_tail(circuit, increment, KIND_STATISTICS, key_id, STATISTICS_SCALE)
    if statistics is not None:
        stored = load_tail(circuit, statistics, KIND_STATISTICS, key_id, STATISTICS_SCALE)
        circuit.tail_tools.evaluator.add_inplace(total, stored)
    return dump_ciphertext(total, circuit.params, key_id, KIND_STATISTICS)


def _load_bias(blob: bytes, key_id: bytes):
    from ckks.session_keys import KIND_BIAS

    circuit = _state().circuit
    return load_tail(circuit, blob, KIND_BIAS, key_id, circuit.output_scale)


def _check_adapter(blob: bytes, key_id: bytes) -> None:
    _load_bias(blob, key_id)


def _add_statistics(statistics: bytes | None, increment: bytes, key_id: bytes) -> bytes:
    return add_statistics(_state().circuit, statistics, increment, key_id)


def _check_personalization(session_id: str, eval_keys: bytes | None, blob: bytes) -> None:
    _load_bias(blob, _eval_keys_for(session_id, eval_keys).key_id)


def _predict(session_id: str, eval_keys: bytes | None, query: bytes, personalization: bytes | None) -> bytes:
    from ckks.session_keys import (
        KIND_LOGITS,
        KIND_QUERY,
        SessionFormatError,
        dump_ciphertext,
        load_ciphertext,
    )

    circuit = _state().circuit
    keys = _eval_keys_for(session_id, eval_keys)
    try:
        ct = load_ciphertext(
            query, circuit.context, circuit.params, KIND_QUERY, keys.key_id, circuit.query_parms_id
        )
    except (SessionFormatError, TypeError) as exc:
        raise InvalidPayload(str(exc)) from None
    bias = _load_bias(personalization, keys.key_id) if personalization else None
    try:
        logits = circuit.evaluate(ct, bias, galois_keys=keys.galois_keys, relin_keys=keys.relin_keys)
    except ValueError as exc:  # scale/level checks of the circuit
        raise InvalidPayload(str(exc)) from None
    return dump_ciphertext(logits, circuit.params, keys.key_id, KIND_LOGITS)


def public_parameters(circuit) -> dict:
    """What a device needs to talk to ``circuit``: preset, mode, rotation steps, output scale, shapes."""
    return {
        "mode": circuit.mode,
        "params": circuit.params.to_dict(),
        "rotation_steps": circuit.rotation_steps,
        "rotation_level": circuit.rotation_level,  # Galois keys, logits, bias: chain minus this many primes
        "output_scale": circuit.output_scale,
        "statistics_scale": STATISTICS_SCALE,  # a user's adapter statistics (increments), same level
        "vocab_size": circuit.vocab_size,
        "hidden": circuit.hidden,
        "input_dim": circuit.input_dim,
        "security_bits": 128,
    }


def _public_parameters() -> dict:
    return public_parameters(_state().circuit)


# ---------------------------------------------------------------------------------------------------------
# Main-process side: one supervised single-process pool per worker
# ---------------------------------------------------------------------------------------------------------


def _is_child(pid: int, *, running: bool = False) -> bool:
    """Whether ``pid`` is still a child of this process (not a reaped pid reused by another); with
    ``running``, also not a zombie. Without ``/proc`` (not Linux) every pid counts as a live child."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")
    except OSError:
        return False
    return int(ppid) == os.getpid() and not (running and state in ("Z", "X"))


@dataclass
class _Worker:
    index: int
    pool: ProcessPoolExecutor | None = None
    pid: int | None = None
    alive: bool = False


class HEService:
    """Supervised HE worker processes with async methods for the routers.

    Parameters
    ----------
    release_dir : the release; the workers get only its circuit's arrays (``circuit_weights``).
    workers : number of worker processes (default: 2).
    mode : circuit mode, "h" or "x" (see ``ckks.nplm_circuit``).
    request_timeout : seconds one request may run in a worker before the worker is killed and replaced.
    queue_timeout : seconds a request may wait for an idle worker before ``PoolBusy``.
    on_restart : called once per replaced worker (metrics).
    """

    def __init__(
        self,
        release_dir: str,
        workers: int = 2,
        mode: str = "h",
        *,
        request_timeout: float = 30.0,
        queue_timeout: float = 10.0,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        from ckks.nplm_circuit import circuit_weights
        from models.release import load_release

        release = load_release(release_dir)  # checked against the card's model config (any model kind)
        # the workers get only what the circuit runs: the head (w2, b2, beta) in mode "h"
        self.model_version = release.version
        self._weights = circuit_weights(release.weights, mode)
        self.release_dir, self.mode, self.workers = release_dir, mode, workers
        self.request_timeout, self.queue_timeout = request_timeout, queue_timeout
        self.restarts = 0
        self._on_restart = on_restart
        self._workers = [_Worker(i) for i in range(workers)]
        self._idle: asyncio.Queue[_Worker] | None = None
        self._public: dict | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    # -- pool management -------------------------------------------------------------------------
    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: a clean interpreter per worker (no forked torch/tenseal state, no inherited threads)
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._weights, self.mode, os.getpid()),
        )

    async def _boot(self, worker: _Worker) -> None:
        """Start ``worker``'s process and wait until its circuit is encoded."""
        worker.pool = self._new_pool()
        loop = asyncio.get_running_loop()
        worker.pid = await loop.run_in_executor(worker.pool, _ping)
        worker.alive = True

    async def start(self) -> None:
        """Start every worker (each pre-encodes the circuit) before serving."""
        self._idle = asyncio.Queue()
        try:
            await asyncio.gather(*(self._boot(w) for w in self._workers))
            self._public = await asyncio.get_running_loop().run_in_executor(
                self._workers[0].pool, _public_parameters
            )
        except BrokenProcessPool as exc:
            self.close()
            raise RuntimeError(
                f"HE workers could not load the release into the circuit ({self.release_dir}); "
                "the worker's traceback is in the log above"
            ) from exc
        for worker in self._workers:
            self._idle.put_nowait(worker)

    def _replace(self, worker: _Worker, reason: str) -> None:
        """Kill what is left of ``worker`` and boot a new process for it in the background."""
        worker.alive = False
        if worker.pid is not None and _is_child(worker.pid):  # hung (or half dead): make sure it is gone
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        if worker.pool is not None:
            worker.pool.shutdown(wait=False, cancel_futures=True)
        log.warning("HE worker %d (pid %s) lost: %s; starting a new one", worker.index, worker.pid, reason)
        task = asyncio.get_running_loop().create_task(self._reboot(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reboot(self, worker: _Worker) -> None:
        delay = 0.5
        while not self._closed:
            try:
                await self._boot(worker)
            except Exception as exc:  # noqa: BLE001 - keep trying; the log says why
                log.error("HE worker %d failed to restart (%s); retrying in %.1f s", worker.index, exc, delay)
                if worker.pool is not None:
                    worker.pool.shutdown(wait=False, cancel_futures=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.restarts += 1
            if self._on_restart is not None:
                self._on_restart()
            log.warning("HE worker %d restarted (pid %d)", worker.index, worker.pid)
            assert self._idle is not None
            self._idle.put_nowait(worker)
            return

    # -- running work ----------------------------------------------------------------------------
    async def _idle_worker(self) -> _Worker:
        """The next idle worker whose process is still running (a dead one is replaced, not used)."""
        assert self._idle is not None, "HEService.start() was not awaited"
        deadline = time.monotonic() + self.queue_timeout
        while True:
            try:
                worker = await asyncio.wait_for(self._idle.get(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise PoolBusy(f"no HE worker free within {self.queue_timeout:g} s") from None
            if worker.pid is not None and _is_child(worker.pid, running=True):
                return worker
            self._replace(worker, "found dead while idle")

    async def _run(self, fn: Callable, *args):
        """Run ``fn(*args)`` on an idle worker; ``PoolBusy`` / ``WorkerLost`` when that cannot be done."""
        worker = await self._idle_worker()
        assert worker.pool is not None
        job = asyncio.get_running_loop().run_in_executor(worker.pool, fn, *args)
        try:
            return await self._settle(worker, asyncio.shield(job))
        except asyncio.CancelledError:  # the caller went away; the worker is still busy with the job
            task = asyncio.get_running_loop().create_task(self._settle(worker, job))
            self._tasks.add(task)
            task.add_done_callback(lambda t: (self._tasks.discard(t), t.cancelled() or t.exception()))
            raise

    async def _settle(self, worker: _Worker, job: Awaitable):
        """Await ``job`` within the deadline; give ``worker`` back, or replace it if it died or hung."""
        assert self._idle is not None
        try:
            result = await asyncio.wait_for(job, self.request_timeout)
        except BrokenProcessPool:
            self._replace(worker, "the process died")
            raise WorkerLost("the HE worker running this request died; it is being replaced") from None
        except TimeoutError:
            self._replace(worker, f"no answer within {self.request_timeout:g} s")
            raise WorkerLost(
                f"the HE worker missed the {self.request_timeout:g} s deadline and is being replaced"
            ) from None
        except asyncio.CancelledError:
            raise  # _run hands the job to a new _settle
        except BaseException:
            self._idle.put_nowait(worker)  # the worker is fine: the request itself failed
            raise
        self._idle.put_nowait(worker)
        return result

    async def _run_with_keys(
        self, fn: Callable, session_id: str, load_keys: Callable[[], Awaitable[bytes | None]], *args
    ):
        """Run a session function; hand the worker the session's eval keys only if it lacks them."""
        try:
            return await self._run(fn, session_id, None, *args)
        except _KeysNeeded:
            keys = await load_keys()
            if keys is None:
                raise InvalidPayload(f"unknown session {session_id!r}") from None
            return await self._run(fn, session_id, keys, *args)

    def public_parameters(self) -> dict:
        """HE parameters a device needs (see ``public_parameters``)."""
        assert self._public is not None, "HEService.start() was not awaited"
        return self._public

    def health(self) -> dict:
        """The pool's real state: workers alive, total, restarts so far, their pids."""
        alive = [w for w in self._workers if w.alive]
        return {
            "workers": self.workers,
            "alive": len(alive),
            "restarts": self.restarts,
            "pids": [w.pid for w in alive],
        }

    async def check_eval_keys(self, blob: bytes) -> bytes:
        """Raise ``InvalidPayload`` unless ``blob`` holds valid evaluation keys for the circuit; returns
        their key id."""
        return await self._run(_check_eval_keys, blob)

    async def check_adapter(self, blob: bytes, key_id: bytes) -> None:
        """Raise ``InvalidPayload`` unless ``blob`` is a bias ciphertext under ``key_id``, level and scale."""
        await self._run(_check_adapter, blob, key_id)

    async def add_statistics(self, statistics: bytes | None, increment: bytes, key_id: bytes) -> bytes:
        """``statistics + increment`` under HE (both under ``key_id``); ``InvalidPayload`` if refused."""
        return await self._run(_add_statistics, statistics, increment, key_id)

    async def check_personalization(
        self, session_id: str, blob: bytes, load_keys: Callable[[], Awaitable[bytes | None]]
    ) -> None:
        """Raise ``InvalidPayload`` unless ``blob`` is a bias ciphertext under the session's key and level."""
        await self._run_with_keys(_check_personalization, session_id, load_keys, blob)

    async def predict(
        self,
        session_id: str,
        query: bytes,
        personalization: bytes | None,
        load_keys: Callable[[], Awaitable[bytes | None]],
    ) -> bytes:
        """Encrypted logits (bytes) for an encrypted query of ``session_id`` (+ its encrypted adapter).

        ``load_keys`` fetches the session's evaluation keys, called only when the worker has none cached.
        """
        return await self._run_with_keys(_predict, session_id, load_keys, query, personalization)

    def close(self) -> None:
        """Stop the workers (and any restart in progress)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for worker in self._workers:
            worker.alive = False
            if worker.pool is not None:
                worker.pool.shutdown(wait=True, cancel_futures=True)
