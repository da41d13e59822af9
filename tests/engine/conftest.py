from __future__ import annotations

import pytest

from tests.engine.harness import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: every test that takes this fixture runs once per backend."""
    return request.param
