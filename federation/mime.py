"""MimeLite's server-held Adam state (Karimireddy et al. 2021, arXiv:2008.03606), shared by both sides.

The server keeps Adam's moments ``m``, ``v`` of the trained arrays; every round it ships them folded into
Adam's next step (``FrozenState``), each device takes its K local steps with that state frozen
(``keyboard_sim.plain_device.FrozenAdam``) and returns its update plus the per-step means of ``g`` and
``g * g``; the server averages the updates (FedAvg) and moves ``m``, ``v`` by the averaged statistics
(``MimeState.update``). Round 1 (no statistics yet) steps like Adam's first step: lr * g / |g|.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FrozenState", "MimeState", "VSTATS"]

VSTATS = ("g2", "gbar2", "b512")  # where v's statistic comes from (``MimeState.vstat``)


@dataclass(frozen=True)
class FrozenState:
    """The server's Adam state a MimeLite device steps with, per trained array.

    A device step is ``p <- p - lr * (m + gm * g) / (sqrt(v + gv * g^2) + eps)``. At server step t+1
    (t state updates so far): ``m = beta1 m_t / c1``, ``gm = (1 - beta1) / c1``, ``v = beta2 v_t / c2``,
    ``gv = (1 - beta2) / c2`` with ``c_i = 1 - beta_i^(t+1)``: Adam's bias-corrected step with the step's
    own gradient g in place of the round's mean one.
    """

    m: dict[str, np.ndarray]
    v: dict[str, np.ndarray]
    gm: float
    gv: float
    eps: float


@dataclass
class MimeState:
    """Adam's moments of the trained arrays, held by the server and updated from device statistics."""

    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    vstat: str = "b512"  # "g2": mean per-step g^2; "gbar2": (mean g)^2; "b512": g^2 of a batch of `batch`
    batch: int = 512  # "b512"'s batch: (mean g)^2 + (g2 - (mean g)^2) * device_batch / batch
    t: int = 0
    m: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)

    def frozen(self, shapes: dict[str, np.ndarray]) -> FrozenState:
        """What devices step with this round (``shapes``: the trained arrays; the moments start at 0)."""
        c1, c2 = 1 - self.beta1 ** (self.t + 1), 1 - self.beta2 ** (self.t + 1)
        zero = np.zeros((), np.float32)
        m = {k: (self.beta1 / c1 * self.m.get(k, zero)).astype(np.float32) for k in shapes}
        v = {k: (self.beta2 / c2 * self.v.get(k, zero)).astype(np.float32) for k in shapes}
        return FrozenState(m, v, (1 - self.beta1) / c1, (1 - self.beta2) / c2, self.eps)

    def update(self, g: dict[str, np.ndarray], g2: dict[str, np.ndarray], device_batch: int) -> None:
        """Adam's moment update from the round's mean per-step ``g`` and ``g2`` (= mean of g * g)."""
        self.t += 1
        for k in g:
            sq = g[k] * g[k]
            if self.vstat == "g2":
                stat = g2[k]
            elif self.vstat == "gbar2":
                stat = sq
            else:
                stat = sq + np.maximum(g2[k] - sq, 0) * (device_batch / self.batch)
            self.m[k] = self.beta1 * self.m.get(k, 0) + (1 - self.beta1) * g[k]
            self.v[k] = self.beta2 * self.v.get(k, 0) + (1 - self.beta2) * stat
