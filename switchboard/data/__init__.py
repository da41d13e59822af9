"""Files shipped inside the package: the example team file, the Slack app manifest and the emulator scripts example.

`switchboard init` copies them out; `files(name)` reads one by name, from a checkout or an installed wheel alike.
"""

from __future__ import annotations

from importlib.resources import files

EXAMPLE_TEAM = "switchboard.example.toml"
SLACK_MANIFEST = "manifest.yml"
EMULATOR_SCRIPTS = "emulator-scripts.example.yml"
SHIPPED = (EXAMPLE_TEAM, SLACK_MANIFEST, EMULATOR_SCRIPTS)


def read(name: str) -> str:
    """The text of one shipped file (one of `SHIPPED`)."""
    if name not in SHIPPED:
        raise KeyError(name)
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
