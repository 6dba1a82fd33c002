"""The console script end to end on a small bring-your-own corpus."""

import json
import subprocess
import sys
from pathlib import Path

from models.release import load_release

REQUIRED = {
    "top1",
    "top3",
    "ngram_top1",
    "ngram_top3",
    "perplexity",
    "oov_rate",
    "vocab_size",
    "users_train",
    "users_heldout",
    "seconds",
}


def test_bench_quality_prints_one_json_object(small_jsonl: Path, tmp_path: Path) -> None:
    release = tmp_path / "release"
    cmd = [
        sys.executable,
        "-m",
        "hushtype.cli",
        "bench",
        "quality",
        "--json",
        "--corpus",
        "jsonl",
        "--jsonl",
        str(small_jsonl),
        "--vocab-size",
        "128",
        "--epochs",
        "3",
        "--release-dir",
        str(release),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert REQUIRED <= set(result)
    assert 0.0 < result["top3"] <= 1.0 and result["users_heldout"] > 0
    # the grammar is learnable: both models beat chance (1/vocab) by far
    assert result["top3"] > 0.3 and result["ngram_top3"] > 0.3
    card = load_release(release).card
    assert card["version"] and card["model"]["vocab_size"] == result["vocab_size"]


def test_bad_input_is_a_clear_cli_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user": "a", "text": "ok"}\n{"user": "a"\n')
    cmd = [sys.executable, "-m", "hushtype.cli", "bench", "quality", "--corpus", "jsonl", "--jsonl", str(bad)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "bad.jsonl:2" in out.stderr and "Traceback" not in out.stderr


def test_parser_and_config_errors_do_not_load_torch() -> None:
    """A bad run configuration is refused in well under a second: the parser and the config's own
    checks import neither torch nor Opacus (``models`` resolves its names on first use)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from hushtype.cli import build_parser\n"
        "from hushtype.simulation import main\n"
        "build_parser()\n"
        "assert main(['devices=0']) == 2\n"
        "print(sorted(m for m in ('torch', 'opacus') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    assert "FederationConfig.devices must be positive" in out.stderr
