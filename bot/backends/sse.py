"""Streamed provider requests on the hot path (a run's create, a stream's resume) sent straight through aiohttp and
read with a small server-sent-events parser, with the `openai` client's URL, headers and timeouts.

Failures raise exactly what the SDK would (its status error classes, built by the client itself, and
`APIConnectionError` / `APITimeoutError` with the aiohttp error as cause), so `openai_errors.translate` maps them
unchanged; a client whose authentication is not a plain key (a provider runtime, workload identity) keeps the SDK
path. Measured with `python -m benchmarks.profile_turn --compare-sdk`: the engine's CPU per delegated turn fell by
about 40% (docs/PERFORMANCE.md, "CPU of a delegated turn").
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import httpx2
import openai
from openai import AsyncStream

log = logging.getLogger("switchboard.backends")
JSON = dict[str, Any]
# A streamed background run holds its connection until it settles, so the pool bounds the runs in flight: the SDK's
# default (1,000) made turns beyond it wait for a free connection (benchmarks/bigroom.py, 10,000 conversations).
MAX_CONNECTIONS = 16_000  # below a typical 20,000 open-files limit, leaving room for the database and sockets
READ_ERRORS = (aiohttp.ClientError, TimeoutError, ConnectionError)
DONE = "[DONE]"
#: yielded for a read whose events were all passed over: the stream is alive even though nothing is parsed
ALIVE: JSON = {"type": "switchboard.alive"}


class LeanStreams:
    """Sends streamed requests for one `openai` client; `open` makes its aiohttp session inside the running loop."""

    def __init__(self, client: openai.AsyncOpenAI, max_connections: int,
                 skip: frozenset[bytes] = frozenset()) -> None:
        self.client = client
        self._max_connections = max_connections
        self._skip = skip  # events (`event_names`) the reader never needs: passed over without being parsed
        self._session: aiohttp.ClientSession | None = None
        self._headers: dict[str, str] | None = None
        self._query: dict[str, str] = {}
        self.enabled = True  # False: every request through the SDK (benchmarks compare the two)

    def _prepare(self) -> bool:
        """Whether this client can be served here (plain key auth); headers and query are built once."""
        if self._headers is not None or not self.enabled:
            return self.enabled
        auth = self.client.auth_headers
        if not auth:  # keys from a provider runtime or workload identity: the SDK knows how to get them
            self.enabled = False
            return False
        if not callable(getattr(self.client, "_make_status_error_from_response", None)):
            # the SDK's (private) error factory is how failures here raise its own classes: without it, the SDK path
            log.warning("this openai version lacks the status-error factory: streamed requests go through the SDK")
            self.enabled = False
            return False
        headers = {k: v for k, v in self.client.default_headers.items() if isinstance(v, str)}
        headers |= auth
        headers["Accept"] = "text/event-stream"
        self._headers = headers
        self._query = {k: str(v) for k, v in self.client.default_query.items() if v is not None}
        return True

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = self.client.timeout
            connect = read = None
            if isinstance(timeout, httpx2.Timeout):
                connect, read = timeout.connect, timeout.read
            elif isinstance(timeout, int | float):
                connect = read = float(timeout)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, path: str, body: JSON, skip: frozenset[bytes] | None = None
                   ) -> EventStream | AsyncStream[object]:
        """`skip`: the events this one reader passes over, instead of the streams' own set."""
        if not self._prepare():
            return await self.client.post(path, body=body, cast_to=object, stream=True,
                                          stream_cls=AsyncStream[object])
        return await self._send("POST", path, json.dumps(body).encode(), {}, self._skip if skip is None else skip)

    async def get(self, path: str, params: JSON) -> EventStream | AsyncStream[object]:
        if not self._prepare():
            return await self.client.get(path, cast_to=object, stream=True, stream_cls=AsyncStream[object],
                                         options={"params": params})
        return await self._send("GET", path, None, {k: str(v) for k, v in params.items()}, self._skip)

    async def _send(self, method: str, path: str, data: bytes | None, params: dict[str, str],
                    skip: frozenset[bytes]) -> EventStream:
        assert self._headers is not None
        url = str(self.client.base_url).rstrip("/") + path
        query = {**self._query, **params}
        headers = self._headers if data is None else {**self._headers, "Content-Type": "application/json"}
        try:
            response = await self._session_now().request(method, url, data=data, params=query or None,
                                                         headers=headers)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise openai.APITimeoutError(request=_request(method, url)) from exc
        except aiohttp.ClientError as exc:
            raise openai.APIConnectionError(request=_request(method, url)) from exc
        if response.status >= 400:
            try:
                content = await response.read()
            except READ_ERRORS as exc:
                raise openai.APIConnectionError(request=_request(method, url)) from exc
            finally:
                response.release()
            failed = httpx2.Response(response.status, headers=list(response.headers.items()), content=content,
                                     request=_request(method, url))
            raise self.client._make_status_error_from_response(failed)
        return EventStream(response, method, url, skip)


def event_names(names: Iterable[str]) -> frozenset[bytes]:
    """A set of events to pass over, in the form the reader compares (`LeanStreams`, `post`)."""
    return frozenset(name.encode() for name in names)


def _request(method: str, url: str) -> httpx2.Request:
    return httpx2.Request(method, url)


class EventStream:
    """The events (parsed JSON) of one streamed response, as the SDK's `AsyncStream` yields them: an event with an
    `error` object raises `openai.APIError`, `[DONE]` ends the stream, a broken body raises `StreamDropped`."""

    def __init__(self, response: aiohttp.ClientResponse, method: str, url: str,
                 skip: frozenset[bytes] = frozenset()) -> None:
        self._response = response
        self._method, self._url = method, url  # the SDK's errors carry the request: built only for one of them
        self._skip = skip

    @property
    def _request(self) -> httpx2.Request:
        return _request(self._method, self._url)

    def __aiter__(self) -> AsyncIterator[JSON]:
        return self._events()

    async def _events(self) -> AsyncIterator[JSON]:
        content = self._response.content
        buffer = b""
        try:
            while True:
                try:
                    chunk = await content.readany()
                except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                    raise openai.APITimeoutError(request=self._request) from exc
                except READ_ERRORS as exc:  # the caller turns these into a dropped stream, as the SDK's
                    raise openai.APIConnectionError(request=self._request) from exc
                if not chunk:
                    return
                buffer += chunk
                if b"\r" in buffer:
                    buffer = _normalise(buffer)
                start = 0  # frames are read in place: slicing the rest off after each would copy it every time
                passed_over = yielded = False
                while (end := buffer.find(b"\n\n", start)) >= 0:
                    frame, start = buffer[start:end], end + 2
                    if self._skip and _event_name(frame) in self._skip:
                        passed_over = True
                        continue
                    data = _data(frame)
                    if data is None:
                        continue
                    if data.startswith(DONE):
                        return
                    event = json.loads(data)
                    error = event.get("error") if isinstance(event, dict) else None
                    if isinstance(error, dict):
                        message = error.get("message")
                        raise openai.APIError(
                            message if isinstance(message, str) and message else "An error occurred during streaming",
                            request=self._request, body=error,
                        )
                    yielded = True
                    yield event
                buffer = buffer[start:]
                if passed_over and not yielded:
                    yield ALIVE
        finally:
            self.release()

    def release(self) -> None:
        """Give the connection back: kept for the next request when the body has ended, else closed."""
        response = self._response
        if response.closed:
            return
        content = response.content
        try:
            while content.read_nowait():  # what already arrived after the last event read ([DONE], the body's end)
                pass
        except READ_ERRORS:
            pass
        if content.at_eof():
            response.release()
        else:
            response.close()

    async def close(self) -> None:
        self.release()


def _normalise(buffer: bytes) -> bytes:
    """CRLF or CR line ends as LF; a trailing CR waits for the next chunk (it may be half of a CRLF)."""
    keep = b""
    if buffer.endswith(b"\r"):
        buffer, keep = buffer[:-1], b"\r"
    return buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + keep


def _event_name(frame: bytes) -> bytes:
    """The `event:` name of a frame that starts with one (the Responses API names every event), else b""."""
    if not frame.startswith(b"event:"):
        return b""
    end = frame.find(b"\n")
    return (frame[6:] if end < 0 else frame[6:end]).strip()


def _data(frame: bytes) -> str | None:
    """The data of one event (its `data:` lines joined), or None for a frame without data (comments, retry)."""
    parts = [line[5:] for line in frame.split(b"\n") if line.startswith(b"data:")]
    if not parts:
        return None
    return "\n".join(p[1:].decode() if p.startswith(b" ") else p.decode() for p in parts)
