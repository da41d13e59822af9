"""Emulator throughput: plain `POST /v1/responses` and `GET /v1/responses/{id}` requests per second.

    python -m benchmarks.emulator_throughput [--seconds 5] [--concurrency 64] [--client aiohttp|sdk]

The emulator runs in its own process, started through the CLI (``switchboard emulator --port 0``), so its CPU is
not shared with the load generator's event loop (on a 2-core box they get one core each). Target (issue 2):
>= 500 requests/s for each kind.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import openai

REPO = Path(__file__).resolve().parents[1]
TARGET_RPS = 500
STARTUP_TIMEOUT = 30.0
WARMUP_REQUESTS = 200
CREATE_BODY = {"model": "bench", "input": "hello there", "metadata": {"agent": "bench"}}


@asynccontextmanager
async def emulator_process() -> AsyncIterator[str]:
    """``python -m switchboard.cli emulator --port 0`` in a subprocess; yields its base URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchboard.cli",
        "emulator",
        "--port",
        "0",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)).decode()
        if "listening on" not in line:
            raise RuntimeError(f"emulator did not start: {line!r}")
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        process.terminate()
        await process.wait()


Request = Callable[[int], Awaitable[str]]


async def drive(request: Request, seconds: float, concurrency: int) -> tuple[int, float]:
    """Run `concurrency` workers issuing requests back to back for `seconds`; return (count, elapsed)."""
    counter = itertools.count()
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await request(next(counter))
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - start


def aiohttp_requests(session: aiohttp.ClientSession, base_url: str, ids: list[str]) -> tuple[Request, Request]:
    async def create(_: int) -> str:
        async with session.post(f"{base_url}/responses", json=CREATE_BODY) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"create failed: {response.status} {body[:200]!r}")
        response_id = json.loads(body)["id"]
        ids.append(response_id)
        return response_id

    async def retrieve(index: int) -> str:
        async with session.get(f"{base_url}/responses/{ids[index % len(ids)]}") as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"retrieve failed: {response.status} {body[:200]!r}")
        return ids[index % len(ids)]

    return create, retrieve


def sdk_requests(client: openai.AsyncOpenAI, ids: list[str]) -> tuple[Request, Request]:
    async def create(_: int) -> str:
        response = await client.responses.create(**CREATE_BODY)  # type: ignore[call-overload]
        ids.append(response.id)
        return response.id

    async def retrieve(index: int) -> str:
        return (await client.responses.retrieve(ids[index % len(ids)])).id

    return create, retrieve


async def measure(base_url: str, seconds: float, concurrency: int, client_kind: str) -> dict[str, float]:
    ids: list[str] = []
    results: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0) as sdk,
    ):
        if client_kind == "sdk":
            create, retrieve = sdk_requests(sdk, ids)
        else:
            create, retrieve = aiohttp_requests(session, base_url, ids)
        await asyncio.gather(*(create(index) for index in range(WARMUP_REQUESTS)))
        for name, request in (("create", create), ("retrieve", retrieve)):
            count, elapsed = await drive(request, seconds, concurrency)
            results[name] = count / elapsed
    return results


async def main_async(args: argparse.Namespace) -> int:
    async with emulator_process() as base_url:
        results = await measure(base_url, args.seconds, args.concurrency, args.client)
    print(f"emulator throughput ({args.client} client, {args.concurrency} concurrent, {args.seconds:g} s per kind)")
    ok = True
    for name, rps in results.items():
        verdict = "ok" if rps >= TARGET_RPS else f"BELOW TARGET {TARGET_RPS}"
        ok = ok and rps >= TARGET_RPS
        label = "POST /v1/responses" if name == "create" else "GET  /v1/responses/{id}"
        print(f"  {label:<26} {rps:8.0f} req/s  {verdict}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per request kind")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--client", choices=("aiohttp", "sdk"), default="aiohttp", help="load generator")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
