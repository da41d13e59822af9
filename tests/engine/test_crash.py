"""SIGKILL the engine at several points of a delegated turn; a restart finishes every turn, exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from emulator import ManualClock, Rule, Script, run_emulator
from tests.engine.harness import BACKENDS, backend_of, remote_runs

REPO = Path(__file__).resolve().parents[2]
WAIT = 30.0


class FakePlatform:
    """Records deliveries. `hold_before` stalls a delivery before recording it, `hold_after` after recording it
    but before answering: the two ways a crash can meet a delivery."""

    def __init__(self) -> None:
        self.delivered: list[dict[str, str]] = []
        self.mode = "normal"
        self.held = asyncio.Event()
        self.changed = asyncio.Event()

    async def deliver(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.mode == "hold_before":
            self.held.set()
            await asyncio.Event().wait()
        self.delivered.append(body)
        self.changed.set()
        if self.mode == "hold_after":
            self.held.set()
            await asyncio.Event().wait()
        return web.json_response({"id": f"m{len(self.delivered)}"})

    async def find(self, request: web.Request) -> web.Response:
        turn_id = request.query["turn_id"]
        for i, body in enumerate(self.delivered):
            if body["turn_id"] == turn_id:
                return web.json_response({"id": f"m{i + 1}"})
        return web.json_response({"error": "not found"}, status=404)

    async def wait_count(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.delivered) < count:
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def platform() -> AsyncIterator[tuple[FakePlatform, str]]:
    fake = FakePlatform()
    app = web.Application()
    app.router.add_post("/deliver", fake.deliver)
    app.router.add_get("/find", fake.find)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Engine:
    def __init__(self, db: Path, base_url: str, platform_url: str, backend: str, team: str = "delegation") -> None:
        self.args = ["--db", str(db), "--base-url", base_url, "--platform-url", platform_url, "--backend", backend,
                     "--team", team]
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._seen = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, *extra: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.engine.crash_worker", *self.args, *extra, cwd=REPO,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.lines.clear()
        self._reader = asyncio.create_task(self._read(self.proc))
        await self.expect("ready")

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout
        while line := await proc.stdout.readline():
            async with self._seen:
                self.lines.append(line.decode().strip())
                self._seen.notify_all()

    async def expect(self, prefix: str) -> None:
        """Wait until the worker printed a line starting with `prefix`."""
        async with asyncio.timeout(WAIT), self._seen:
            await self._seen.wait_for(lambda: any(line.startswith(prefix) for line in self.lines))

    async def send(self, event_id: str, text: str) -> None:
        assert self.proc and self.proc.stdin
        message = {"platform": "console", "event_id": event_id, "conversation": f"console:crash:{event_id}",
                   "channel": "console:crash", "user": "u1", "text": text}
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        await self.proc.stdin.drain()
        await self.expect(f"accepted {event_id}")

    async def kill(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        if self._reader:
            await self._reader

    async def close(self) -> None:
        if self.proc and self.proc.returncode is None:
            await self.kill()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_sigkill_at_every_stage_still_answers_each_message_exactly_once(tmp_path, backend):
    clock = ManualClock()
    scripts = {"critic": Script(rules=[Rule(delay=5.0)])}
    async with run_emulator(clock=clock, scripts=scripts, retry_after=0.01) as emu, platform() as (fake, url):
        engine = Engine(tmp_path / "crash.db", emu.base_url, url, backend)
        try:
            # 1. killed right after acknowledging, before or as the proxy run starts
            await engine.start()
            await engine.send("m1", "ask the critic about plan one")
            await engine.kill()

            # 2. killed while the sub-assistant is still working
            await engine.start()
            await engine.expect("recorded critic")
            await engine.kill()
            critic_runs = len(remote_runs(emu, "critic"))

            # the restarted engine re-attaches to the running sub-assistant instead of starting it again; a chat
            # completion died with the process's connection and kept nothing, so it is sent once more
            await engine.start()
            critic_on_chat = backend_of(backend, "critic") == "chat"
            if critic_on_chat:
                await engine.expect("recorded critic")
            await clock.advance(5.0)
            await fake.wait_count(1)
            assert len(remote_runs(emu, "critic")) == critic_runs + critic_on_chat

            # 3. killed after the reply was recorded, before the platform accepted it
            fake.mode = "hold_before"
            fake.held.clear()
            await engine.send("m2", "hello two")
            async with asyncio.timeout(WAIT):
                await fake.held.wait()
            await engine.kill()
            fake.mode = "normal"
            await engine.start()
            await fake.wait_count(2)

            # 4. killed after the platform recorded the reply but before the engine heard back
            fake.mode = "hold_after"
            fake.held.clear()
            await engine.send("m3", "hello three")
            async with asyncio.timeout(WAIT):
                await fake.held.wait()
            await engine.kill()
            fake.mode = "normal"
            await engine.start()
            await engine.send("m4", "hello four")  # proves the restarted engine is live, and gives recovery time
            await fake.wait_count(4)
            await asyncio.sleep(0)
        finally:
            await engine.close()
        texts = sorted(d["text"] for d in fake.delivered)
        assert len(fake.delivered) == 4, fake.delivered
        assert len({d["turn_id"] for d in fake.delivered}) == 4
        assert any("critic: done with" in t for t in texts)
        assert "You said: hello two" in texts and "You said: hello three" in texts and "You said: hello four" in texts
        assert all(d["kind"] == "answer" for d in fake.delivered)


TRANSFER_STAGES = ("before", "during", "after")


@pytest.mark.parametrize("stage", TRANSFER_STAGES)
@pytest.mark.parametrize("backend", ("responses", "assistants", "chat"))  # one provider shares the main thread
async def test_sigkill_at_each_step_of_a_transfer_gives_one_answer_from_the_new_assistant(tmp_path, backend, stage):
    """Killed before the switch is recorded, between the switch and the new assistant's run, and during that run:
    after a restart the turn ends with one answer, from the editor, and the switch happened exactly once."""
    from storage.sqlite import SQLiteStore

    clock = ManualClock()
    scripts = {"editor": Script(rules=[Rule(delay=5.0, times=1)])} if stage == "after" else {}
    db = tmp_path / "crash.db"
    async with run_emulator(clock=clock, scripts=scripts, retry_after=0.01) as emu, platform() as (fake, url):
        engine = Engine(db, emu.base_url, url, backend, team="handoffs")
        try:
            stall = {"before": "before_transfer", "during": "after_transfer", "after": ""}[stage]
            await engine.start(*(["--stall", stall] if stall else []))
            await engine.send("m1", "editor please, page_id=5")
            await engine.expect({"before": "transferring to editor", "during": "transfer applied to editor",
                                 "after": "recorded editor"}[stage])
            await engine.kill()
            editor_runs = len(remote_runs(emu, "editor"))
            await engine.start()
            if stage == "after":
                if backend_of(backend, "editor") == "chat":  # a chat completion died with the process
                    await engine.expect("recorded editor")
                await clock.advance(5.0)
            await fake.wait_count(1)
            if stage == "after" and backend_of(backend, "editor") != "chat":
                assert len(remote_runs(emu, "editor")) == editor_runs  # re-attached, not started again
            await engine.send("m1b", "editor please, page_id=6")  # the restarted engine is live; gives recovery time
            await fake.wait_count(2)
            await asyncio.sleep(0)
        finally:
            await engine.close()
    replies = [d for d in fake.delivered if d["turn_id"] == fake.delivered[0]["turn_id"]]
    assert len(fake.delivered) == 2 and len(replies) == 1, fake.delivered
    assert replies[0]["text"].startswith("editor: "), replies[0]
    assert "page_id=5" in replies[0]["text"]
    store = SQLiteStore(str(db))
    await store.open()
    try:
        transfers = await store.transfers("console:crash:m1", 0)
        held = await store.handoff_state("console:crash:m1", 0)
    finally:
        await store.close()
    assert [(t.from_agent, t.to_agent) for t in transfers] == [("greeter", "editor")]
    assert held.active == "editor" and dict(held.state) == {"page_id": "5"}
