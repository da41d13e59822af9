"""Slash-command text, parsed and authorised once for every platform (adapters only pass the text through).

Admin commands exist only here, reachable from platform commands and the CLI; they are never offered to an
assistant as a tool, and text inside a chat message never reaches this module. Every admin action, allowed or
refused, is written to the audit table, and every change to a conversation is made inside its mailbox door
(`ConversationControl.doors`), the one the conversation worker also waits at, so the two never race.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bot import accounting
from bot.backends.base import BackendError
from bot.config import ConfigError, TeamConfig
from bot.handoffs import handoff_status, set_active
from bot.types import CommandContext, CommandResult
from bot.worker import ANSWERING_STATES
from storage.base import AuditEntry, ForgetReport, Store, TurnRecord, TurnUpdate

if TYPE_CHECKING:
    from bot.access import Policy

log = logging.getLogger("switchboard.commands")

MAX_COMMAND_CHARS = 200
CONFIRM_WINDOW_SECONDS = 60.0
STATUS_HANDOFF_CONVERSATIONS = 10  # a channel's newest conversations whose active assistant `status` lists
RESET_NOTICE = "This conversation was reset by {who} before I answered; please send your message again."

HELP_TEXT = """\
Switchboard commands:
  help               this text
  assistants         who is on the team and what each does
  status             what is running in this channel
  reset              start this conversation afresh (you started it, or you are an admin)
Admin only:
  reset channel      reset every conversation in this channel
  reset all          reset every conversation (asks for confirmation)
  cancel             cancel the running turn in this conversation
  audit              the most recent admin actions
  usage              today's token use and budgets
  grant user ID N    N more tokens today for a user (also: grant channel here N, grant bot N; $N for cost)
  forget user ID     delete everything a user wrote, and the answers to it
  reload             re-read the team file's access lists and budgets
  handoff NAME [KEY] give this conversation (or the one `status` lists as KEY) to the assistant NAME"""


class Doors(Protocol):
    """One door per conversation (`bot.mailbox.Mailbox`): inside `exclusive(conversation)` its worker is stopped
    and no other admin action on it runs."""

    def exclusive(self, conversation: str) -> AbstractAsyncContextManager[None]: ...


class RunCanceller(Protocol):
    """Cancels a remote run and deletes a thread or a stored run at the provider (the backend); raises
    `BackendError` when the provider refuses."""

    async def cancel(self, run_id: str, thread_id: str) -> None: ...

    async def delete_thread(self, thread_id: str) -> None: ...

    async def delete_run(self, run_id: str, thread_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ConversationControl:
    """All that admin actions may use of the engine."""

    team: TeamConfig  # who is on the team, and each platform's admins
    store: Store
    doors: Doors
    runs: RunCanceller
    resume_later: Callable[[str], None]  # used inside a door: the conversation's next worker resumes its turns first
    policy: Policy | None = None  # access lists, budgets and usage (`bot.access`); None: team-file admins only
    reload: Callable[[], Awaitable[str]] | None = None  # re-reads the team file; raises ConfigError for a bad one


class CommandHandler:
    def __init__(self, control: ConversationControl) -> None:
        self.control = control
        self._confirmations: dict[tuple[str, str], float] = {}

    def is_admin(self, ctx: CommandContext) -> bool:
        if self.control.policy is not None:  # reloaded admins
            return self.control.policy.is_admin(ctx.actor.platform, ctx.actor.user, ctx.actor.platform_admin)
        return ctx.actor.platform_admin or ctx.actor.user in self.control.team.admins(ctx.actor.platform)

    async def handle(self, ctx: CommandContext, text: str) -> CommandResult:
        words = " ".join(text.split()).lower()[:MAX_COMMAND_CHARS]
        first = words.partition(" ")[0]
        if first in ("grant", "forget"):  # their ids keep their case (Slack ids are upper case)
            if not self.is_admin(ctx):
                await self._record(ctx, first, ctx.channel, "refused", "not an admin")
                return CommandResult(False, "Sorry, only admins can do that.")
            args = " ".join(text.split())[:MAX_COMMAND_CHARS].split(" ")[1:]
            return await (self._grant(ctx, args) if first == "grant" else self._forget(ctx, args))
        if words in ("", "help"):
            return CommandResult(True, HELP_TEXT)
        if words == "assistants":
            return CommandResult(True, self._assistants())
        if words == "status":
            status = await self._status(ctx.channel)
            held = await self._handoff_status(ctx)
            return CommandResult(True, f"{status}\n{held}" if held else status)
        if first == "handoff":  # the conversation key keeps its case
            return await self._handoff(ctx, " ".join(text.split())[:MAX_COMMAND_CHARS].split(" ")[1:])
        if words == "reset":
            return await self._reset_here(ctx)
        admin_actions = {
            "reset channel": self._reset_channel,
            "reset all": self._reset_all,
            "reset all confirm": self._reset_all_confirmed,
            "cancel": self._cancel,
            "audit": self._audit,
            "usage": self._usage,
            "reload": self._reload,
        }
        action = admin_actions.get(words)
        if action is None:
            return CommandResult(False, f"Unknown command {text.strip()[:60]!r}. Try `help`.")
        if not self.is_admin(ctx):
            target = {"cancel": ctx.conversation or ctx.channel}.get(words, "*" if "all" in words else ctx.channel)
            await self._record(ctx, words, target, "refused", "not an admin")
            return CommandResult(False, "Sorry, only admins can do that.")
        return await action(ctx)

    # ---- everyone ----

    def _assistants(self) -> str:
        team = self.control.team
        if not team.uses_handoffs:
            lines = [f"{team.proxy.name} (talks to you and delegates)"]
            lines += [f"{s.name}: {s.description}" for s in team.subs]
            return "\n".join(lines)
        lines = [f"Conversations start with {team.entry_agent.name}; whoever holds one answers you."]
        for member in team.members:
            hands = f" (hands over to {', '.join(member.handoffs)})" if member.handoffs else ""
            lines.append(f"{member.name}: {member.description or 'the front desk'}{hands}")
        return "\n".join(lines)

    async def _status(self, channel: str) -> str:
        lines = []
        for conv in await self.control.store.conversations(channel):
            turns = await self.control.store.unfinished_turns(conv.key)
            waiting = len(await self.control.store.pending_inbound(conv.key))
            used = accounting.totals(await self.control.store.token_rows(conv.key))
            tokens = f"; tokens so far {accounting.tokens_text(used.total)}" if used.runs else ""
            if turns or waiting:
                state = turns[0].state if turns else "waiting"
                lines.append(f"{conv.key}: {state}, {waiting} message(s) waiting{tokens}")
            elif tokens:
                lines.append(f"{conv.key}: idle{tokens}")
        return "\n".join(lines) if lines else "Nothing is running in this channel."

    async def _handoff_status(self, ctx: CommandContext) -> str:
        """With handoffs: the active assistant and state of this conversation, or of the channel's newest ones (a
        Slack slash command has no conversation: its threads are listed by key, for `handoff NAME KEY`)."""
        team, store = self.control.team, self.control.store
        if not team.uses_handoffs:
            return ""
        if ctx.conversation is not None:
            return f"This conversation: {await handoff_status(team, store, ctx.conversation)}"
        newest = (await store.conversations(ctx.channel))[-STATUS_HANDOFF_CONVERSATIONS:]
        return "\n".join([f"{conv.key}: {await handoff_status(team, store, conv.key)}" for conv in newest])

    async def _handoff(self, ctx: CommandContext, args: list[str]) -> CommandResult:
        conversation = args[1] if len(args) == 2 else ctx.conversation
        if not self.is_admin(ctx):
            await self._record(ctx, "handoff", conversation or ctx.channel, "refused", "not an admin")
            return CommandResult(False, "Sorry, only admins can do that.")
        if not self.control.team.uses_handoffs:
            return CommandResult(False, "This team has no handoffs (no assistant lists `handoffs`).")
        if conversation is None or not 1 <= len(args) <= 2:
            return CommandResult(False, "Usage: `handoff NAME` in the conversation to hand over, or `handoff NAME KEY` "
                                        "with a conversation key that `status` lists for this channel.")
        record = await self.control.store.get_conversation(conversation)
        if len(args) == 2 and (record is None or record.channel != ctx.channel):
            return CommandResult(False, f"No conversation {conversation[:80]!r} in this channel; `status` lists them.")
        name = args[0].lower()
        try:
            text = await set_active(self.control.team, self.control.store, conversation, name, ctx.actor.user)
        except ValueError as exc:
            await self._record(ctx, "handoff", conversation, "failed", str(exc))
            return CommandResult(False, str(exc))
        await self._record(ctx, "handoff", conversation, "done", f"to {name}")
        return CommandResult(True, text)

    async def _reset_here(self, ctx: CommandContext) -> CommandResult:
        if ctx.conversation is None:
            return CommandResult(False, "There is no conversation here to reset.")
        conv = await self.control.store.get_conversation(ctx.conversation)
        if conv is None:
            return CommandResult(False, "There is no conversation here to reset.")
        allowed = self.is_admin(ctx) or conv.started_by == ctx.actor.user
        if not allowed:
            await self._record(ctx, "reset", conv.key, "refused", "neither admin nor starter")
            refusal = "Sorry, only the person who started this conversation or an admin can reset it."
            return CommandResult(False, refusal)
        await self.reset_conversation(conv.key, who=ctx.actor.user)
        await self._record(ctx, "reset", conv.key, "done")
        return CommandResult(True, "Done: the next message starts a fresh conversation.")

    # ---- admins ----

    async def _reset_channel(self, ctx: CommandContext) -> CommandResult:
        convs = await self.control.store.conversations(ctx.channel)
        for conv in convs:
            await self.reset_conversation(conv.key, who=ctx.actor.user)
        await self._record(ctx, "reset channel", ctx.channel, "done", f"{len(convs)} conversations")
        return CommandResult(True, f"Reset {len(convs)} conversation(s) in this channel.")

    async def _reset_all(self, ctx: CommandContext) -> CommandResult:
        count = len(await self.control.store.conversations())
        self._confirmations[(ctx.actor.platform, ctx.actor.user)] = time.monotonic() + CONFIRM_WINDOW_SECONDS
        await self._record(ctx, "reset all", "*", "asked to confirm")
        return CommandResult(
            True, f"This resets all {count} conversation(s). Send `reset all confirm` within 60 s to go ahead."
        )

    async def _reset_all_confirmed(self, ctx: CommandContext) -> CommandResult:
        deadline = self._confirmations.pop((ctx.actor.platform, ctx.actor.user), 0.0)
        if time.monotonic() > deadline:
            await self._record(ctx, "reset all", "*", "refused", "no recent confirmation request")
            return CommandResult(False, "Nothing to confirm: send `reset all` first.")
        convs = await self.control.store.conversations()
        for conv in convs:
            await self.reset_conversation(conv.key, who=ctx.actor.user)
        await self._record(ctx, "reset all", "*", "done", f"{len(convs)} conversations")
        return CommandResult(True, f"Reset all {len(convs)} conversation(s).")

    async def _cancel(self, ctx: CommandContext) -> CommandResult:
        if ctx.conversation is None:
            return CommandResult(False, "Run this inside the conversation whose turn you want to cancel.")
        cancelled = await self.cancel_turn(ctx.conversation, who=ctx.actor.user, notice="cancelled by {who}")
        await self._record(ctx, "cancel", ctx.conversation, "done" if cancelled else "nothing running")
        return CommandResult(True, "Cancelled the running turn." if cancelled else "Nothing is running here.")

    async def _audit(self, ctx: CommandContext) -> CommandResult:
        entries = await self.control.store.recent_audit(20)  # read first: the listing never shows this request
        await self._record(ctx, "audit", ctx.channel, "done")
        lines = [
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(e.at))} {e.platform}:{e.actor} {e.action} "
            f"{e.target} -> {e.outcome}{f' ({e.detail})' if e.detail else ''}"
            for e in entries
        ]
        return CommandResult(True, "\n".join(lines) or "The audit log is empty.")

    async def _usage(self, ctx: CommandContext) -> CommandResult:
        if self.control.policy is None:
            return CommandResult(False, "Usage is not tracked by this bot.")
        await self._record(ctx, "usage", ctx.channel, "done")
        return CommandResult(True, await self.control.policy.report())

    async def _grant(self, ctx: CommandContext, args: list[str]) -> CommandResult:
        policy = self.control.policy
        usage = ("Usage: `grant user <id> <tokens>`, `grant channel here <tokens>`, `grant channel <key> <tokens>` "
                 "or `grant bot <tokens>`; write `$2.50` instead of tokens to raise a cost budget.")
        if policy is None:
            return CommandResult(False, "Budgets are not tracked by this bot.")
        scope, target, amount = (args[0].lower() if args else ""), args[1:-1], (args[-1] if len(args) > 1 else "")
        if scope == "bot" and not target:
            bucket = "bot"
        elif scope == "user" and len(target) == 1:
            user = target[0].strip("<@>")
            bucket = f"user:{user}" if ":" in user else f"user:{ctx.actor.platform}:{user}"
        elif scope == "channel" and len(target) == 1:
            bucket = f"channel:{ctx.channel if target[0].lower() == 'here' else target[0]}"
        else:
            return CommandResult(False, usage)
        match = re.fullmatch(r"(\$)?(\d+(?:\.\d+)?)", amount.replace(",", "").replace("_", ""))
        if match is None or (not match.group(1) and "." in match.group(2)) or float(match.group(2)) <= 0:
            return CommandResult(False, usage)
        if match.group(1):
            await policy.grant(bucket, cost=float(match.group(2)))
            granted = f"{float(match.group(2)):.2f} of cost"
        else:
            await policy.grant(bucket, tokens=int(match.group(2)))
            granted = f"{int(match.group(2)):,} tokens"
        await self._record(ctx, "grant", bucket, "done", granted)
        return CommandResult(True, f"Granted {granted} to {bucket} for today (UTC).")

    async def _reload(self, ctx: CommandContext) -> CommandResult:
        if self.control.reload is None:
            return CommandResult(False, "This bot cannot reload its team file.")
        try:
            text = await self.control.reload()
        except ConfigError as exc:
            await self._record(ctx, "reload", "team file", "refused", str(exc)[:300])
            return CommandResult(False, f"The team file was not reloaded (the old one stays in force): {exc}")
        await self._record(ctx, "reload", "team file", "done")
        return CommandResult(True, text)

    async def _forget(self, ctx: CommandContext, args: list[str]) -> CommandResult:
        if len(args) != 2 or args[0].lower() != "user" or not args[1].strip("<@>"):
            return CommandResult(False, "Usage: `forget user <id>` (from the CLI: `forget user <platform>:<id>` "
                                        "or `forget user *:<id>` for every platform).")
        raw = args[1].strip("<@>")
        platform: str | None
        if ":" in raw:
            platform, _, user = raw.partition(":")
            platform = None if platform == "*" else platform
        else:
            platform, user = ctx.actor.platform, raw
        report, deleted = await self.forget_user(user, platform)
        target = f"user:{platform or '*'}:{user}"
        detail = (f"{report.messages} messages, {report.turns} turns, {len(report.conversations)} conversations, "
                  f"{deleted}/{len(report.threads) + len(report.runs)} provider threads and runs deleted")
        await self._record(ctx, "forget", target, "done", detail)
        return CommandResult(True, f"Forgot {target}: {detail}.")

    async def forget_user(self, user: str, platform: str | None) -> tuple[ForgetReport, int]:
        """Delete what the user wrote and the turns built on it (`Store.forget_user`) inside the door of every
        conversation they wrote in, after cancelling the remote runs of those turns; then delete the provider
        threads those conversations used (each is rebuilt from the transcript that remains on its next turn) and
        what the provider keeps of the deleted turns' runs. Returns the report and how many of those threads and
        runs were deleted."""
        store = self.control.store
        entered: set[str] = set()
        async with AsyncExitStack() as doors:
            while True:  # they may write in another conversation while we wait at a door: take that one too
                preview = await store.forget_user(user, platform, dry_run=True)
                missing = sorted(set(preview.conversations) - entered)
                if not missing:
                    break
                for conversation in missing:
                    await doors.enter_async_context(self.control.doors.exclusive(conversation))
                    entered.add(conversation)
            for conversation in sorted(entered):
                for turn in await store.unfinished_turns(conversation):
                    for run in await store.active_runs(turn.id):
                        try:
                            await self.control.runs.cancel(run.remote_id, run.thread_id)
                        except BackendError as exc:
                            log.info("cancel of run %s: %s", run.remote_id, exc)
            report = await store.forget_user(user, platform)
            for conversation in report.conversations:
                self.control.resume_later(conversation)  # others' messages of a deleted turn are answered anew
        deleted = 0
        for thread in report.threads:
            try:
                await self.control.runs.delete_thread(thread)
                deleted += 1
            except BackendError as exc:
                log.info("delete of provider thread %s: %s", thread, exc)
        for run_id, thread in report.runs:
            try:
                await self.control.runs.delete_run(run_id, thread)
                deleted += 1
            except BackendError as exc:
                log.info("delete of provider run %s: %s", run_id, exc)
        return report, deleted

    # ---- the mechanics, also used by the CLI ----
    # Each change runs inside the conversation's mailbox door: its worker is stopped and stays stopped until the
    # action is done, so no turn of it is started or resumed from records the action is still changing.

    async def cancel_turn(self, conversation: str, who: str, notice: str) -> bool:
        """Stop the turn being answered (worker and remote runs) and answer its messages, and those waiting when
        the cancel began, with a notice; messages arriving meanwhile are answered afterwards. A reply already on
        its way is left to be delivered. True when a turn was stopped."""
        if not await self._answering_or_waiting(conversation):
            return False  # nothing to stop: a worker that is only delivering a reply is left alone
        async with self.control.doors.exclusive(conversation):
            return await self._stop_turn(conversation, who, notice)

    async def reset_conversation(self, conversation: str, who: str) -> None:
        store = self.control.store
        if await store.get_conversation(conversation) is None:
            return  # never started: nothing to reset, and no worker to stop
        async with self.control.doors.exclusive(conversation):
            record = await store.get_conversation(conversation)  # again: an admin action ahead of us may have reset it
            if record is None:
                return
            await self._stop_turn(conversation, who, notice="stopped because {who} reset the conversation")
            await store.mark_transcript_reset(conversation, record.generation)
            await store.bump_generation(conversation)

    async def _answering_or_waiting(self, conversation: str) -> bool:
        store = self.control.store
        if await store.pending_inbound(conversation):
            return True
        return any(t.state in ANSWERING_STATES for t in await store.unfinished_turns(conversation))

    async def _stop_turn(self, conversation: str, who: str, notice: str) -> bool:
        """`cancel_turn` for a caller already inside the conversation's door."""
        store = self.control.store
        waiting = await store.pending_inbound(conversation)
        answering = [t for t in await store.unfinished_turns(conversation) if t.state in ANSWERING_STATES]
        for turn in answering:
            for run in await store.active_runs(turn.id):
                try:
                    await self.control.runs.cancel(run.remote_id, run.thread_id)
                except BackendError as exc:
                    log.info("cancel of run %s: %s", run.remote_id, exc)
                await store.update_run(run.remote_id, status="cancelled")
            text = f"This turn was {notice.format(who=who)}; nothing more will come from it."
            await store.update_turn(turn.id, TurnUpdate(state="replied", reply_kind="notice", reply_text=text))
        if waiting:
            record = await store.get_conversation(conversation)
            generation = record.generation if record else 0
            text = RESET_NOTICE.format(who=who)
            turn = TurnRecord.new(conversation, generation, state="replied", reply_kind="notice", reply_text=text)
            # one transaction: a crash leaves the notice with its messages, or neither
            await store.create_turn(turn, claim=[m.event_id for m in waiting])
        # delivers the notices, exactly once, through the normal path, after the door
        self.control.resume_later(conversation)
        return bool(answering)

    async def _record(self, ctx: CommandContext, action: str, target: str, outcome: str, detail: str = "") -> None:
        entry = AuditEntry(time.time(), ctx.actor.platform, ctx.actor.user, action, target, outcome, detail)
        await self.control.store.add_audit(entry)
        log.info("admin action %s on %s by %s:%s -> %s", action, target, ctx.actor.platform, ctx.actor.user, outcome)
