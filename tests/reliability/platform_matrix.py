"""What the Slack and Discord fault matrices share: which cases a (possibly narrowed) run needs, and the engine's
warning lines. Each matrix builds its cases and one shared bot for all of them; these helpers keep that setup
to the cases the selected tests look at."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import pytest


class HasId(Protocol):
    @property
    def id(self) -> str: ...


CaseT = TypeVar("CaseT", bound=HasId)


def selected_cases(
    request: pytest.FixtureRequest, all_cases: Sequence[CaseT], for_scenario: Callable[[str], CaseT]
) -> list[CaseT]:
    """The cases the selected tests of the requesting module look at (all of them unless -k / node ids narrowed
    the run): tests take a `case` parameter, or a `scenario` whose reference case is `for_scenario(scenario)`."""
    wanted: set[str] = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.module is request.module and callspec is not None:
            case = callspec.params.get("case")
            scenario = callspec.params.get("scenario")
            if case is not None:
                wanted.add(case.id)
            elif scenario is not None:
                wanted.add(for_scenario(scenario).id)
    chosen = [case for case in all_cases if case.id in wanted]
    return chosen or list(all_cases)


class WarningLines(logging.Handler):
    """Keeps the text of every warning (and worse) logged where it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
