"""docs/wire-format.md is enough to write a client: a session built from the document alone.

The client here uses only ``tenseal.sealapi`` (SEAL), ``struct``, ``hashlib`` and numpy, with the
header layouts read out of the document, never ``ckks.session_keys`` or ``ckks.serialize``; its
decrypted logits must match the plaintext model. A second test checks the document's constants
against the code, so the two cannot drift apart silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tenseal.sealapi as sealapi
from fastapi.testclient import TestClient
from safetensors.numpy import load as load_safetensors

from models.nplm import plaintext_logits
from models.release import load_release

DOC = Path(__file__).resolve().parents[3] / "docs" / "wire-format.md"
OCTETS = {"Content-Type": "application/octet-stream"}


def _doc_struct(name: str) -> struct.Struct:
    """The ``struct`` format the document gives for ``name`` (e.g. 'HTEK header')."""
    match = re.search(rf'{re.escape(name)}: struct "([^"]+)" \((\d+) bytes\)', DOC.read_text())
    assert match, f"{name} not specified in {DOC.name}"
    layout = struct.Struct(match.group(1))
    assert layout.size == int(match.group(2)), f"{name}: the document's byte count is wrong"
    return layout


# -- SEAL objects <-> bytes, with only sealapi's file-based save/load --------------------------------------
def _save(obj) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "blob")
        obj.save(path)
        return Path(path).read_bytes()


def _load(obj, context, data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "blob")
        Path(path).write_bytes(data)
        obj.load(context, path)
    return obj


class DocClient:
    """A device written from docs/wire-format.md."""

    def __init__(self, he: dict) -> None:
        self.he = he
        p = he["params"]
        self.n = p["poly_modulus_degree"]
        self.slots = self.n // 2
        # section 1: context, params_id, key_id
        parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(self.n)
        parms.set_coeff_modulus(sealapi.CoeffModulus.Create(self.n, p["coeff_bit_sizes"]))
        self.ctx = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
        self.params_id = hashlib.sha256(json.dumps(p, sort_keys=True).encode()).digest()[:8]
        self.key_id = os.urandom(16)
        keygen = sealapi.KeyGenerator(self.ctx)
        self.sk = keygen.secret_key()
        self.relin = _save(keygen.create_relin_keys())
        # section 3: tail context from the full chain's prime values, restricted key from its NTT blocks
        primes = list(self.ctx.key_context_data().parms().coeff_modulus())
        level = he["rotation_level"]
        tail_primes = primes[: len(primes) - 1 - level] + [primes[-1]]
        tparms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
        tparms.set_poly_modulus_degree(self.n)
        tparms.set_coeff_modulus(tail_primes)
        self.tail = sealapi.SEALContext(tparms, True, sealapi.SEC_LEVEL_TYPE.TC128)
        self.tail_sk = self._restricted_key([m.value() for m in primes], [m.value() for m in tail_primes])
        tail_keygen = sealapi.KeyGenerator(self.tail, self.tail_sk)
        elts = [self.galois_elt(k) for k in he["rotation_steps"]]
        self.galois = _save(tail_keygen.create_galois_keys(elts))

    def galois_elt(self, step: int) -> int:
        m = 2 * self.n
        if step == 0:
            return m - 1
        return pow(3, step if step > 0 else self.slots - abs(step), m)

    def _seal_blob(self, body: bytes) -> bytes:
        head = _doc_struct("SEAL header")
        major, minor = _save(self.ctx.key_context_data().parms())[3:5]  # copied from an object SEAL saved
        return head.pack(0xA15E, head.size, major, minor, 0, 0, head.size + len(body)) + body

    def _restricted_key(self, primes: list[int], keep: list[int]) -> sealapi.SecretKey:
        arr = self.sk.data().dyn_array()
        values = np.fromiter((arr[i] for i in range(arr.size())), dtype=np.uint64)
        values = values.reshape(len(primes), self.n)
        kept = np.concatenate([values[primes.index(q)] for q in keep])
        members = struct.pack("<4QQd", *self.tail.key_parms_id(), kept.size, 1.0)
        dyn_array = self._seal_blob(struct.pack("<Q", kept.size) + kept.astype("<u8").tobytes())
        return _load(sealapi.SecretKey(), self.tail, self._seal_blob(members + dyn_array))

    def eval_keys(self) -> bytes:
        steps = self.he["rotation_steps"]
        head = _doc_struct("HTEK header").pack(
            b"HTEK", 2, self.params_id, self.key_id, len(steps), self.he["rotation_level"]
        )
        parts = [head, struct.pack(f"<{len(steps)}i", *steps)]
        for blob in (self.relin, self.galois):
            parts += [struct.pack("<Q", len(blob)), blob]
        return b"".join(parts)

    def _ciphertext(self, kind: int, ct_blob: bytes) -> bytes:
        return _doc_struct("HTCT header").pack(b"HTCT", 2, kind, self.params_id, self.key_id) + ct_blob

    def query(self, weights: dict, ids: np.ndarray) -> bytes:
        x = weights["embedding"].astype(np.float64)[ids].reshape(-1)  # first word first
        h = weights["w1"].astype(np.float64) @ x + weights["b1"]
        slots = [float(h[s % len(h)]) for s in range(self.slots)]  # mode h: tiled reals
        pt = sealapi.Plaintext()
        scale = 2.0 ** self.he["params"]["scale_bits"]
        sealapi.CKKSEncoder(self.ctx).encode(slots, self.ctx.first_parms_id(), scale, pt)
        return self._ciphertext(1, _save(sealapi.Encryptor(self.ctx, self.sk).encrypt_symmetric(pt)))

    def bias(self, u: np.ndarray) -> bytes:
        pt = sealapi.Plaintext()
        sealapi.CKKSEncoder(self.tail).encode(
            [float(v) for v in u], self.tail.last_parms_id(), self.he["output_scale"], pt
        )
        return self._ciphertext(2, _save(sealapi.Encryptor(self.tail, self.tail_sk).encrypt_symmetric(pt)))

    def logits(self, blob: bytes) -> np.ndarray:
        head = _doc_struct("HTCT header")
        magic, version, kind, params_id, key_id = head.unpack_from(blob)
        assert (magic, version, kind, params_id, key_id) == (b"HTCT", 2, 3, self.params_id, self.key_id)
        ct = _load(sealapi.Ciphertext(), self.tail, blob[head.size :])
        pt = sealapi.Plaintext()
        sealapi.Decryptor(self.tail, self.tail_sk).decrypt(ct, pt)
        return np.asarray(sealapi.CKKSEncoder(self.tail).decode_double(pt))[: self.he["vocab_size"]]


def test_a_client_written_from_the_document_gets_correct_logits(api: TestClient, small_release: Path) -> None:
    info = api.get("/v1/model").json()
    assert info["he"]["mode"] == "h"
    encoder = load_safetensors(api.get(info["artifacts"]["encoder"]).content)
    assert {"w2", "b2", "beta"}.isdisjoint(encoder)  # the device never gets the head
    weights = load_release(small_release).weights  # the reference: the whole model, plaintext
    device = DocClient(info["he"])
    created = api.post("/v1/sessions", content=device.eval_keys(), headers=OCTETS)
    assert created.status_code == 201, created.text
    auth = {**OCTETS, "Authorization": f"Bearer {created.json()['token']}"}
    url = f"/v1/sessions/{created.json()['session_id']}"
    ids = np.array([5, 6, 7, 8])
    r = api.post(f"{url}/predict", content=device.query(encoder, ids), headers=auth)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(device.logits(r.content), plaintext_logits(weights, ids), atol=5e-3)
    u = np.zeros(info["he"]["vocab_size"])
    u[17] = 20.0
    assert api.put(f"{url}/personalization", content=device.bias(u), headers=auth).status_code == 204
    r = api.post(f"{url}/predict", content=device.query(encoder, ids), headers=auth)
    z = device.logits(r.content)
    np.testing.assert_allclose(z, plaintext_logits(weights, ids, u), atol=5e-3)
    assert int(np.argmax(z)) == 17


def test_the_documents_constants_are_the_codes() -> None:
    from ckks import session_keys
    from ckks.matvec import block_layout
    from ckks.nplm_circuit import INFERENCE_H
    from ckks.serialize import _SEAL_HEADER, _SEAL_PT_META

    assert _doc_struct("HTEK header").format == session_keys._KEYS_HEAD.format
    assert _doc_struct("HTCT header").format == session_keys._CT_HEAD.format
    assert _doc_struct("SEAL header").format == _SEAL_HEADER.format
    text = DOC.read_text()
    assert f"version        u8        {session_keys._VERSION}" in text
    assert f"at most {session_keys._MAX_STEPS}" in text
    kinds = (session_keys.KIND_QUERY, session_keys.KIND_BIAS, session_keys.KIND_LOGITS)
    assert (
        f"{kinds[0]} = query, {kinds[1]} = personal bias (or a user's adapter), {kinds[2]} = logits" in text
    )
    assert f"{session_keys.KIND_STATISTICS} = adapter statistics" in text
    from ckks import user_keys

    assert f'user key:   struct "{user_keys._HEAD.format}"' in text
    assert f'b"HTUK" | u8 version {user_keys._VERSION}' in text
    assert f'struct "{_SEAL_PT_META.format}"' in text
    params_json = json.dumps(INFERENCE_H.to_dict(), sort_keys=True)
    assert f"params JSON: {params_json}" in text
    assert f"params_id:   {INFERENCE_H.params_id.hex()}" in text
    # the mode-x layout formula, as written, is block_layout
    slots, hidden, x = 64, 8, np.arange(16, dtype=np.float64) + 1
    r = min(slots // hidden, len(x) // 2)
    g = len(x) // r
    big_x = np.array([x[(s % g) + g * ((s // hidden) % r)] for s in range(slots)])
    np.testing.assert_array_equal(block_layout(x, hidden, slots), big_x + 1j * np.roll(big_x, -1))


@pytest.mark.parametrize("step", [0, 1, -1, 2, 8, -64, 1000])
def test_galois_elements_as_documented(step: int) -> None:
    from ckks.keys import make_seal_context
    from ckks.nplm_circuit import INFERENCE_H

    ctx = make_seal_context(INFERENCE_H)
    n = INFERENCE_H.poly_modulus_degree
    want = list(ctx.key_context_data().galois_tool().get_elts_from_steps([step]))[0]
    doc = 2 * n - 1 if step == 0 else pow(3, step if step > 0 else n // 2 - abs(step), 2 * n)
    assert doc == want
