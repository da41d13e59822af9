"""The layers hold: imports point down only, wiring (`switchboard/`) -> `adapters/` -> `bot/` -> `storage/`, and the
emulator imports nothing of ours. See docs/ARCHITECTURE.md for the picture.

Every .py file of those packages is parsed with `ast`; every import counts wherever it stands (module level, inside
a function, under `if TYPE_CHECKING:`), relative imports are resolved against the file's package, and
`from bot import types` counts as importing the module `bot.types`. A failure lists each offending file, line and
imported module with the rule it breaks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: our top-level packages; an import of anything else (stdlib, SDKs) is not checked here
FIRST_PARTY = frozenset({"switchboard", "adapters", "bot", "storage", "emulator", "tests", "benchmarks", "fakes"})
#: the folders whose code is checked
CHECKED_FOLDERS = ("switchboard", "adapters", "bot", "storage", "emulator")
#: the emulator's package (top level: the demo ships it, and it imports nothing of the engine)
EMULATOR_PACKAGES = ("emulator",)
#: all that adapters may import from the engine: its public types and the backoff helper (both import only stdlib)
ENGINE_PUBLIC_MODULES = ("bot.types", "bot.backoff")
#: what those modules (and `bot/__init__.py`) may import of ours: only leaves, which the same test checks in turn;
#: `bot.errors` holds the root exception that the errors in `bot.types` derive from
LEAF_IMPORTS: dict[str, tuple[str, ...]] = {"bot.types": ("bot.errors",)}


@dataclass(frozen=True, slots=True)
class ImportLine:
    """One imported module of ours, and where: `path` relative to the repository, 1-based `line`."""

    path: str
    line: int
    module: str


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_of(module: str) -> str:
    """The layer a module of ours belongs to: emulator, switchboard, adapters, bot, storage, tests, benchmarks or
    fakes."""
    if any(is_within(module, package) for package in EMULATOR_PACKAGES):
        return "emulator"
    return module.split(".")[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool, known_modules: frozenset[str]) -> Iterator[
        tuple[int, str]]:
    """(line, module) for every import in `source`, the code of `module`. `from a import b` yields `a.b` when that is
    one of `known_modules` (a submodule), else `a`."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package_parts = package.split(".")
                base = ".".join(package_parts[:len(package_parts) - (node.level - 1)])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                yield node.lineno, submodule if submodule in known_modules else origin


def broken_rule(importer: str, imported: str) -> str | None:
    """Why module `importer` may not import module `imported`, or None when it may."""
    if imported.split(".")[0] not in FIRST_PARTY:
        return None
    layer, target = layer_of(importer), layer_of(imported)
    if layer == "emulator":
        return None if target == "emulator" else "the emulator imports nothing of ours"
    if target in ("tests", "benchmarks", "fakes"):
        return "shipped code never imports tests, benchmarks or fakes"
    if layer == "switchboard":
        return None
    if target == "switchboard":
        return "nothing imports the wiring layer (switchboard/): it is the top"
    if target == "emulator":
        return "only the wiring layer (the demo, `switchboard emulator`) starts the emulator"
    if layer == "adapters":
        if target == "adapters" or any(is_within(imported, public) for public in ENGINE_PUBLIC_MODULES):
            return None
        return f"adapters import from the engine only {', '.join(ENGINE_PUBLIC_MODULES)}; wiring goes in switchboard/"
    if layer == "bot":
        return None if target in ("bot", "storage") else "the engine imports storage, never the adapters"
    if layer == "storage":
        return None if target == "storage" else "storage imports nothing of ours above it"
    return f"unknown layer {layer!r}"


def checked_files() -> list[Path]:
    return sorted(path for folder in CHECKED_FOLDERS if (REPO / folder).is_dir()
                  for path in (REPO / folder).rglob("*.py"))


def our_imports() -> dict[str, list[ImportLine]]:
    """Every import of one of our modules, by importing module."""
    files = checked_files()
    known = frozenset(module_name(path) for path in files)
    found: dict[str, list[ImportLine]] = {}
    for path in files:
        module = module_name(path)
        rel = str(path.relative_to(REPO))
        lines = set(imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py", known))
        found[module] = [ImportLine(rel, line, imported) for line, imported in sorted(lines)
                         if imported.split(".")[0] in FIRST_PARTY]
    return found


def test_imports_point_down_only() -> None:
    offences = [
        f"{imp.path}:{imp.line} imports {imp.module}: {why}"
        for importer, imports in our_imports().items()
        for imp in imports
        if (why := broken_rule(importer, imp.module)) is not None
    ]
    assert not offences, "imports against the layers:\n" + "\n".join(offences)


def test_the_shared_fakes_import_neither_tests_nor_benchmarks() -> None:
    """`fakes/` is the home tests and benchmarks share: it may import the shipped code, never either of them."""
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sorted((REPO / "fakes").rglob("*.py"))
        for line, module in imported_modules(path.read_text(encoding="utf-8"), module_name(path),
                                             path.name == "__init__.py", frozenset())
        if layer_of(module) in ("tests", "benchmarks")
    ]
    assert not offences, "fakes/ must not depend on tests/ or benchmarks/:\n" + "\n".join(offences)


def test_the_engine_modules_adapters_may_import_import_nothing_of_ours() -> None:
    """Adapters reach the engine only through these modules, so they (and `bot/__init__.py`, which importing them
    runs) must not pull the rest of the engine in behind them: they import nothing of ours but the leaves
    `LEAF_IMPORTS` names, and those import nothing of ours."""
    imports = our_imports()
    leaves = [leaf for allowed in LEAF_IMPORTS.values() for leaf in allowed]
    offences = [
        f"{imp.path}:{imp.line} imports {imp.module}"
        for module in ("bot", *ENGINE_PUBLIC_MODULES, *leaves)
        for imp in imports[module]
        if imp.module != module and imp.module not in LEAF_IMPORTS.get(module, ())
    ]
    assert not offences, "the engine's public modules must stay leaves:\n" + "\n".join(offences)


def test_every_layer_is_seen() -> None:
    """Guards the check itself: a moved folder or a broken scan must not make it pass vacuously."""
    imports = our_imports()
    layers = {layer_of(module) for module in imports}
    assert {"switchboard", "adapters", "bot", "storage", "emulator"} <= layers
    assert sum(len(found) for found in imports.values()) > 100


def test_the_scan_sees_nested_relative_and_from_imports() -> None:
    source = (
        "import bot.engine\n"
        "from bot import types, Bot\n"
        "from . import sibling\n"
        "from ..storage_like import thing\n"
        "def later():\n"
        "    from adapters.slack import SlackAdapter\n"
        "if False:\n"
        "    import switchboard.runner\n"
    )
    known = frozenset({"bot", "bot.types", "bot.engine", "adapters.slack", "pkg.sub.sibling"})
    found = sorted(imported_modules(source, "pkg.sub.mod", is_package=False, known_modules=known))
    assert found == [
        (1, "bot.engine"), (2, "bot"), (2, "bot.types"), (3, "pkg.sub.sibling"), (4, "pkg.storage_like"),
        (6, "adapters.slack"), (8, "switchboard.runner"),
    ]


@pytest.mark.parametrize(("importer", "imported", "allowed"), [
    ("switchboard.cli", "adapters.slack", True),
    ("switchboard.demo", "emulator", True),
    ("switchboard.demo", "emulator.server", True),
    ("adapters.slack.app", "bot.types", True),
    ("adapters.discord.retry", "bot.backoff", True),
    ("adapters.slack.app", "adapters.slack.keys", True),
    ("adapters.slack.app", "bot.engine", False),
    ("adapters.slack.app", "bot", False),
    ("adapters.slack.app", "bot.typesetting", False),
    ("adapters.slack.app", "storage.sqlite", False),
    ("adapters.slack.app", "switchboard.runner", False),
    ("adapters.console", "emulator.server", False),
    ("bot.engine", "storage.sqlite", True),
    ("bot.engine", "adapters.console", False),
    ("bot.engine", "switchboard.cli", False),
    ("bot.engine", "emulator", False),
    ("bot.engine", "tests.fakes", False),
    ("adapters.slack.app", "fakes.slack_api", False),
    ("storage.sqlite", "storage.base", True),
    ("storage.sqlite", "bot.types", False),
    ("storage.sqlite", "adapters.slack", False),
    ("emulator.server", "emulator.runs", True),
    ("emulator.server", "bot.types", False),
    ("emulator.server", "emulator.runs", True),
    ("emulator.server", "bot.config", False),
    ("bot.engine", "openai", True),
])
def test_the_rules(importer: str, imported: str, allowed: bool) -> None:
    assert (broken_rule(importer, imported) is None) is allowed
