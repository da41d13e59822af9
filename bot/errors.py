"""The root of the engine's own exceptions: every error class the engine defines derives from `SwitchboardError`,
so a caller can tell "the engine said no" from a bug with one `except`, and each keeps its other bases (an
`InvalidInbound` is still a `ValueError`).

Derived today: `BackendError` (bot.backends.base, with all its kinds), `RunFailed` (bot.supervisor), `ConfigError`
(bot.config), `InvalidInbound` and `Undeliverable` (bot.types). Not derived: `storage.base.StoreError` and its
subclasses (`AlreadyRunning`), because storage sits below the engine and never imports it; catch `StoreError` beside
`SwitchboardError` where both can arise. This module imports nothing, so `bot.types` may import it.
"""

from __future__ import annotations


class SwitchboardError(Exception):
    """Base class of the engine's errors."""
