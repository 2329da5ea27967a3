"""Venue latency models: how long a message takes one way.

Role in the pipeline: every child order travelling to a simulated venue, and
every batch of reports coming back, is delayed by one draw from its venue's
model (``ext.simloop`` asks for draws in batches through ``sample``). Each
model has its own seeded generator, so the latencies of one venue do not
depend on how many messages another venue saw.

Models (all in microseconds in configuration, nanoseconds out):

``fixed``
    Always ``mean_us``.
``normal``
    ``N(mean_us, std_us)``, cut below at ``min_us``.
``lognormal``
    ``median_us * exp(sigma * N(0, 1))``, cut below at ``min_us``: the long
    right tail real networks show.

Every time parameter is from 0 to ``MAX_LATENCY_US`` (one day), ``sigma``
from 0 to ``MAX_SIGMA`` (10), and every draw is capped at one day.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MODELS = ("fixed", "normal", "lognormal")
#: The keys each model reads (a venue's ``latency`` table may name no other).
LATENCY_KEYS = {
    "fixed": {"model", "mean_us", "seed"},
    "normal": {"model", "mean_us", "std_us", "min_us", "seed"},
    "lognormal": {"model", "median_us", "sigma", "min_us", "seed"},
}

#: Upper bound of every latency parameter and of every draw: one day, in
#: microseconds. Simulated time is int64 ns since the epoch (about 2^60.6
#: today), so a latency of some 85 years would wrap it; one day leaves the
#: arithmetic exact and is far beyond any venue worth simulating.
MAX_LATENCY_US = 86_400_000_000.0

#: Upper bound of the log-normal ``sigma``: draws then span up to e^(10 x 9)
#: of the median before the cap, and ``exp`` never overflows to inf (which
#: times a zero median would be nan).
MAX_SIGMA = 10.0


@dataclass(frozen=True)
class LatencySpec:
    """Configuration of a latency model (see the module docstring).

    Parameters
    ----------
    model : str
        ``"fixed"``, ``"normal"`` or ``"lognormal"``.
    mean_us : float
        Fixed value or mean (``fixed``, ``normal``).
    std_us : float
        Standard deviation (``normal``).
    median_us : float
        Median (``lognormal``).
    sigma : float
        Standard deviation of the log (``lognormal``).
    min_us : float
        Floor for the random models.
    seed : int or None
        Seed of the model's generator; None derives one from the session seed.
    """

    model: str = "fixed"
    mean_us: float = 100.0
    std_us: float = 0.0
    median_us: float = 100.0
    sigma: float = 0.0
    min_us: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"latency model {self.model!r}: expected one of {', '.join(MODELS)}")
        for name in ("mean_us", "std_us", "median_us", "sigma", "min_us"):
            value = getattr(self, name)
            high, what = (MAX_SIGMA, f"{MAX_SIGMA:g}") if name == "sigma" else \
                (MAX_LATENCY_US, f"{MAX_LATENCY_US:.0f} (one day)")
            # ``not value >= 0`` also refuses nan, which every comparison fails.
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"latency {name} = {value!r}: must be a finite number >= 0")
            if value > high:
                raise ValueError(f"latency {name} = {value!r}: must be at most {what}")

    @property
    def is_zero(self) -> bool:
        """Every draw is 0 (``fixed`` at 0 us): no latency at all."""
        return self.model == "fixed" and self.mean_us == 0

    @property
    def typical_us(self) -> float:
        """The model's central value (mean or median), for display and routing."""
        return self.median_us if self.model == "lognormal" else self.mean_us


class LatencyModel:
    """A seeded source of one-way latencies in nanoseconds.

    Parameters
    ----------
    spec : LatencySpec
    seed : int
        Used when ``spec.seed`` is None.

    Examples
    --------
    >>> m = LatencyModel(LatencySpec("fixed", mean_us=250), seed=1)
    >>> m.sample(3).tolist()
    [250000, 250000, 250000]
    """

    def __init__(self, spec: LatencySpec, seed: int = 0) -> None:
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed if spec.seed is not None else seed)

    def sample(self, n: int) -> np.ndarray:
        """``n`` latencies (int64 ns, from 0 to ``MAX_LATENCY_US`` x 1,000)."""
        s = self.spec
        if s.model == "fixed":
            us = np.full(n, s.mean_us)
        elif s.model == "normal":
            us = np.maximum(self.rng.normal(s.mean_us, s.std_us, n), s.min_us)
        else:
            us = np.maximum(s.median_us * np.exp(s.sigma * self.rng.standard_normal(n)), s.min_us)
        # The random models' tails can pass any bound the parameters keep
        # (a log-normal one by orders of magnitude): cap the draws, so the
        # int64 conversion and the loop's time arithmetic stay exact.
        return np.rint(np.minimum(us, MAX_LATENCY_US) * 1_000).astype(np.int64)
