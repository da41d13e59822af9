"""The provider fault matrix in CI: a subset of `python -m benchmarks.fault_matrix` (see its docstring).

Every fault point of the `plain` and `delegation` reference turns, on every backend, times the kinds that matter
most (`CI_KINDS`), one test per cell: ``test_cell[<backend>/<turn>/<point>/<kind>]``. The points come from recording
the reference turns when this module is collected (a fraction of a second). Each cell runs the turn on its own
emulator and bot with exactly that fault and checks the outcome with the benchmark's checker (`judge`).

Cells that fail on today's engine are listed in `KNOWN_FAILURES` with what goes wrong. They run as
``xfail(strict=True)``: once fixed they XPASS, which fails the run until the entry is removed. When the module ends,
a summary names every failing cell, expected or not.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterator

import pytest

from benchmarks.fault_matrix import (
    RECOVERY_KINDS,
    TURNS,
    Cell,
    EngineLog,
    Verdict,
    judge,
    observe,
    record_reference,
    recovery_cells,
    run_cells,
    single_cells,
)

CI_TURNS = ("plain", "delegation")
CI_BACKENDS = ("responses", "chains", "assistants", "chat")
CI_KINDS = (
    "reset",
    "timeout",
    "http_500",
    "http_429",
    "lock",
    "deleted",
    "break@first",  # before the first event
    "break@1",
    "break@mid",
    "break@last",  # right after the terminal event
    "failed:server_error",
    "failed:invalid_prompt",
    "cancelled",
    "queued",
    "expired",
    "poll:gone",
    "poll:failed:server_error",
)

KNOWN_FAILURES: dict[str, str] = {}

_RESULTS: list[Verdict] = []


async def _references() -> list[Cell]:
    cells: list[Cell] = []
    for backend in CI_BACKENDS:
        for name in CI_TURNS:
            cells += single_cells(await record_reference(backend, TURNS[name]), CI_KINDS)
    return cells


@functools.cache
def _ci_cells() -> list[Cell]:
    """Recorded once per session, when the module is collected."""
    return asyncio.run(_references())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" not in metafunc.fixturenames:
        return
    params = []
    for cell in _ci_cells():
        reason = KNOWN_FAILURES.get(cell.slug)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(cell, id=cell.slug, marks=marks))
    metafunc.parametrize("cell", params)


class _Summary:
    """A plugin printing which cells failed, once the run's own summary is written (output written during the
    tests themselves would be captured)."""

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not _RESULTS:
            return
        failing = [verdict for verdict in _RESULTS if not verdict.passed]
        terminalreporter.section("fault matrix (CI subset)")
        terminalreporter.write_line(f"{len(_RESULTS)} cells run, {len(failing)} failing")
        for verdict in failing:
            known = "known" if verdict.cell.slug in KNOWN_FAILURES else "NEW"
            terminalreporter.write_line(f"  [{known}] {verdict.cell.slug}: {verdict.problems[0]}")
        for verdict in _RESULTS:
            if verdict.passed and verdict.cell.slug in KNOWN_FAILURES:
                terminalreporter.write_line(f"  [fixed: remove from KNOWN_FAILURES] {verdict.cell.slug}")


@pytest.fixture(scope="module", autouse=True)
def matrix_summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Keep the engine's warnings with the cell that caused them; name the failing cells at the end of the run."""
    plugins = request.config.pluginmanager
    if not plugins.has_plugin("fault-matrix-summary"):
        plugins.register(_Summary(), "fault-matrix-summary")
    handler = EngineLog()
    logging.getLogger("switchboard").addHandler(handler)
    yield
    logging.getLogger("switchboard").removeHandler(handler)


async def test_cell(cell: Cell) -> None:
    verdict = judge(cell, await observe(cell.turn, cell.backend, cell.faults()))
    _RESULTS.append(verdict)
    details = [*verdict.problems, "replies:", *(f"  {kind}: {text!r}" for kind, text in verdict.replies)]
    details += ["faults that fired:", *(f"  {line}" for line in verdict.took_effect)]
    details += ["engine log:", *(f"  {line}" for line in verdict.engine_log[:10])]
    assert verdict.passed, "\n".join(details)


def test_every_known_failure_names_a_cell_of_this_matrix() -> None:
    slugs = {cell.slug for cell in _ci_cells()}
    assert sorted(set(KNOWN_FAILURES) - slugs) == []


@pytest.mark.parametrize("backend", CI_BACKENDS)
async def test_a_recovery_whose_own_requests_fail_once_still_answers_exactly_once(backend: str) -> None:
    """Faults enumerated at the points a recovery adds (`--recovery`): after a create that may have been taken (its
    stream broke before the first event, or it timed out unanswered), every request the recovery makes (a lookup
    of the lost create, a resend, a poll) fails once in turn. The fault soak found such a lookup ending a turn with
    the internal-error text."""
    reference = await record_reference(backend, TURNS["delegation"])
    firsts = await run_cells(single_cells(reference, ("break@first", "timeout")), {}, concurrency=2)
    assert firsts and all(verdict.passed for verdict in firsts)
    wanted = tuple(kind for kind in RECOVERY_KINDS if kind.name in ("http_429", "reset"))
    cells = recovery_cells(reference, firsts, wanted)
    assert len(cells) >= len(firsts)  # every one of those recoveries makes requests of its own
    verdicts = await run_cells(cells, {}, concurrency=2)
    failing = [f"{v.cell.label}: {v.problems[0]}" for v in verdicts if not v.passed]
    assert not failing, "\n".join(failing)
