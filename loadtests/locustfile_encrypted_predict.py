"""Load test: the encrypted prediction path (sessions with public eval keys, CKKS predict, teardown).

Each simulated device opens a session by uploading its public evaluation keys (``POST /v1/sessions``,
~6 MB for the V=4096 release), optionally uploads a vocabulary bias encrypted under its own key, then
mostly posts encrypted contexts to ``/v1/sessions/{id}/predict`` and now and then reads the model card or
``/healthz``. ``on_stop`` deletes the session.

Key generation and encryption are CPU work in the locust process. So that locust is not the bottleneck
on a small machine, each locust process builds a small pool of device identities (secret key, eval
keys, pre-encrypted queries, encrypted bias, plaintext reference logits) ahead, when locust starts and
before the run clock does, and users take one each, round-robin. Users that share an identity still get
separate sessions; the server cannot tell.

Behind the proxy of ``deploy/haproxy.cfg`` every response names the replica that served it
(``X-Hushtype-Replica``); a predict served by another replica than the one that created its session is
counted, and ``--counts-file`` receives the counts as JSON when locust quits.

A predict response passes when it is 200, starts with the ciphertext magic ``b"HTCT"``, is a logits
ciphertext (kind 3) under the identity's key id, and has a size a 2-component ciphertext at these
parameters can have. The first predict of every user and every ``--verify-every``-th after it is also
decrypted: it must hold V finite logits within ``--verify-atol`` of the plaintext model's, computed from
the release directory given by ``--release`` (the operator's copy: the thin client never holds the head).

Run (server: ``hushtype serve --release runs/central--quick --db /tmp/s.db --port 8000 --workers 2``)::

    locust -f loadtests/locustfile_encrypted_predict.py --headless -u 4 -r 4 -t 30s \\
        --host http://127.0.0.1:8000 --release runs/central--quick --csv /tmp/hushtype-load --only-summary

With the ramp of ``loadtests/shape_ramp.py`` (``-u``/``-r`` are then ignored; ``-t`` still caps)::

    locust -f loadtests/locustfile_encrypted_predict.py,loadtests/shape_ramp.py --headless -t 90s \\
        --host http://127.0.0.1:8000 --csv /tmp/hushtype-ramp --only-summary

Or let ``loadtests/run_load.py`` start a server, run this file and print one JSON summary.

Extra options (flag or environment variable): ``--device-pool`` / ``HUSHTYPE_LOAD_DEVICE_POOL`` (identities
per locust process, default 4), ``--queries-per-device`` (default 8), ``--personalize`` (``1``/``0``,
default 1), ``--think-seconds`` (mean wait between tasks, uniform in [0.5t, 1.5t]; 0 = saturate;
default 0.3), ``--verify-every`` (default 20), ``--verify-atol`` (default 0.01; the CKKS error measured on
the V=4096 release is ~5e-5).
"""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass, field

import httpx
import numpy as np
from gevent.lock import BoundedSemaphore
from locust import HttpUser, events, task
from locust.runners import MasterRunner

from hushtype.stack import REPLICA_HEADER  # set by deploy/haproxy.cfg
from keyboard_sim.api_client import PredictionClient
from models.factory import encode, plaintext_logits
from models.head import head_logits
from models.release import load_release

OCTETS = {"Content-Type": "application/octet-stream"}
PREDICT_NAME = "/v1/sessions/{id}/predict"
COUNTS = {"predictions_with_replica": 0, "cross_replica_predictions": 0}

# Ciphertext wire header (ckks.session_keys):
#   b"HTCT" | u8 version | u8 kind | 8-byte params_id | 16-byte key_id
_CT_HEAD = struct.Struct("<4sBB8s16s")
_KIND_LOGITS = 3


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    group = parser.add_argument_group("hushtype encrypted predict")
    group.add_argument(
        "--device-pool",
        type=int,
        default=4,
        env_var="HUSHTYPE_LOAD_DEVICE_POOL",
        help="device identities (secret key + pre-encrypted queries) per locust process",
    )
    group.add_argument(
        "--queries-per-device",
        type=int,
        default=8,
        env_var="HUSHTYPE_LOAD_QUERIES",
        help="pre-encrypted contexts per identity",
    )
    group.add_argument(
        "--personalize",
        type=int,
        default=1,
        env_var="HUSHTYPE_LOAD_PERSONALIZE",
        help="1: upload an encrypted vocabulary bias after creating the session",
    )
    group.add_argument(
        "--think-seconds",
        type=float,
        default=0.3,
        env_var="HUSHTYPE_LOAD_THINK",
        help="mean wait between a user's tasks, uniform in [0.5t, 1.5t]; 0 saturates",
    )
    group.add_argument(
        "--verify-every",
        type=int,
        default=20,
        env_var="HUSHTYPE_LOAD_VERIFY_EVERY",
        help="decrypt and check every n-th predict response of a user (and its first)",
    )
    group.add_argument(
        "--counts-file",
        default="",
        env_var="HUSHTYPE_LOAD_COUNTS_FILE",
        help="write the cross-replica prediction counts here (JSON) when locust quits",
    )
    group.add_argument(
        "--release",
        default="",
        env_var="HUSHTYPE_LOAD_RELEASE",
        help="the served release directory: the verifier reads the head from it to compute reference "
        "logits (the thin client never holds the head); empty: check ciphertext formats only",
    )
    group.add_argument(
        "--verify-atol",
        type=float,
        default=0.01,
        env_var="HUSHTYPE_LOAD_VERIFY_ATOL",
        help="max |decrypted - plaintext| logit error accepted",
    )


@dataclass
class DeviceIdentity:
    """One simulated device's key material and ready-made ciphertexts (built once per locust process)."""

    client: PredictionClient  # holds the session secret; used here only for its keys and encryption
    queries: list[bytes]
    expected: list[np.ndarray] | None  # plaintext reference logits per query (bias included), from --release
    features: list[bytes]  # the same contexts' h in the clear (float32), for the baseline user
    plain_expected: list[np.ndarray] | None  # the head's logits for ``features``, no bias, from --release
    bias: bytes | None
    vocab_size: int
    size_bounds: tuple[int, int]  # (min, max) bytes a logits ciphertext can have at these parameters

    @property
    def key_id(self) -> bytes:
        return self.client.secret.key_id


@dataclass
class _DevicePool:
    """At most ``--device-pool`` identities, built ahead (``fill``) or on first need; ``take()`` hands
    them out round-robin."""

    identities: list[DeviceIdentity] = field(default_factory=list)
    taken: int = 0
    lock: BoundedSemaphore = field(default_factory=BoundedSemaphore)

    def take(self, host: str, options) -> DeviceIdentity:
        with self.lock:  # keygen blocks the gevent loop anyway; the lock stops two users building one slot
            slot = self.taken % max(1, options.device_pool)
            self.taken += 1
            if slot == len(self.identities):
                self.identities.append(_build_identity(host, options, seed=slot))
            return self.identities[slot]

    def fill(self, host: str, options) -> None:
        """Build every identity now (key generation and encryption happen before the run clock starts)."""
        while len(self.identities) < max(1, options.device_pool):
            self.identities.append(_build_identity(host, options, seed=len(self.identities)))


_POOL = _DevicePool()


@events.init.add_listener
def _make_pool_ahead(environment, **_kwargs) -> None:
    if environment.host and not isinstance(environment.runner, MasterRunner):
        _POOL.fill(environment.host, environment.parsed_options)


@events.quitting.add_listener
def _write_counts(environment, **_kwargs) -> None:
    path = getattr(environment.parsed_options, "counts_file", "")
    if path:
        with open(path, "w") as f:
            json.dump(COUNTS, f)


def _build_identity(host: str, options, seed: int) -> DeviceIdentity:
    """Fetch the model (outside the stats), generate keys, pre-encrypt queries and the bias."""
    http = httpx.Client(base_url=host.rstrip("/"), timeout=60.0)
    client = PredictionClient(host, http=http)
    V = len(client.vocab)
    rng = np.random.default_rng(1000 + seed)
    bias = None
    bias_plain = None
    if options.personalize:
        bias_plain = rng.normal(0.0, 1.0, V)
        bias = client.secret.encrypt_bias(bias_plain, client.he["output_scale"])
    contexts = [rng.integers(2, V, size=client.context) for _ in range(max(1, options.queries_per_device))]
    queries = [client.encrypt_context(ids) for ids in contexts]
    clear = [encode(client.model_config, client.encoder, ids).astype("<f4") for ids in contexts]
    expected = plain_expected = None
    if options.release:  # the operator's copy of the release, not the client's: a thin client has no head
        release = load_release(options.release)
        expected = [plaintext_logits(release.weights, release.config, ids, bias_plain) for ids in contexts]
        plain_expected = [head_logits(release.head, h.astype(np.float64)) for h in clear]
    n, primes = client.params.poly_modulus_degree, len(client.params.coeff_bit_sizes)
    # a 2-component ciphertext: at least ~one compressed prime, at most every prime uncompressed
    size_bounds = (_CT_HEAD.size + n, _CT_HEAD.size + 2 * n * primes * 8 + 1024)
    features = [x.tobytes() for x in clear]
    return DeviceIdentity(client, queries, expected, features, plain_expected, bias, V, size_bounds)


class EncryptedKeyboardUser(HttpUser):
    """A phone keyboard asking for next-word suggestions on encrypted context."""

    def wait_time(self) -> float:
        t = self.environment.parsed_options.think_seconds
        return random.uniform(0.5 * t, 1.5 * t) if t > 0 else 0.0

    def on_start(self) -> None:
        """Take a device identity, create the session (eval keys upload), upload the encrypted bias."""
        options = self.environment.parsed_options
        self.device = _POOL.take(self.host, options)
        self.session_id: str | None = None
        self.home_replica: str | None = None
        self.predicts = 0
        with self.client.post(
            "/v1/sessions",
            data=self.device.client.eval_keys,
            headers=OCTETS,
            name="/v1/sessions",
            catch_response=True,
        ) as r:
            if r.status_code != 201:
                r.failure(f"session not created: HTTP {r.status_code} {r.text[:200]}")
                return
            body = r.json()
            self.home_replica = r.headers.get(REPLICA_HEADER)
            self.session_id = body["session_id"]
            self.auth = {**OCTETS, "Authorization": f"Bearer {body['token']}"}
        if self.device.bias is not None:
            with self.client.put(
                f"/v1/sessions/{self.session_id}/personalization",
                data=self.device.bias,
                headers=self.auth,
                name="/v1/sessions/{id}/personalization",
                catch_response=True,
            ) as r:
                if r.status_code != 204:
                    r.failure(f"personalization refused: HTTP {r.status_code} {r.text[:200]}")

    @task(10)
    def predict(self) -> None:
        """Post a pre-encrypted context; judge the encrypted logits by header, size and (sometimes) value."""
        if self.session_id is None:
            return  # session creation failed (already counted); nothing to predict on
        i = random.randrange(len(self.device.queries))
        with self.client.post(
            f"/v1/sessions/{self.session_id}/predict",
            data=self.device.queries[i],
            headers=self.auth,
            name=PREDICT_NAME,
            catch_response=True,
        ) as r:
            problem = self._judge(r.status_code, r.content, i)
            if problem:
                r.failure(problem)
            else:
                r.success()
                self._count_replica(r.headers.get(REPLICA_HEADER))

    def _count_replica(self, served_by: str | None) -> None:
        """Count a predict served by another replica than the one that created the session."""
        if served_by and self.home_replica:
            COUNTS["predictions_with_replica"] += 1
            COUNTS["cross_replica_predictions"] += served_by != self.home_replica

    def _judge(self, status: int, body: bytes, i: int) -> str | None:
        """None if the response is plausible encrypted logits for query ``i``; otherwise what is wrong."""
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        if len(body) < _CT_HEAD.size or body[:4] != b"HTCT":
            return f"not a hushtype ciphertext ({len(body)} bytes, starts {body[:4]!r})"
        _, _, kind, _, key_id = _CT_HEAD.unpack_from(body)
        if kind != _KIND_LOGITS:
            return f"ciphertext kind {kind}, expected logits ({_KIND_LOGITS})"
        if key_id != self.device.key_id:
            return "logits under another session's key id"
        low, high = self.device.size_bounds
        if not low <= len(body) <= high:
            return f"implausible logits size {len(body)} bytes, expected {low}..{high}"
        every = max(1, self.environment.parsed_options.verify_every)
        self.predicts += 1
        if self.device.expected is not None and (self.predicts - 1) % every == 0:
            z = self.device.client.secret.decrypt_logits(body, self.device.vocab_size)
            if z.shape != (self.device.vocab_size,) or not np.all(np.isfinite(z)):
                return f"decrypted logits have shape {z.shape} or non-finite values"
            err = float(np.max(np.abs(z - self.device.expected[i])))
            if err > self.environment.parsed_options.verify_atol:
                return f"decrypted logits differ from plaintext by {err:.3g}"
        return None

    @task(1)
    def read_model_card(self) -> None:
        """The light public endpoint a device polls for a new model version."""
        with self.client.get("/v1/model", name="/v1/model", catch_response=True) as r:
            if r.status_code != 200 or b'"version"' not in r.content:
                r.failure(f"model card: HTTP {r.status_code} {r.text[:200]}")

    @task(1)
    def health(self) -> None:
        """Liveness, as a load balancer would poll it."""
        with self.client.get("/healthz", name="/healthz", catch_response=True) as r:
            if r.status_code != 200 or b'"status":"ok"' not in r.content.replace(b" ", b""):
                r.failure(f"healthz: HTTP {r.status_code} {r.text[:200]}")

    def on_stop(self) -> None:
        """Delete the session: the server forgets the keys and the encrypted bias."""
        if self.session_id is not None:
            self.client.delete(f"/v1/sessions/{self.session_id}", headers=self.auth, name="/v1/sessions/{id}")
            self.session_id = None
