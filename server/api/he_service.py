"""HE work for the API, in worker processes (TenSEAL never releases the GIL).

Each worker process loads the release once and pre-encodes the circuit (``ckks.nplm_circuit``),
then serves requests by session id: it reads the session's evaluation keys from the session store
on first use (cached per worker, LRU) and its encrypted personalization on every request, so a
new adapter applies at once. The event loop only awaits futures.

What a worker holds per session: public evaluation keys and ciphertexts. No secret key ever
reaches this process; a query under another session's key is refused by its key id.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

__all__ = ["HEService", "InvalidPayload", "public_parameters"]


class InvalidPayload(ValueError):
    """A client's bytes were rejected (malformed, wrong parameters, wrong key); the message says why."""


@dataclass
class _WorkerState:
    circuit: object
    store: object
    eval_keys: OrderedDict


_STATE: _WorkerState | None = None
_EVAL_KEY_CACHE = 32  # sessions whose parsed eval keys a worker keeps (~6 MB each)


def _init_worker(release_dir: str, db_path: str, mode: str) -> None:
    """Per-process start-up: load the release, pre-encode the circuit, open the store."""
    global _STATE
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from ckks.nplm_circuit import EncryptedNPLM
    from models.release import load_release
    from server.api.store import open_store

    release = load_release(release_dir)
    _STATE = _WorkerState(EncryptedNPLM(release.weights, mode=mode), open_store(db_path), OrderedDict())


def _state() -> _WorkerState:
    assert _STATE is not None, "worker not initialised"
    return _STATE


def _ping() -> int:
    _state()
    return os.getpid()


def _check_eval_keys(blob: bytes) -> None:
    from ckks.session_keys import SessionFormatError

    circuit = _state().circuit
    try:
        circuit.load_eval_keys(blob)
    except (SessionFormatError, TypeError) as exc:
        raise InvalidPayload(str(exc)) from None


def _check_personalization(session_id: str, blob: bytes) -> None:
    from ckks.session_keys import KIND_BIAS, SessionFormatError, load_ciphertext

    circuit = _state().circuit
    key_id = _eval_keys_for(session_id).key_id
    try:
        ct = load_ciphertext(
            blob, circuit.tail_context, circuit.params, KIND_BIAS, key_id, circuit.output_parms_id
        )
    except (SessionFormatError, TypeError) as exc:
        raise InvalidPayload(str(exc)) from None
    if abs(ct.scale / circuit.output_scale - 1) > 1e-6:
        raise InvalidPayload("personal bias: encrypted at the wrong scale; use the model's output_scale")


def _eval_keys_for(session_id: str):
    from ckks.session_keys import SessionFormatError

    state = _state()
    keys = state.eval_keys.get(session_id)
    if keys is None:
        record = state.store.get(session_id)
        if record is None:
            raise InvalidPayload(f"unknown session {session_id!r}")
        circuit = state.circuit
        try:
            keys = circuit.load_eval_keys(record.eval_keys, require_steps=False)
        except SessionFormatError as exc:  # stored by an older server build or for another circuit
            raise InvalidPayload(f"session {session_id!r} cannot be used, create a new one: {exc}") from None
        state.eval_keys[session_id] = keys
        while len(state.eval_keys) > _EVAL_KEY_CACHE:
            state.eval_keys.popitem(last=False)
    else:
        state.eval_keys.move_to_end(session_id)
    return keys


def _predict(session_id: str, query: bytes) -> bytes:
    from ckks.session_keys import (
        KIND_BIAS,
        KIND_LOGITS,
        KIND_QUERY,
        SessionFormatError,
        dump_ciphertext,
        load_ciphertext,
    )

    state = _state()
    circuit = state.circuit
    keys = _eval_keys_for(session_id)
    try:
        ct = load_ciphertext(
            query, circuit.context, circuit.params, KIND_QUERY, keys.key_id, circuit.query_parms_id
        )
    except (SessionFormatError, TypeError) as exc:
        raise InvalidPayload(str(exc)) from None
    personalization = state.store.get_personalization(session_id)  # read fresh: a new adapter applies at once
    bias = None
    if personalization:
        bias = load_ciphertext(
            personalization,
            circuit.tail_context,
            circuit.params,
            KIND_BIAS,
            keys.key_id,
            circuit.output_parms_id,
        )
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
        "vocab_size": circuit.vocab_size,
        "hidden": circuit.hidden,
        "input_dim": circuit.input_dim,
        "security_bits": 128,
    }


def _public_parameters() -> dict:
    return public_parameters(_state().circuit)


class HEService:
    """A pool of HE worker processes with async methods for the routers."""

    def __init__(self, release_dir: str, db_path: str, workers: int = 2, mode: str = "x") -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        import multiprocessing

        from models.release import load_release

        self.model_version = load_release(release_dir).version
        self.release_dir = release_dir
        self.workers = workers
        # spawn: a clean interpreter per worker (no forked torch/tenseal state, no inherited threads)
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(release_dir, db_path, mode),
        )
        self._public: dict | None = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def start(self) -> None:
        """Start every worker (each pre-encodes the circuit) before serving."""
        try:
            pids = await asyncio.gather(*(self._run(_ping) for _ in range(self.workers * 2)))
        except BrokenProcessPool as exc:
            raise RuntimeError(
                f"HE workers could not load the release into the circuit ({self.release_dir}); "
                "the worker's traceback is in the log above"
            ) from exc
        self._public = await self._run(_public_parameters)
        self.worker_pids = sorted(set(pids))

    def public_parameters(self) -> dict:
        """HE parameters a device needs (see ``public_parameters``)."""
        assert self._public is not None, "HEService.start() was not awaited"
        return self._public

    async def check_eval_keys(self, blob: bytes) -> None:
        """Raise ``InvalidPayload`` unless ``blob`` holds valid evaluation keys for the circuit."""
        await self._run(_check_eval_keys, blob)

    async def check_personalization(self, session_id: str, blob: bytes) -> None:
        """Raise ``InvalidPayload`` unless ``blob`` is a bias ciphertext under the session's key and level."""
        await self._run(_check_personalization, session_id, blob)

    async def predict(self, session_id: str, query: bytes) -> bytes:
        """Encrypted logits (bytes) for an encrypted query of ``session_id``."""
        return await self._run(_predict, session_id, query)

    def close(self) -> None:
        """Stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=True)
