"""SIGKILL the engine while a sub-assistant with `context = "fork"` works: after its forked thread is recorded (before
its run starts), and while its run goes. The restarted engine keeps to that one fork and answers exactly once."""

from __future__ import annotations

import pytest

from emulator import ManualClock, Rule, Script, run_emulator
from tests.engine.harness import BACKENDS, backend_of, remote_runs
from tests.engine.test_crash import Engine, platform


def forked_threads(engine: Engine) -> list[str]:
    return [line.split()[2] for line in engine.lines if line.startswith("thread critic#")]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_killed_fork_resumes_on_its_own_thread_and_answers_once(tmp_path, backend):
    clock = ManualClock()
    scripts = {"critic": Script(rules=[Rule(delay=5.0)])}
    async with run_emulator(clock=clock, scripts=scripts, retry_after=0.01) as emu, platform() as (fake, url):
        engine = Engine(tmp_path / "crash.db", emu.base_url, url, backend)
        base = list(engine.args)
        try:
            # 1. killed right after the forked thread was recorded, before the critic's run was created
            engine.args = [*base, "--critic-context", "fork", "--hold-after-fork"]
            await engine.start()
            await engine.send("m1", "ask the critic about plan one")
            await engine.expect("thread critic#")
            [fork] = forked_threads(engine)
            assert not remote_runs(emu, "critic")
            await engine.kill()

            # 2. restarted: the turn resumes on that fork (no second one); killed while the critic works
            engine.args = [*base, "--critic-context", "fork"]
            await engine.start()
            await engine.expect("recorded critic")
            assert forked_threads(engine) == []
            await engine.kill()

            # 3. restarted again: it re-attaches (a chat completion died with the process and is sent again)
            await engine.start()
            if backend_of(backend, "critic") == "chat":
                await engine.expect("recorded critic")
            await clock.advance(5.0)
            await fake.wait_count(1)
            assert forked_threads(engine) == []
        finally:
            await engine.close()
    [delivered] = fake.delivered
    assert delivered["kind"] == "answer" and "critic: done with" in delivered["text"]
    runs = remote_runs(emu, "critic")
    assert {r.thread for r in runs} == {fork}
    assert sum(r.status == "completed" for r in runs) == 1
