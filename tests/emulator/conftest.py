"""Fixtures for the emulator's own tests: an emulator on a free port and SDK clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from emulator import Emulator, ManualClock, run_emulator

TEST_TIMEOUT = 30  # seconds; a hung emulator test fails fast instead of waiting for the global timeout
RETRY_AFTER = 0.01  # seconds announced on injected 429s: small so SDK retries stay fast

FUNCTION_PARAMETERS = {
    "type": "object",
    "properties": {"task": {"type": "string"}, "context": {"type": "string"}},
    "required": ["task", "context"],
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/emulator/" in str(item.path).replace("\\", "/") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


def ask_tools(*subs: str) -> list[dict[str, object]]:
    """Function tools `ask_<sub>` as the engine offers them to the proxy."""
    return [
        {"type": "function", "name": f"ask_{sub}", "description": f"Ask {sub}.", "parameters": FUNCTION_PARAMETERS}
        for sub in subs
    ]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(retry_after=RETRY_AFTER, seed=1) as emulator:
        yield emulator


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def memu(clock: ManualClock) -> AsyncIterator[Emulator]:
    """An emulator on a manual clock (delays and expiry only pass when the test advances the clock)."""
    async with run_emulator(clock=clock, retry_after=RETRY_AFTER, expiry_seconds=600, seed=2) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=emu.base_url, api_key="x", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
async def mclient(memu: Emulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=memu.base_url, api_key="x", max_retries=0) as sdk:
        yield sdk
