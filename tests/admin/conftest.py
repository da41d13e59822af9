from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from emulator import Emulator, run_emulator
from tests.engine.harness import BACKENDS


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(retry_after=0.01) as emulator:
        yield emulator


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: every test that takes this fixture runs once per backend (and the mixed team)."""
    return str(request.param)
