"""A ramp for the encrypted prediction load test: warm up, step up to a peak, hold, step down, stop.

Add this file next to a scenario; with a shape, locust ignores ``-u``/``-r`` (``-t`` still caps the run)::

    locust -f loadtests/locustfile_encrypted_predict.py,loadtests/shape_ramp.py --headless -t 120s \\
        --host http://127.0.0.1:8000 --csv /tmp/hushtype-ramp --only-summary

``HUSHTYPE_RAMP_TIME_SCALE`` (default 1.0) multiplies every stage's end time, so ``0.25`` plays the whole
ramp in ~23 s for a smoke run. ``HUSHTYPE_RAMP_PEAK`` (default 8) is the peak user count; the other
stages are fixed fractions of it. Session creation uploads ~6 MB of eval keys per user, so spawn rates
stay low: a burst of new users is itself load.
"""

from __future__ import annotations

import math
import os

from locust import LoadTestShape


class RampShape(LoadTestShape):
    """Stages of a ramp; each stage is a dict with these keys.

    - ``until``: seconds since the test started at which this stage ends (cumulative, increasing).
    - ``load``: target users during the stage, as a fraction of the peak (``HUSHTYPE_RAMP_PEAK``);
      rounded up, at least 1.
    - ``spawn_rate``: users started (or stopped) per second while moving to the target.

    ``tick()`` returns ``(users, spawn_rate)`` for the current stage, or ``None`` after the last one,
    which stops the test.
    """

    stages: list[dict] = [
        {"until": 15, "load": 0.25, "spawn_rate": 1},  # warm-up: sessions created, workers' key caches fill
        {"until": 30, "load": 0.5, "spawn_rate": 1},
        {"until": 45, "load": 0.75, "spawn_rate": 1},
        {"until": 75, "load": 1.0, "spawn_rate": 1},  # hold at the peak: the numbers to read
        {"until": 90, "load": 0.25, "spawn_rate": 2},  # step down: sessions deleted, latency recovers
    ]

    def __init__(self) -> None:
        super().__init__()
        self.time_scale = float(os.environ.get("HUSHTYPE_RAMP_TIME_SCALE", "1.0"))
        self.peak = int(os.environ.get("HUSHTYPE_RAMP_PEAK", "8"))
        if self.time_scale <= 0 or self.peak < 1:
            raise ValueError("HUSHTYPE_RAMP_TIME_SCALE must be > 0 and HUSHTYPE_RAMP_PEAK >= 1.")

    def users_at(self, load: float) -> int:
        """Users for a stage's ``load`` fraction of the peak."""
        return max(1, math.ceil(load * self.peak))

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        for stage in self.stages:
            if run_time < stage["until"] * self.time_scale:
                return self.users_at(stage["load"]), stage["spawn_rate"]
        return None
