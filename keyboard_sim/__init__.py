"""The device side: corpus, user splits, touch typing, autocorrect, personalization.

Heavier device modules are imported by name where needed, so that importing this package stays
cheap: ``keyboard_sim.device`` (DP-SGD), ``keyboard_sim.client_app`` (Flower ClientApp),
``keyboard_sim.federation`` (federation config and data), ``keyboard_sim.api_client``
(encrypted prediction client).
"""

from keyboard_sim.corpus import CorpusError, UserText, load_jsonl, load_users
from keyboard_sim.dataset import DataConfig, FederatedData, UserExamples, build_federated_data
from keyboard_sim.personalize import (
    CacheAdapterConfig,
    PersonalizationConfig,
    adapter_from_statistics,
    fit_vocab_bias,
    user_statistics,
)
from keyboard_sim.split import SplitConfig, local_split, split_users

__all__ = [
    "CacheAdapterConfig",
    "CorpusError",
    "DataConfig",
    "FederatedData",
    "PersonalizationConfig",
    "SplitConfig",
    "UserExamples",
    "UserText",
    "adapter_from_statistics",
    "build_federated_data",
    "fit_vocab_bias",
    "load_jsonl",
    "load_users",
    "local_split",
    "split_users",
    "user_statistics",
]
