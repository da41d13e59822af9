"""Hypothesis profiles for the hostile-input tests: `ci` (200 cases per property, the default) and `soak`
(10,000 per property): `SWITCHBOARD_FUZZ=soak python -m pytest tests/reliability` (or
`python -m pytest tests/reliability --hypothesis-profile=soak`)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 200
SOAK_EXAMPLES = 10_000
_common = {
    "deadline": None,
    "derandomize": False,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=CI_EXAMPLES, **_common)
settings.register_profile("soak", max_examples=SOAK_EXAMPLES, **_common)


def fuzz_settings() -> settings:
    """The settings every hostile-input property runs with (see the module docstring)."""
    soak = os.environ.get("SWITCHBOARD_FUZZ") == "soak" or settings.default.max_examples >= SOAK_EXAMPLES
    return settings.get_profile("soak" if soak else "ci")
