"""Building the backend a team runs on: one `openai` client per distinct provider, and, when the team mixes
providers, a `ProviderRouter` that sends each operation to the backend of the provider that owns it.

`make_backend(team)` returns the plain backend when every assistant shares one provider (the usual case: nothing
in between), else a router. Azure OpenAI works as a provider like any other: its v1 endpoint
(`https://<resource>.openai.azure.com/openai/v1`) takes the deployment name as the model; a deployment URL
(`.../openai/deployments/<name>`) also needs `api_version`, which adds the `api-version` query parameter and
sends the key in Azure's `api-key` header.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx2
import openai

from bot.backends.base import (
    Backend,
    Permanent,
    RunRequest,
    RunState,
    RunStream,
    ThreadGone,
    TranscriptItem,
)
from bot.backends.sse import MAX_CONNECTIONS
from bot.config import AgentConfig, Provider, TeamConfig
from bot.context import agent_of_path
from storage.base import Store

PROVIDER_TIMEOUT = httpx2.Timeout(600.0, connect=10.0)
MAX_IDLE_CONNECTIONS = 1_000  # kept open between runs, so a busy bot does not reconnect for each request
CONNECTION_LIMITS = httpx2.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_IDLE_CONNECTIONS)
MISSING_KEY = "missing-key"  # sent when no key is set: the provider answers 401, which names the fix
CHAT_THREAD_PREFIX = "chat_"
MAIN_THREAD = "main"  # bot.orchestrator.MAIN_THREAD (the orchestrator imports the backends, not the reverse)


def make_client(provider: Provider, api_key: str | None) -> openai.AsyncOpenAI:
    query = {"api-version": provider.api_version} if provider.api_version else None
    headers = {"api-key": api_key} if provider.api_version and api_key else None
    return openai.AsyncOpenAI(
        api_key=api_key or MISSING_KEY,
        base_url=provider.base_url,
        max_retries=0,  # the supervisor retries, honouring Retry-After and never duplicating a background run
        default_query=query,
        default_headers=headers,
        # The SDK's aiohttp transport: about half the CPU per request of the default one (benchmarks/).
        http_client=openai.DefaultAioHttpClient(timeout=PROVIDER_TIMEOUT, limits=CONNECTION_LIMITS),
    )


class Clients:
    """One client per distinct provider of the team, made on first use and closed together."""

    def __init__(self, team: TeamConfig) -> None:
        self.team = team
        self._by_key: dict[str, openai.AsyncOpenAI] = {}

    def for_provider(self, provider: Provider) -> openai.AsyncOpenAI:
        client = self._by_key.get(provider.key)
        if client is None:
            client = self._by_key[provider.key] = make_client(provider, self.team.key_for(provider))
        return client

    def for_agent(self, agent: AgentConfig) -> openai.AsyncOpenAI:
        return self.for_provider(self.team.provider_of(agent))

    async def close(self) -> None:
        clients, self._by_key = list(self._by_key.values()), {}
        for client in clients:
            await client.close()


def _single(team: TeamConfig, provider: Provider, clients: Clients, members: set[str] | None = None) -> Backend:
    if provider.backend == "chat":
        from bot.backends.chat import ChatBackend

        return ChatBackend(clients)
    client = clients.for_provider(provider)
    if provider.backend == "assistants":
        from bot.backends.assistants import AssistantsBackend

        return AssistantsBackend(client, team, members=members)
    from bot.backends.responses import ResponsesBackend

    return ResponsesBackend(client, chains=team.response_threads == "chains")


def make_backend(team: TeamConfig) -> Backend:
    providers = team.providers()
    clients = Clients(team)
    if len(providers) == 1:
        return _single(team, next(iter(providers.values())), clients)
    return ProviderRouter(team, clients)


class ProviderRouter:
    """A team whose assistants use different providers. Runs go to the backend of the agent's provider; thread
    and run operations to the provider that holds the thread (recorded in the store when the thread is made;
    `chat` threads are ours, in SQLite, whatever the chat server). A thread on another provider than its agent's
    now (the team file changed) is reported gone, so the supervisor rebuilds it from the transcript."""

    name = "mixed"
    supports_resume = True  # asked per run: a backend that cannot resume says so, and the supervisor polls

    def __init__(self, team: TeamConfig, clients: Clients) -> None:
        self.team = team
        self.clients = clients
        self.store: Store | None = None
        self.backends: dict[str, Backend] = {}
        chat: Backend | None = None
        for key, provider in team.providers().items():
            if provider.backend == "chat":
                chat = chat or _single(team, provider, clients)
                self.backends[key] = chat
            else:
                members = {a.name for a in team.members if team.provider_of(a).key == key}
                self.backends[key] = _single(team, provider, clients, members)
        self.chat = chat
        self.default = team.provider_of(team.proxy).key

    def bind_store(self, store: Store) -> None:
        self.store = store
        for backend in self._distinct():
            bind = getattr(backend, "bind_store", None)
            if bind is not None:
                bind(store)

    def _distinct(self) -> list[Backend]:
        return list({id(b): b for b in self.backends.values()}.values())

    async def open(self) -> None:
        for backend in self._distinct():
            await backend.open()

    async def close(self) -> None:
        for backend in self._distinct():
            try:
                await backend.close()
            except openai.OpenAIError:
                pass
        await self.clients.close()

    # ---- routing ----

    def _agent_for_path(self, path: str) -> AgentConfig:
        name = agent_of_path(path)
        return self.team.proxy if name == MAIN_THREAD else (self.team.sub(name) or self.team.proxy)

    async def _owner(self, thread_id: str) -> str:
        if thread_id.startswith(CHAT_THREAD_PREFIX) and self.chat is not None:
            return next(k for k, b in self.backends.items() if b is self.chat)
        recorded = await self.store.thread_provider(thread_id) if self.store is not None else None
        return recorded if recorded in self.backends else self.default

    async def _for_thread(self, thread_id: str) -> Backend:
        return self.backends[await self._owner(thread_id)]

    async def _for_run(self, request: RunRequest) -> Backend:
        key = self.team.provider_of(request.agent).key
        backend = self.backends[key]
        if backend is not await self._for_thread(request.thread_id):
            raise ThreadGone(f"thread {request.thread_id} is not on {request.agent.name}'s provider")
        return backend

    # ---- Backend ----

    async def create_thread(self, seed: Sequence[TranscriptItem], metadata: dict[str, str]) -> str:
        key = self.team.provider_of(self._agent_for_path(metadata.get("thread", MAIN_THREAD))).key
        backend = self.backends[key]
        thread_id = await backend.create_thread(seed, metadata)
        if backend is not self.chat and self.store is not None:
            await self.store.set_thread_provider(thread_id, key)
        return thread_id

    async def delete_thread(self, thread_id: str) -> None:
        await (await self._for_thread(thread_id)).delete_thread(thread_id)

    async def delete_run(self, run_id: str, thread_id: str) -> None:
        await (await self._for_thread(thread_id)).delete_run(run_id, thread_id)

    async def start(self, request: RunRequest) -> RunStream:
        return await (await self._for_run(request)).start(request)

    async def submit(self, state: RunState, request: RunRequest) -> RunStream:
        return await (await self._for_run(request)).submit(state, request)

    async def resume(self, run_id: str, thread_id: str, after_seq: int) -> RunStream:
        backend = await self._for_thread(thread_id)
        if not backend.supports_resume:
            raise Permanent(f"the {backend.name} backend cannot resume a stream", reason="no_resume")
        return await backend.resume(run_id, thread_id, after_seq)

    async def retrieve(self, run_id: str, thread_id: str) -> RunState:
        return await (await self._for_thread(thread_id)).retrieve(run_id, thread_id)

    async def cancel(self, run_id: str, thread_id: str) -> None:
        await (await self._for_thread(thread_id)).cancel(run_id, thread_id)

    async def answer_stuck_calls(self, thread_id: str, call_id: str) -> None:
        await (await self._for_thread(thread_id)).answer_stuck_calls(thread_id, call_id)

    async def abandon(self, state: RunState) -> None:
        await (await self._for_thread(state.thread_id)).abandon(state)

    async def active_runs(self, thread_id: str) -> list[str]:
        return await (await self._for_thread(thread_id)).active_runs(thread_id)

    async def read_thread(self, thread_id: str, limit: int) -> list[TranscriptItem] | None:
        return await (await self._for_thread(thread_id)).read_thread(thread_id, limit)

    async def lost_create(self, request: RunRequest) -> RunState | None:
        return await (await self._for_thread(request.thread_id)).lost_create(request)
