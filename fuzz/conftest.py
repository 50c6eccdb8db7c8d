"""Hypothesis profiles for the property tests; pick one with HYPOTHESIS_PROFILE (default "dev").

ci    bounded and deterministic enough for every push (60 examples, no deadline)
fuzz  long runs (`make fuzz`): 5000 examples per property
dev   hypothesis's defaults
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
