"""Shared test configuration.

Hypothesis runs a fixed, derandomized number of examples so the suite is
deterministic and its run time predictable; `HYPOTHESIS_PROFILE=deep` runs many
more when hunting for bugs.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
