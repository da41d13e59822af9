"""Prompt caching as OpenAI documents it: a prompt of at least 1024 tokens whose beginning matches an earlier
prompt's is partly served from the cache, reported as `cached_tokens` in 128-token steps (Responses:
`usage.input_tokens_details.cached_tokens`; Chat Completions: `usage.prompt_tokens_details.cached_tokens`;
Assistants runs report no cached figure). Source: https://platform.openai.com/docs/guides/prompt-caching.

`PromptCache.cached(pieces)` takes a prompt as its ordered pieces (instructions, then each message/item) and returns
the cached tokens: the longest run of leading pieces seen together in an earlier prompt. Tests may lower
`min_tokens` and `block` to see hits with short texts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from emulator.wire import CHARS_PER_TOKEN, tokens

CACHE_MIN_TOKENS = 1024  # "Caching is enabled automatically for prompts that are 1024 tokens or longer"
CACHE_BLOCK_TOKENS = 128  # "cache hits occur in increments of 128 tokens" beyond the first 1024


class PromptCache:
    def __init__(self, min_tokens: int = CACHE_MIN_TOKENS, block: int = CACHE_BLOCK_TOKENS) -> None:
        self.min_tokens = min_tokens
        self.block = block
        self._seen: set[bytes] = set()

    def cached(self, pieces: Sequence[str]) -> int:
        digest = hashlib.sha256()
        chars = hit_chars = 0
        prefixes: list[bytes] = []
        for piece in pieces:
            digest.update(piece.encode())
            digest.update(b"\x00")
            chars += len(piece)
            prefix = digest.copy().digest()
            prefixes.append(prefix)
            if prefix in self._seen:
                hit_chars = chars
        self._seen.update(prefixes)
        total = tokens("".join(pieces))
        hit = min(hit_chars // CHARS_PER_TOKEN, total)
        if total < self.min_tokens or hit < self.min_tokens:
            return 0
        return self.min_tokens + (hit - self.min_tokens) // self.block * self.block

    def clear(self) -> None:
        self._seen.clear()
