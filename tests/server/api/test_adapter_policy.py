"""The user adapter as the product runs it: the card's settings, an increment after every sentence."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from keyboard_sim.api_client import PredictionClient
from keyboard_sim.device_cache import DeviceCacheConfig
from keyboard_sim.personalize import CacheAdapterConfig, adapter_from_statistics
from models.release import record_card_field
from server.api.main import create_app
from tests.server.api.conftest import make_settings

EARLIER = ["w5 w6 w7 w8 w40. w40 w9 w40"] * 3
SENTENCE = "w5 w6 w41 w41"


def _device(api: TestClient) -> PredictionClient:
    return PredictionClient("http://testserver", http=api)


def _type(device: PredictionClient, sentence: str) -> None:
    """What a keyboard does while the sentence is typed: a suggestion before every word."""
    words = sentence.split()
    for n in range(len(words)):
        device.suggest(" ".join(words[:n]))


def _statistics_close(a: PredictionClient, b: PredictionClient) -> None:
    (ca, ea, _), (cb, eb, _) = a.user_statistics(), b.user_statistics()
    np.testing.assert_allclose(ca, cb, atol=1e-2)
    np.testing.assert_allclose(ea, eb, atol=1e-2)


def test_sentence_sent_reuses_the_logits_decrypted_while_typing(api: TestClient) -> None:
    # Prepare: a user with earlier text; a second user who sends the same text, everything queried
    phone = _device(api).create_user().open()
    phone.contribute(EARLIER)
    reference = _device(api).create_user().open()
    reference.contribute(EARLIER + [SENTENCE])
    # Execute: the phone suggests while the sentence is typed, then sends it
    _type(phone, SENTENCE)
    sent = phone.sentence_sent(SENTENCE)
    # Assert: no context was queried again, and the statistics are those of querying everything
    assert sent["contexts_queried"] == 0 and sent["revision"] == 2 == sent["adapter_revision"]
    _statistics_close(phone, reference)
    np.testing.assert_allclose(
        phone.user_adapter(), adapter_from_statistics(*phone.user_statistics()[:2]), atol=1e-3
    )
    assert phone.user_adapter()[phone.vocab.words.index("w41")] > 0.1  # the sentence's word moved up


def test_another_devices_adapter_makes_the_typed_logits_stale(api: TestClient) -> None:
    phone = _device(api).create_user().open()
    phone.contribute(EARLIER)
    laptop = _device(api).import_user(phone.export_user()).open()
    _type(phone, SENTENCE)  # decrypted with the adapter of revision 1 ...
    laptop.contribute(["w12 w41 w13"])  # ... which the laptop has just replaced
    sent = phone.sentence_sent(SENTENCE)
    assert sent["contexts_queried"] == 4  # re-queried with the laptop's adapter taken off
    reference = _device(api).create_user().open()
    reference.contribute(EARLIER + ["w12 w41 w13", SENTENCE], 10_000)
    _statistics_close(phone, reference)


def test_the_client_uses_the_cards_settings(small_release: Path, tmp_path: Path) -> None:
    release = tmp_path / "release"
    shutil.copytree(small_release, release)
    cache = {"unigram_weight": 0.0, "bigram_weight": 0.3}
    settings = {"scale": 1.0, "prior": 1.0, "policy": "per_sentence", "device_cache": cache}
    record_card_field(release, "personalization", settings)
    with TestClient(create_app(make_settings(release, tmp_path / "api.db"))) as app:
        phone = _device(app).create_user().open()
        assert phone.model_version == _device(app).model_version  # the card edit keeps the version
        assert phone.adapter_config == CacheAdapterConfig(scale=1.0, prior=1.0)
        phone.contribute(EARLIER)
        counts, expected, _ = phone.user_statistics()
        stored = phone.user_adapter()
        np.testing.assert_allclose(
            stored, adapter_from_statistics(counts, expected, phone.adapter_config), atol=1e-3
        )
        assert np.abs(stored - adapter_from_statistics(counts, expected)).max() > 0.1  # not the defaults
        # the phone mixes its own cache LM (it typed w40 after w9); a second device shares only the adapter
        laptop = _device(app).import_user(phone.export_user()).open()
        assert phone.device_cache.config == DeviceCacheConfig(0.0, 0.3)
        shared, other = (
            phone.next_word_distribution("w3 w9", local=False),
            laptop.next_word_distribution("w3 w9"),
        )
        np.testing.assert_allclose(shared, other, atol=1e-3)
        w40 = phone.vocab.words.index("w40")
        assert phone.next_word_distribution("w3 w9")[w40] > shared[w40] + 0.2
