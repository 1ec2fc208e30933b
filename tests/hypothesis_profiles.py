"""Hypothesis settings for the fuzz suites, without touching the global profile.

The fuzz tests decorate themselves with ``FUZZ`` (or ``fuzz(n)``), which derives from one of two
profiles registered here:

- ``rawsse-ci`` (the default): few examples, no deadline, so the three fuzz files run in well
  under a minute on two cores.
- ``rawsse-long`` (``RAWSSE_HYPOTHESIS=long``): a hundred times more examples, for a night's
  fuzzing: ``RAWSSE_HYPOTHESIS=long python -m pytest tests/test_fuzz_*.py --timeout 0``.

Nothing calls ``settings.load_profile``: importing this module changes no other test's settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    # Tests against a live server are slow per example and share a module-scoped server.
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    "print_blob": True,
}

settings.register_profile("rawsse-ci", max_examples=100, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("rawsse-long", max_examples=10_000, **_COMMON)  # type: ignore[arg-type]

PROFILE = (
    "rawsse-long" if os.environ.get("RAWSSE_HYPOTHESIS", "").lower() == "long" else "rawsse-ci"
)
LONG = PROFILE == "rawsse-long"


def fuzz(ci_examples: int) -> settings:
    """Settings for one fuzz test: ``ci_examples`` in CI, 100 times that in the long profile."""
    base = settings.get_profile(PROFILE)
    examples = ci_examples * 100 if LONG else ci_examples
    return settings(base, max_examples=examples)


FUZZ = fuzz(100)
