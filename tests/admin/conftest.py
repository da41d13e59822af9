from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from emulator import Emulator, run_emulator


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(retry_after=0.01) as emulator:
        yield emulator
