"""Slack limits and names the adapter relies on, in one place.

Every number here comes from Slack's documentation or from measuring the real client (see
shared/PLATFORM_FACTS.md); the adapter stays a safe margin below each documented limit.
"""

from __future__ import annotations

from typing import Final

from adapters.splitting import Splitter

PLATFORM: Final = "slack"

# ---- the slash command and the message shortcut -------------------------------------------------------------
SLASH_COMMAND: Final = "/switchboard"
RESET_SHORTCUT_CALLBACK_ID: Final = "switchboard_reset_thread"

# ---- what the app subscribes to and needs (checked against manifest.yml by a test) -------------------------
#: bot events the listeners handle
BOT_EVENTS: Final[tuple[str, ...]] = (
    "app_mention",
    "message.channels",
    "message.groups",
    "message.im",
    "message.mpim",
    "app_home_opened",  # tab "messages": an agent app's DM was opened (suggested prompts)
)
#: bot token scopes the code needs, with the reason for each
BOT_SCOPES: Final[dict[str, str]] = {
    "app_mentions:read": "receive app_mention events",
    "chat:write": "post, stream, update and delete the bot's replies; setStatus in channel threads",
    "assistant:write": "thinking indicator and suggested prompts in the assistant view",
    "commands": "the /switchboard slash command and the reset message shortcut",
    "channels:history": "message.channels: follow threads the bot is part of; find a delivered reply",
    "groups:history": "message.groups: the same in private channels",
    "im:history": "message.im: direct messages and assistant threads",
    "mpim:history": "message.mpim: group direct messages",
    "users:read": "users.info is_admin / is_owner for admin commands",
    "usergroups:read": "usergroups.list: user groups for the access lists' allowed_roles / blocked_roles",
}

# ---- conversation keys ---------------------------------------------------------------------------------------
DM_SUFFIX: Final = "dm"

# ---- limits ----------------------------------------------------------------------------------------------------
#: chat.update answers msg_too_long near 4,000 characters; a section block's text is limited to 3,000.
#: Every message part we post or update stays at or below this (measured in UTF-16 code units).
MESSAGE_PART_MAX_CHARS: Final = 3_000
#: how Slack measures and splits message text: in UTF-16 code units, parts concatenating back to the text exactly
#: (a partly posted reply resumes at an offset), so a split inside a code block is avoided rather than patched
MESSAGE_TEXT: Final = Splitter(MESSAGE_PART_MAX_CHARS, utf16=True, reopen_fences=False)
#: streaming `markdown_text` is limited to 12,000 characters per call
STREAM_APPEND_MAX_CHARS: Final = 12_000
#: how much answer text one streamed message carries before the rest goes into follow-up messages
#: (Slack documents no total for a streamed message; one append's worth is a conservative bound)
STREAM_MESSAGE_MAX_CHARS: Final = 12_000
#: the live preview stops growing a streamed message past this, leaving room for the final answer
STREAM_PREVIEW_MAX_CHARS: Final = 10_000
#: assistant.threads.setStatus takes at most 10 loading messages
STATUS_LOADING_MESSAGES_MAX: Final = 10
#: Slack drops the indicator after 2 minutes; re-send it before that
STATUS_REFRESH_SECONDS: Final = 90.0
#: stop refreshing an indicator nobody cleared after this long (safety net only)
STATUS_MAX_LIFETIME_SECONDS: Final = 30 * 60.0
#: chat.update / chat.appendStream: about one per second per message
MESSAGE_UPDATE_INTERVAL_SECONDS: Final = 1.0
#: chat.postMessage: about one per second per channel (between the parts of a long answer)
POST_INTERVAL_SECONDS: Final = 1.0
#: task_update `details` shown under a sub-assistant's name
TASK_DETAILS_MAX_CHARS: Final = 200
#: a loading message naming one sub-assistant
LOADING_MESSAGE_MAX_CHARS: Final = 80
#: suggested prompts in the assistant view (Slack shows up to 4)
SUGGESTED_PROMPTS_MAX: Final = 4
#: an event / slash command must be acknowledged within 3 s
ACK_DEADLINE_SECONDS: Final = 3.0
#: slack_sdk's SignatureVerifier refuses a request signed further than this from now, in the past or the future
SIGNATURE_MAX_AGE_SECONDS: Final = 5 * 60
#: how long users.info admin flags are cached
ADMIN_CACHE_SECONDS: Final = 60.0
USERGROUPS_REFRESH_SECONDS: Final = 300.0  # usergroups.list is Tier 2 (20+ per minute): a read every 5 min is cheap
#: conversations.replies pages read by find_delivery (crash recovery only; the method is heavily rate limited)
FIND_DELIVERY_MAX_PAGES: Final = 5
FIND_DELIVERY_PAGE_SIZE: Final = 200
#: Web API methods that post a new message: never resent blindly after an answer that may come after the post
NON_IDEMPOTENT_METHODS: Final = frozenset({"chat.postMessage"})
#: latest messages read to find a part whose post may have gone through before its answer was lost
FIND_PART_PAGE_SIZE: Final = 50

# ---- retries and fallbacks (see retry.py) ----------------------------------------------------------------------
#: attempts per Web API call while delivering a reply, on top of the SDK's own retries of 429 / 5xx / resets
DELIVERY_ATTEMPTS: Final = 4
#: backoff between those attempts: full jitter from this base, doubling, up to the cap (bot.backoff)
RETRY_BASE_SECONDS: Final = 0.5
RETRY_CAP_SECONDS: Final = 8.0
#: attempts to clear the thinking indicator (Slack only drops it by itself after 2 minutes)
STATUS_CLEAR_ATTEMPTS: Final = 4
#: a part refused with msg_too_long is split again at half its size, but not below this
MIN_PART_CHARS: Final = 500

# ---- message metadata that marks a delivered reply -----------------------------------------------------------
REPLY_METADATA_EVENT_TYPE: Final = "switchboard_reply"
#: the live placeholder (fallback preview) of a turn: found again when its post's answer was lost
PREVIEW_METADATA_EVENT_TYPE: Final = "switchboard_preview"

# ---- chat streaming ---------------------------------------------------------------------------------------------
TASK_DISPLAY_MODE: Final = "plan"
TASK_IN_PROGRESS: Final = "in_progress"
TASK_COMPLETE: Final = "complete"
TASK_ERROR: Final = "error"

# ---- status texts -------------------------------------------------------------------------------------------------
STATUS_THINKING: Final = "is thinking..."
LOADING_THINKING: Final = "Thinking..."
LOADING_RETRYING: Final = "Trying again..."
