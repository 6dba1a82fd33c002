"""Arrays a round leaves unchanged travel by reference: one public file named by its sha256.

Devices that fine-tune a few arrays (the shipped ``trainable=b2``: 4,096 of the NPLM's 1.4M or the
LSTM's 1.7M numbers) receive the same frozen arrays every round: the run's starting weights w_0 (the
public warm start or a seeded init; after a resume, the released checkpoint), all public. Sending them
inside each of the m messages of every round made the aggregator and each device serialise, copy and
parse 6-13 MB per device-round. Instead the server writes w_0 once (``write_base``)::

    <directory>/<sha256>.safetensors          every array of w_0 (float32, as exported)

and each round's message carries only the arrays of w_t that differ from it (``changed_arrays``), with
``base-sha256`` and ``base-path`` in the round config; the device loads the file once per process,
checks its digest (``read_base``) and fills in the arrays the message left out. The file needs a
filesystem the devices can read (the simulation's run directory); a deployment would serve it like the
other public artifacts (``GET /v1/model``). Nothing private is in it: the released model is public.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors.numpy import load, save

__all__ = ["BASE_SHA_KEY", "BASE_PATH_KEY", "write_base", "read_base", "changed_arrays", "with_base"]

BASE_SHA_KEY = "base-sha256"  # round-config key: hex sha256 of the base file's bytes
BASE_PATH_KEY = "base-path"  # round-config key: where the device reads the base file

_READ: dict[str, dict[str, np.ndarray]] = {}  # sha256 -> arrays: one copy per process


def write_base(weights: Mapping[str, np.ndarray], directory: str | Path) -> tuple[Path, str]:
    """Write ``weights`` (float32) as ``<directory>/<sha256>.safetensors``; return (path, sha256)."""
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32).reshape(np.shape(v)) for k, v in weights.items()}
    blob = save(arrays)
    digest = hashlib.sha256(blob).hexdigest()
    path = Path(directory) / f"{digest}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)  # atomic: a device never reads half a file
    return path, digest


def read_base(path: str | Path, digest: str) -> dict[str, np.ndarray]:
    """The arrays of the base file at ``path``, checked against ``digest`` (cached per process).

    Raises ``ValueError`` naming the path if it cannot be read or holds other bytes than announced.
    """
    if digest in _READ:
        return _READ[digest]
    try:
        blob = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(
            f"the device cannot read the run's public base weights at {path} ({err}); devices need a "
            "filesystem shared with the server (set base_by_reference=false to send every array)"
        ) from err
    actual = hashlib.sha256(blob).hexdigest()
    if actual != digest:
        raise ValueError(
            f"public base {path}: sha256 {actual[:12]} does not match the announced {digest[:12]}"
        )
    _READ[digest] = load(blob)
    return _READ[digest]


def changed_arrays(weights: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray]) -> list[str]:
    """Names of ``weights`` that the base lacks or holds with another shape or value (float32)."""
    return [
        k
        for k, v in weights.items()
        if k not in base or not np.array_equal(np.asarray(v, dtype=np.float32), base[k])
    ]


def with_base(arrays: dict[str, np.ndarray], config: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The full weights a device trains from: the message's ``arrays`` over the base the config names."""
    if BASE_SHA_KEY not in config:
        return arrays
    base = read_base(str(config[BASE_PATH_KEY]), str(config[BASE_SHA_KEY]))
    return {**base, **arrays}
