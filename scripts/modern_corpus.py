#!/usr/bin/env python3
"""Build a modern-English JSONL corpus ({"user", "text"} lines) from text shipped in public packages.

Sources (nothing here is written by the project, nothing is fetched at run time):

- Debian's ``fortunes`` and ``fortunes-min`` packages (``/usr/share/games/fortunes``): ~15k short
  modern English quotes, jokes and sayings in ~45 topic files (``apt-get install fortunes fortunes-min``).
  Attribution lines (``-- Author``) are dropped; ``ascii-art`` and other non-prose files are skipped.
- The ``chatterbot-corpus`` wheel (BSD-3; ``pip download --no-deps chatterbot-corpus==1.3.3``):
  English dialog turns in 21 topic files.

A "user" is a run of ``--per-user`` consecutive items of one topic file, so users are non-IID by
topic, like the plays' roles. Usage::

    python scripts/modern_corpus.py --wheel-dir ~/.cache/hushtype --out runs/modern.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
SKIP = {"ascii-art", "translate-me", "perl", "knghtbrd", "zippy", "goedel", "debian", "linuxcookie"}


def fortunes(root: Path) -> dict[str, list[str]]:
    """Topic -> fortunes (one line each, attribution removed)."""
    out: dict[str, list[str]] = {}
    for path in sorted(root.iterdir()):
        if path.suffix or path.name in SKIP or not path.is_file():
            continue
        items = []
        for block in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            lines = [ln.strip() for ln in block.splitlines() if not re.match(r"^\s*(--|-- )", ln)]
            text = " ".join(ln for ln in lines if ln)
            if 3 <= len(text.split()) <= 80 and text.isascii():
                items.append(text)
        out[f"fortune-{path.name}"] = items
    return out


def chatterbot(wheel: Path) -> dict[str, list[str]]:
    """Topic -> dialog turns of the chatterbot-corpus English files."""
    out: dict[str, list[str]] = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            if "/english/" not in name or not name.endswith(".yml"):
                continue
            turns, in_dialog = [], False
            for line in zf.read(name).decode("utf-8").splitlines():
                in_dialog = in_dialog or line.startswith("conversations:")
                m = re.match(
                    r"^\s*-\s+(?:-\s+)?(.+)$", line
                )  # "- - turn" starts a dialog, "  - turn" goes on
                if in_dialog and m and len(m.group(1).split()) >= 2:
                    turns.append(m.group(1).strip().strip("'\""))
            out["chat-" + Path(name).stem] = turns
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wheel-dir", default=str(Path.home() / ".cache" / "hushtype"))
    p.add_argument("--out", required=True)
    p.add_argument("--per-user", type=int, default=40, help="items per pseudo-user (default 40)")
    args = p.parse_args(argv)
    if not FORTUNES.is_dir():
        print("modern_corpus: error: apt-get install fortunes fortunes-min first", file=sys.stderr)
        return 2
    wheels = sorted(Path(args.wheel_dir).glob("chatterbot_corpus-*.whl"))
    if not wheels:
        print(f"modern_corpus: error: no chatterbot_corpus wheel in {args.wheel_dir}", file=sys.stderr)
        return 2
    topics = {**fortunes(FORTUNES), **chatterbot(wheels[-1])}
    users = lines = 0
    with open(args.out, "w", encoding="utf-8") as fh:
        for topic, items in topics.items():
            for start in range(0, len(items), args.per_user):
                chunk = items[start : start + args.per_user]
                if len(chunk) < 5:
                    continue
                users += 1
                for text in chunk:
                    fh.write(json.dumps({"user": f"{topic}/{start // args.per_user}", "text": text}) + "\n")
                    lines += 1
    print(json.dumps({"out": args.out, "users": users, "lines": lines, "topics": len(topics)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
