"""Discord's limits and timings, named once. Sources: Discord developer docs and discord.py 2.7 (see README.md).

discord.py checks none of the length limits: the adapter must respect them itself.
"""

from __future__ import annotations

import datetime

from adapters.splitting import Splitter

# ---- message and embed sizes ----
MESSAGE_CONTENT_LIMIT = 2_000  # characters in a message's `content`
#: a long answer is split into messages of MESSAGE_CONTENT_LIMIT code points; a code block cut by a split is closed
#: and re-opened, so each message renders on its own
MESSAGE_TEXT = Splitter(MESSAGE_CONTENT_LIMIT)
EMBED_TITLE_LIMIT = 256
EMBED_DESCRIPTION_LIMIT = 4_096
NONCE_MAX_LENGTH = 25  # a message nonce: integer or string of at most 25 characters
THREAD_NAME_LIMIT = 100
SLASH_STRING_OPTION_LIMIT = 6_000  # the longest string a slash-command option can carry

# ---- timings ----
INTERACTION_ACK_DEADLINE = datetime.timedelta(seconds=3)  # first response (or defer) to an interaction
INTERACTION_TOKEN_LIFETIME = datetime.timedelta(minutes=15)  # followups / edit original after the ack
#: how long before the token's end we stop trusting it (one request round trip plus clock skew)
INTERACTION_EXPIRY_MARGIN = datetime.timedelta(seconds=60)
TYPING_RESEND_INTERVAL = 5.0  # seconds; discord.py's `channel.typing()` uses the same period
PROGRESS_EDIT_INTERVAL = 1.0  # at most one edit of a progress message per second
THREAD_AUTO_ARCHIVE_MINUTES = 1_440  # 60, 1440, 4320 or 10080

# ---- JSON error codes (HTTP body `code`) ----
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
MISSING_ACCESS = 50001
MISSING_PERMISSIONS = 50013
INVALID_WEBHOOK_TOKEN = 50027
INTERACTION_ALREADY_ACKNOWLEDGED = 40060
CANNOT_REPLY_WITHOUT_HISTORY = 160002  # a reply needs Read Message History
CANNOT_SEND_TO_USER = 50007  # the user does not accept direct messages from the bot

# ---- retries and fallbacks (see retry.py) ----
SEND_ATTEMPTS = 4  # attempts per REST call while delivering, on top of discord.py's own 429 / 5xx retries
RETRY_BASE_SECONDS = 0.5  # first backoff between them (full jitter, doubling: bot.backoff)
RETRY_CAP_SECONDS = 8.0
#: first line of a reply sent to the user directly because its channel refused it ({channel}: the channel id)
DM_FALLBACK_NOTE = "(I could not post my answer in <#{channel}>, so here it is.)\n\n"
#: what a deferred `/ask` response says when the answer went to the user directly
ELSEWHERE_NOTICE = "I could not post the answer here, so I sent it to you directly."

# ---- message flags ----
FLAG_LOADING = 1 << 7  # a deferred interaction response still "thinking"

# ---- intents ----
INTENT_MESSAGE_CONTENT = 1 << 15  # privileged
