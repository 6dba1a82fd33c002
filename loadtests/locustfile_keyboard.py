"""Load test with its baseline in one run: encrypted keyboard users beside plaintext keyboard users.

- ``EncryptedKeyboardUser`` (from ``locustfile_encrypted_predict.py``): opens a session once (public
  eval keys), uploads an encrypted bias, then posts encrypted contexts at typing cadence; key material
  comes from the pool built before the run.
- ``PlaintextKeyboardUser``: the same device identities, cadence and request mix, but it posts the
  the context's ``h`` (the encoder's output) in the clear to ``/v1/baseline/predict`` (served only
  with ``HUSHTYPE_PLAINTEXT_BASELINE=1``) and checks the plaintext logits it gets back against the
  head of ``--release`` (without it: their shape only).

Both classes have weight 1, so ``-u 2N`` runs N of each. ``hushtype loadtest`` runs this file and
prints the comparison; by hand (server started with ``HUSHTYPE_PLAINTEXT_BASELINE=1``)::

    locust -f loadtests/locustfile_keyboard.py --headless -u 4 -r 4 -t 30s \\
        --host http://127.0.0.1:8000 --csv /tmp/hushtype-kb --html /tmp/hushtype-kb.html --only-summary
"""

from __future__ import annotations

import random

import numpy as np
from locust import HttpUser
from locustfile_encrypted_predict import _POOL, OCTETS, EncryptedKeyboardUser

PLAINTEXT_NAME = "/v1/baseline/predict"


class PlaintextKeyboardUser(HttpUser):
    """The baseline: the same keyboard, context sent in the clear, no session, no HE."""

    wait_time = EncryptedKeyboardUser.wait_time  # same typing cadence

    def on_start(self) -> None:
        """Take a device identity (only its clear h and reference logits are used)."""
        self.device = _POOL.take(self.host, self.environment.parsed_options)
        self.session_id = None

    def predict_plaintext(self) -> None:
        """Post the clear h; the logits must be the head's."""
        i = random.randrange(len(self.device.features))
        with self.client.post(
            PLAINTEXT_NAME,
            data=self.device.features[i],
            headers=OCTETS,
            name=PLAINTEXT_NAME,
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.content[:200]!r}")
                return
            z = np.frombuffer(r.content, dtype="<f4")
            if z.shape != (self.device.vocab_size,):
                r.failure(f"{len(r.content)} bytes, expected {self.device.vocab_size} float32 logits")
            elif self.device.plain_expected is not None and (
                np.max(np.abs(z - self.device.plain_expected[i])) > 1e-3
            ):
                r.failure("plaintext logits differ from the model's")

    # the encrypted user's request mix, with the predict swapped for the plaintext one
    tasks = {
        predict_plaintext: 10,
        EncryptedKeyboardUser.read_model_card: 1,
        EncryptedKeyboardUser.health: 1,
    }


__all__ = ["EncryptedKeyboardUser", "PlaintextKeyboardUser"]
