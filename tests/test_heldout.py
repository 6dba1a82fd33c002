"""hushtype.heldout: which held-out windows the bench scores, per-user sums, and the gap's interval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hushtype.heldout import HeldOut, gap_interval
from keyboard_sim.dataset import DataConfig, build_federated_data
from models.nplm import NPLM, ModelConfig
from server.server_app import heldout_sample


def _data(corpus: Path):
    return build_federated_data(DataConfig(source="jsonl", jsonl_path=str(corpus), context=4, vocab_size=64))


def test_the_bench_scores_the_servers_windows_and_knows_each_windows_user(small_jsonl: Path) -> None:
    data = _data(small_jsonl)
    every = HeldOut.sample(data, None, seed=0)
    assert np.array_equal(every.windows.x, data.heldout.x) and every.n_users == len(data.heldout_users)
    sizes = [len(u.train) + len(u.later) for u in data.heldout_users]
    assert np.bincount(every.users, minlength=every.n_users).tolist() == sizes
    some = HeldOut.sample(data, 50, seed=3)
    server = heldout_sample(data.heldout, 50, 3)  # what a run's server scores with the same settings
    assert np.array_equal(some.windows.x, server.x) and np.array_equal(some.windows.y, server.y)
    assert len(some.users) == 50 and set(some.users) <= set(every.users)


def test_per_user_sums_add_up_to_the_metrics(small_jsonl: Path) -> None:
    data = _data(small_jsonl)
    heldout = HeldOut.sample(data, None, seed=0)
    torch.manual_seed(0)
    model = NPLM(ModelConfig(vocab_size=len(data.vocab.words), context=4, embed_dim=8, hidden=16))
    scores = heldout.score(model)
    by_user = scores["by_user"]
    assert abs(by_user["hits"].sum() / by_user["known"].sum() - scores["top1"]) < 1e-12
    assert abs(by_user["nll"].sum() / by_user["windows"].sum() - scores["loss"]) < 1e-5


def _arm(hits: list[float], known: list[float]) -> dict:
    hits_a, known_a = np.asarray(hits, float), np.asarray(known, float)
    nll = known_a * 5.0 - hits_a  # a loss that falls as hits rise
    return {"by_user": {"hits": hits_a, "known": known_a, "nll": nll, "windows": known_a}}


def test_gap_interval_resamples_users() -> None:
    known = [100.0] * 40
    public = _arm([10.0] * 40, known)
    central = _arm([14.0] * 40, known)
    halfway = _arm([12.0] * 40, known)  # the same gap on every user: no spread
    lo, hi = gap_interval(halfway, public, central)
    assert abs(lo - 0.5) < 1e-9 and abs(hi - 0.5) < 1e-9
    assert np.allclose(gap_interval(central, public, central, metric="loss"), [1.0, 1.0])
    mixed = _arm([10.0, 14.0] * 20, known)  # half the users got nothing, half all of it: gap 0.5
    lo, hi = gap_interval(mixed, public, central, draws=4000)
    assert lo < 0.45 and hi > 0.55 and lo < 0.5 < hi


def test_gap_interval_leaves_out_resamples_with_no_gap_to_close() -> None:
    known = [100.0] * 4
    public = _arm([10.0, 10.0, 10.0, 10.0], known)
    one_user_gains = _arm([10.0, 10.0, 10.0, 14.0], known)  # many resamples miss that user: no gap there
    lo, hi = gap_interval(one_user_gains, public, one_user_gains, draws=500)
    assert np.isfinite([lo, hi]).all() and lo == hi == 1.0
    assert gap_interval(public, public, public) is None  # central ties public everywhere
