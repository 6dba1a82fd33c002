"""Flower's deployment engine: SuperLink + SuperNodes as separate processes, TLS, node authentication."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hushtype.flower_deploy import make_credentials

ROOT = Path(__file__).resolve().parents[2]


def test_credentials_are_what_flower_reads(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

    files = make_credentials(tmp_path, 2)
    cert = x509.load_pem_x509_certificate(files["cert"].read_bytes())
    ca = x509.load_pem_x509_certificate(files["ca"].read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    for i in range(3):  # two nodes and the spare that is never registered
        private = load_ssh_private_key(files[f"node{i}.key"].read_bytes(), password=None)
        public = load_ssh_public_key(files[f"node{i}.pub"].read_bytes())
        assert private.public_key().public_numbers() == public.public_numbers()
        assert private.curve.name == "secp384r1"


@pytest.mark.slow
def test_a_federated_round_on_the_deployment_engine(tmp_path: Path) -> None:
    config = "devices-per-round=2 rounds=1 max-users=40 aggregation='he' min-clients=2 eval-max-examples=200 "
    config += "vocab-size=512 embed-dim=16 hidden=32 max-local-steps=3"
    cmd = [
        str(ROOT / "scripts" / "flwr-deploy"),
        "--supernodes",
        "2",
        "--work",
        str(tmp_path),
        "--run-config",
        config,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert out.returncode == 0 and len(lines) == 1, out.stdout[-2000:] + out.stderr[-2000:]
    summary = json.loads(lines[0])
    assert summary["status"] == "finished:completed" and summary["tls"] and summary["supernode_auth"]
    assert summary["intruder_refused"], "a SuperNode with an unregistered key got in"
    assert summary["admitted"] == 2
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert rounds[-1]["round"] == 1 and rounds[-1]["participants"] == 2  # both SuperNodes trained
    assert rounds[-1]["user_epsilon"] > 0 and rounds[-1]["max_device_epsilon"] > 0  # DP on both levels
    assert (tmp_path / "run" / "key_authority").is_dir()  # HE aggregation went through the key authority
