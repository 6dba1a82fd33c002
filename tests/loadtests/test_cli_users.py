"""``hushtype predict`` with a user: one machine creates it, another uses only the exported file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hushtype.serve_process import free_port, start_server, stop_server, wait_healthy


def _predict(url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hushtype.cli", "predict", "--server", url, "--json", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # ~40 s: a server and four CLI processes (the API paths: tests/server/api/test_users.py)
def test_cli_exports_the_user_and_a_second_client_uses_it(http_release: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(
        http_release, tmp_path / "api.db", port, 1, tmp_path / "serve.log", allow_non_private=True
    )
    try:
        wait_healthy(url, server, timeout=60)
        history = tmp_path / "my_messages.txt"
        history.write_text("w3 w4 w5 w40 w40\nw40 w21 w40\n" * 10)
        user_file = tmp_path / "me.hushtype-user"
        first = _predict(url, "--new-user", str(user_file), "--history", str(history), "w3 w4 w5")
        assert first.returncode == 0, first.stderr
        made = json.loads(first.stdout)
        assert made["personalized"]["revision"] == 1 and made["personalized"]["increment_bytes"] > 0
        assert user_file.stat().st_mode & 0o077 == 0  # the user key is readable by its owner only
        second = _predict(url, "--user", str(user_file), "w3 w4 w5")  # no history on this machine
        assert second.returncode == 0, second.stderr
        used = json.loads(second.stdout)
        assert used["user_id"] == made["user_id"] and used["personalized"] is None
        assert [s["word"] for s in used["suggestions"]] == [s["word"] for s in made["suggestions"]]
        plain = json.loads(_predict(url, "w3 w4 w5").stdout)  # an anonymous client: not personalized
        assert [s["probability"] for s in plain["suggestions"]] != [
            s["probability"] for s in used["suggestions"]
        ]
        both = _predict(url, "--user", str(user_file), "--new-user", str(user_file), "w3")
        assert both.returncode == 2 and "exclude each other" in both.stderr
        garbage = tmp_path / "garbage"
        garbage.write_bytes(b"not a user")
        bad = _predict(url, "--user", str(garbage), "w3")
        assert bad.returncode == 2 and "not a hushtype user file" in bad.stderr
    finally:
        stop_server(server)
