"""What the listeners share: the engine, the surface, the indicator board, the thread registry."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.slack.admins import AdminCache
from adapters.slack.keys import ThreadRegistry
from adapters.slack.settings import SlackSettings
from adapters.slack.status import StatusBoard
from adapters.slack.surface import SlackSurface
from adapters.slack.usergroups import UserGroups
from bot.types import BotLike


@dataclass
class Deps:
    bot: BotLike
    settings: SlackSettings
    surface: SlackSurface
    status: StatusBoard
    threads: ThreadRegistry
    admins: AdminCache
    usergroups: UserGroups | None = None  # for the access lists' roles; None: nobody has roles
