"""Which releases the API may serve: only one with a user-level DP guarantee, unless told otherwise.

The released encoder is served in the clear (``GET /v1/model/weights``) and the head runs on the
server; that is safe only because federated DP-SGD bounds what they reveal about any one user
(DESIGN.md). A release trained centrally on users' text without DP (``bench quality --release-dir``)
is refused unless the operator says so (``--allow-non-private`` / ``HUSHTYPE_ALLOW_NON_PRIVATE=1``).
"""

from __future__ import annotations

import math

__all__ = ["NonPrivateRelease", "release_privacy", "check_servable"]


class NonPrivateRelease(ValueError):
    """The release's card shows no user-level DP guarantee and serving it was not explicitly allowed."""


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def release_privacy(card: dict) -> dict:
    """The card's user-level DP figures: ``user_level_dp`` is true iff epsilon and delta are finite."""
    epsilon, delta = _finite(card.get("user_epsilon")), _finite(card.get("user_delta"))
    return {
        "user_level_dp": epsilon is not None and delta is not None,
        "user_epsilon": epsilon,
        "user_delta": delta,
        "trained": str(card.get("trained", "unknown")),
    }


def check_servable(card: dict, release_dir: str, allow_non_private: bool) -> dict:
    """``release_privacy(card)`` plus ``non_private_allowed``; raise ``NonPrivateRelease`` if refused."""
    privacy = release_privacy(card)
    if not privacy["user_level_dp"] and not allow_non_private:
        raise NonPrivateRelease(
            f"{release_dir} has no user-level DP guarantee (its card says: trained {privacy['trained']!r}, "
            f"user_epsilon {card.get('user_epsilon')!r}); serve a DP release (hushtype demo writes "
            "runs/demo/federated/release) or pass --allow-non-private (HUSHTYPE_ALLOW_NON_PRIVATE=1)"
        )
    return {**privacy, "non_private_allowed": bool(allow_non_private)}
