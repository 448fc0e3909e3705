"""The hypothesis settings of the fuzz tests: CI runs the same 50 examples every time (derandomized);
``LT_LIGHTNING_FUZZ_RANDOM=1`` and ``LT_LIGHTNING_FUZZ_EXAMPLES=N`` search further."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ = settings(
    max_examples=int(os.environ.get("LT_LIGHTNING_FUZZ_EXAMPLES", "50")),
    derandomize=os.environ.get("LT_LIGHTNING_FUZZ_RANDOM") != "1",
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
