"""Splits are deterministic, disjoint, order-independent; the local split keeps time order."""

import random

import pytest

from keyboard_sim.corpus import UserText
from keyboard_sim.split import SplitConfig, local_split, split_users


def _users(n_groups: int = 10, per_group: int = 12) -> list[UserText]:
    return [
        UserText(f"g{g}/r{r}", [f"line {i}" for i in range(5)], group=f"g{g}")
        for g in range(n_groups)
        for r in range(per_group)
    ]


def _ids(split):
    return (
        [u.user_id for u in split.public],
        [u.user_id for u in split.train],
        [u.user_id for u in split.heldout],
    )


def test_split_is_disjoint_and_complete() -> None:
    users = _users()
    split = split_users(users, SplitConfig(seed=3, public_groups=2, heldout_fraction=0.25))
    public, train, heldout = map(set, _ids(split))
    assert public.isdisjoint(train) and public.isdisjoint(heldout) and train.isdisjoint(heldout)
    assert public | train | heldout == {u.user_id for u in users}
    assert len({u.group for u in split.public}) == 2  # whole groups are public
    assert {u.group for u in split.public}.isdisjoint({u.group for u in split.train + split.heldout})
    assert 0.1 < len(heldout) / (len(train) + len(heldout)) < 0.4


def test_split_is_deterministic_and_order_independent() -> None:
    users = _users()
    cfg = SplitConfig(seed=1)
    shuffled = users[:]
    random.Random(0).shuffle(shuffled)
    a, b = split_users(users, cfg), split_users(shuffled, cfg)
    assert [sorted(x) for x in _ids(a)] == [sorted(x) for x in _ids(b)]
    assert _ids(split_users(users, cfg)) == _ids(a)
    assert _ids(split_users(users, SplitConfig(seed=2))) != _ids(a)


def test_heldout_membership_does_not_depend_on_other_users() -> None:
    users = _users()
    full = {u.user_id for u in split_users(users, SplitConfig(public_groups=0)).heldout}
    half = {u.user_id for u in split_users(users[: len(users) // 2], SplitConfig(public_groups=0)).heldout}
    assert half == {uid for uid in full if uid in {u.user_id for u in users[: len(users) // 2]}}


def test_groupless_users_use_public_fraction() -> None:
    users = [UserText(f"u{i}", ["x"]) for i in range(400)]
    split = split_users(users, SplitConfig(public_fraction=0.25))
    assert 60 < len(split.public) < 140


def test_duplicate_user_ids_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        split_users([UserText("a"), UserText("a")])


@pytest.mark.parametrize(("n", "n_later"), [(0, 0), (1, 0), (2, 0), (3, 1), (5, 1), (10, 2), (13, 3)])
def test_local_split_keeps_last_fifth_in_order(n: int, n_later: int) -> None:
    lines = [f"l{i}" for i in range(n)]
    earlier, later = local_split(lines, 0.2)
    assert earlier + later == lines
    assert len(later) == n_later


def test_split_config_validation_names_field() -> None:
    with pytest.raises(ValueError, match="heldout_fraction"):
        SplitConfig(heldout_fraction=1.0)
