"""The device side: corpus, user splits, touch typing, autocorrect, personalization.

Names are imported on first use (PEP 562), so importing a light module of this package (the corpus,
the split, the dataset: what a configuration check needs) does not load torch. Heavier device modules
are imported by name where needed: ``keyboard_sim.device`` (DP-SGD), ``keyboard_sim.client_app``
(Flower ClientApp), ``keyboard_sim.federation`` (federation config and data),
``keyboard_sim.api_client`` (encrypted prediction client).
"""

from __future__ import annotations

from models.lazy import lazy_getattr

_HOME = {
    "CacheAdapterConfig": "keyboard_sim.personalize",
    "CorpusError": "keyboard_sim.corpus",
    "DataConfig": "keyboard_sim.dataset",
    "FederatedData": "keyboard_sim.dataset",
    "PersonalizationConfig": "keyboard_sim.personalize",
    "SplitConfig": "keyboard_sim.split",
    "UserExamples": "keyboard_sim.dataset",
    "UserText": "keyboard_sim.corpus",
    "adapter_from_statistics": "keyboard_sim.personalize",
    "build_federated_data": "keyboard_sim.dataset",
    "fit_vocab_bias": "keyboard_sim.personalize",
    "load_jsonl": "keyboard_sim.corpus",
    "load_users": "keyboard_sim.corpus",
    "local_split": "keyboard_sim.split",
    "split_users": "keyboard_sim.split",
    "user_statistics": "keyboard_sim.personalize",
}

__getattr__ = lazy_getattr(__name__, _HOME)


__all__ = sorted(_HOME)
