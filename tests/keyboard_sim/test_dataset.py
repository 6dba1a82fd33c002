"""From users to model-ready data: public-only vocabulary, per-user windows, time split."""

from pathlib import Path

import numpy as np
import pytest

from keyboard_sim.api_client import context_ids
from keyboard_sim.corpus import UserText
from keyboard_sim.dataset import DataConfig, build_federated_data
from keyboard_sim.split import SplitConfig
from models.data import sentence_windows
from models.vocab import Vocabulary


def test_build_from_jsonl(small_jsonl: Path) -> None:
    cfg = DataConfig(
        source="jsonl",
        jsonl_path=str(small_jsonl),
        vocab_size=64,
        context=3,
        split=SplitConfig(public_fraction=0.3),
    )
    data = build_federated_data(cfg)
    assert 10 < len(data.public) and data.context == 3
    assert len(data.train_users) + len(data.heldout_users) < 60
    user = data.train_users[0]
    assert user.train.x.shape[1] == 3 and len(user.later) > 0  # last ~20% lines kept back
    assert data.heldout.x.shape[0] == sum(len(u.train) + len(u.later) for u in data.heldout_users)
    assert 0.0 <= data.oov_rate < 0.2
    assert data.vocab.source == "public" and len(data.vocab) <= 64


def test_vocabulary_never_sees_private_text(small_users: list[UserText]) -> None:
    secret = "xylophone"
    users = small_users + [UserText("zz-secret", [f"{secret} {secret} {secret}."] * 20)]
    data = build_federated_data(
        DataConfig(vocab_size=500, context=2, split=SplitConfig(public_fraction=0.3)), users=users
    )
    assert secret not in data.vocab  # the secret user is train or held-out, never public
    secret_user = [u for u in data.train_users + data.heldout_users if u.user_id == "zz-secret"]
    assert secret_user and np.all(secret_user[0].train.y == data.vocab.unk_id)


def test_max_users_and_config_validation(small_users: list[UserText]) -> None:
    data = build_federated_data(
        DataConfig(max_users=5, context=2, split=SplitConfig(public_fraction=0.3)), users=small_users
    )
    assert len(data.train_users) == 5 and len(data.heldout_users) <= 5
    with pytest.raises(ValueError, match="jsonl_path"):
        DataConfig(source="jsonl")
    with pytest.raises(ValueError, match="context"):
        DataConfig(context=0)


def test_context_scope_changes_contexts_not_targets(small_users: list[UserText]) -> None:
    split = SplitConfig(public_fraction=0.3)
    users = [
        UserText(u.user_id, [" ".join(u.lines[i : i + 3]) for i in range(0, 12, 3)]) for u in small_users
    ]
    by_scope = {
        scope: build_federated_data(DataConfig(context=3, split=split, context_scope=scope), users=users)
        for scope in ("sentence", "line")
    }
    sentence, line = by_scope["sentence"].heldout, by_scope["line"].heldout
    assert np.array_equal(sentence.y, line.y)  # the same targets in the same order
    assert np.array_equal(sentence_windows(line, 1).x, sentence.x)  # line windows cut at <s>
    assert not np.array_equal(sentence.x, line.x)
    with pytest.raises(ValueError, match="context_scope"):
        DataConfig(context_scope="paragraph")


def test_client_context_ids_follow_the_release_scope() -> None:
    vocab = Vocabulary(["<unk>", "<s>", "to", "be", "or", "not"])
    text = "To be. Or not"
    assert context_ids(text, vocab, 4).tolist() == [1, 1, 4, 5]  # sentence: "or not"
    assert context_ids(text, vocab, 4, "line").tolist() == [3, 1, 4, 5]  # "be <s> or not"
    assert context_ids(text + ";", vocab, 4, "line").tolist() == [1, 4, 5, 1]
    assert context_ids(text + ";", vocab, 4).tolist() == [1, 1, 1, 1]


def test_federation_config_carries_the_context_scope() -> None:
    from federation import FederationConfig
    from keyboard_sim.federation import data_config, federation_fields

    assert FederationConfig().data_fields()["context_scope"] == DataConfig().context_scope  # one default
    data = data_config(FederationConfig(context_scope="sentence"))  # what a federated release's card records
    assert data.context_scope == "sentence"
    assert data_config(FederationConfig(**federation_fields(data))) == data
    with pytest.raises(ValueError, match="context_scope"):
        FederationConfig(context_scope="page")
