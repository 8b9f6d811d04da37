"""Model providers: any OpenAI-compatible endpoint, and the offline demo model."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Protocol

import aiohttp
import orjson
import yarl

from webapp.base.i18n import Lang, t
from webapp.base.models import Usage
from webapp.config import Settings
from webapp.llm.body import aiohttp_body, encode, url_of

log = logging.getLogger("webapp.llm")

ChatMessages = list[dict[str, Any]]  # content: text, or OpenAI content parts (text, image_url) with images
PING_CACHE_SECONDS = 10.0
MODELS_CACHE_SECONDS = 300.0  # the upstream's /v1/models, asked at most this often
TITLE_TIMEOUT_SECONDS = 20.0


class UpstreamError(Exception):
    """The model failed; `key` is the catalog key of what the user is told (never the raw error), `params`
    what it names; `status` is what the text had so far is saved as (`interrupted`: cut off, not failed)."""

    def __init__(self, key: str = "error.upstream", *, status: str = "error", **params: str) -> None:
        super().__init__(key)
        self.key = key
        self.status = status
        self.params = params


class Provider(Protocol):
    name: str
    model: str

    def stream(self, messages: ChatMessages, *, role_name: str, lang: Lang, model: str | None = None,
               temperature: float | None = None, usage: Usage | None = None) -> AsyncIterator[str]:
        """Yield the reply's text deltas; raise UpstreamError on failure. `model` None: the default.
        When the model reports what the reply cost, its tokens go into `usage` (`estimated` cleared)."""
        ...

    async def models(self) -> list[str]:
        """The models a user may pick, the default first."""
        ...

    async def complete(self, messages: ChatMessages, *, model: str | None = None, max_tokens: int = 30) -> str:
        """A short reply in one piece (a title); raise UpstreamError on failure."""
        ...

    async def aclose(self) -> None: ...

    async def ping(self) -> bool: ...

    def preload(self) -> None:
        """Load, off the event loop, what the first calls would load on it."""
        ...


class OpenAIProvider:
    """Streams chat completions from any OpenAI-compatible API.

    The reply stream is read with one shared aiohttp session and parsed with orjson:
    under load, the openai SDK's request building (param transforms, httpx2 layers) and a
    Timeout reschedule per token were the app's largest costs (bench/README.md). The SDK's
    AsyncOpenAI client (on aiohttp too) asks for the model list and readiness.
    It is imported and made on first use, not at start: its import was a third of the
    start-up (bench/footprint.py).
    """

    name = "openai"
    retry_statuses = frozenset({429, 500, 502, 503, 504})

    def __init__(self, settings: Settings) -> None:
        self.model = settings.openai_model
        self.configured_models = settings.offered_models
        self._models: list[str] = []
        self._models_at = -MODELS_CACHE_SECONDS
        self._models_lock = asyncio.Lock()
        self.token_timeout = settings.openai_timeout
        self.base_url = (settings.openai_base_url or "https://api.openai.com/v1").rstrip("/")
        self.completions_url = yarl.URL(self.base_url + "/chat/completions")  # parsed once, not per reply
        self.api_key = settings.openai_api_key
        self.ask_usage = settings.openai_stream_usage
        self._client: Any = None
        self._ping: asyncio.Future[bool] | None = None
        self._ping_at = 0.0
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(),  # an API needs no cookies; skip the jar's work per response
            timeout=aiohttp.ClientTimeout(total=None, connect=10.0),
            headers={
                "Authorization": f"Bearer {settings.openai_api_key}",
                "Content-Type": "application/json",
                "Accept": "text/event-stream",
            },
        )

    async def stream(self, messages: ChatMessages, *, role_name: str, lang: Lang, model: str | None = None,
                     temperature: float | None = None, usage: Usage | None = None) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        watch = _IdleWatch(loop, task, self.token_timeout)
        request: dict[str, Any] = {"model": model or self.model, "messages": messages, "stream": True}
        if temperature is not None:
            request["temperature"] = temperature
        if self.ask_usage:  # the last chunk (no choices) then carries the reply's token counts
            request["stream_options"] = {"include_usage": True}
        body = encode(request)  # (images spliced in as stored: llm/body.py)
        try:
            for attempt in (1, 2):
                try:
                    async with self.session.post(self.completions_url, **aiohttp_body(body)) as response:
                        if response.status != 200:
                            if attempt == 1 and response.status in self.retry_statuses:
                                await asyncio.sleep(0.3)
                                continue
                            raise UpstreamError(_status_key(response.status))
                        _require_event_stream(response.headers.get("Content-Type"))
                        # whatever arrived, split into lines here: one await per packet, not per line
                        buffer, finished = b"", False
                        async for data in response.content.iter_any():
                            watch.touch()
                            *lines, buffer = (buffer + data).split(b"\n")
                            for line in lines:
                                text = delta_text(line)
                                if text is None:
                                    return
                                if text.__class__ is not str:
                                    finished = finished or text.__class__ is Finishing
                                    _take_usage(text, usage)
                                if text:
                                    yield text
                        last = delta_text(buffer)  # a last line with no newline after it
                        if last is None:
                            return
                        _take_usage(last, usage)
                        if last:
                            yield last
                        if not finished and last.__class__ is not Finishing:
                            # closed with neither [DONE] nor a finish reason: the reply may be cut off
                            log.warning("upstream stream ended without [DONE] or a finish reason")
                            raise UpstreamError("error.upstream_incomplete", status="interrupted")
                        return
                except aiohttp.ClientConnectionError:
                    if attempt == 1 and not watch.touched:
                        await asyncio.sleep(0.3)
                        continue
                    raise
        except asyncio.CancelledError:
            if watch.fired and task is not None:
                task.uncancel()
                raise UpstreamError("error.upstream_timeout") from None
            raise
        except UpstreamError:
            raise
        except Exception as exc:  # connection resets and payload errors surface raw mid-stream
            log.warning("upstream stream broke: %s", type(exc).__name__)
            raise UpstreamError() from None
        finally:
            watch.stop()

    async def ping(self) -> bool:
        """Whether the model endpoint answers: asked at most once per PING_CACHE_SECONDS.

        /readyz is unauthenticated and probes can come often: however many ask, one
        call at a time reaches the (possibly paid) API, and its answer is shared.
        """
        loop = asyncio.get_running_loop()
        stale = loop.time() - self._ping_at >= PING_CACHE_SECONDS
        if self._ping is None or (self._ping.done() and stale):
            self._ping_at = loop.time()
            self._ping = asyncio.ensure_future(self._check_models())
        return await asyncio.shield(self._ping)

    def preload(self) -> None:
        """Import the SDK (a worker thread at start), so the first page that lists models finds it loaded."""
        if not self.configured_models:
            _import_sdk()

    async def sdk_client(self) -> Any:
        """openai.AsyncOpenAI for the calls off the hot path, made on first use.

        The SDK is imported in a worker thread, never on the event loop: the start's warm-up imports
        it in a thread, and an import of the same module on the loop meanwhile would wait for that
        thread's import lock, holding every request for a second or more (streaming replies then
        passed their token timeout and failed; tests/test_hostile_input.py met it just after start)."""
        if self._client is None:
            await asyncio.to_thread(_import_sdk)
        if self._client is None:
            from openai import AsyncOpenAI, DefaultAioHttpClient, Timeout  # (imported by now: a lookup)

            timeout = Timeout(self.token_timeout, connect=10.0)
            self._client = AsyncOpenAI(api_key=self.api_key, base_url=self.base_url, timeout=timeout,
                                       max_retries=0, http_client=DefaultAioHttpClient(timeout=timeout))
        return self._client

    async def models(self) -> list[str]:
        """OPENAI_MODELS, else the API's model list (cached for MODELS_CACHE_SECONDS); the default first.
        When the list cannot be had, the default model alone (and the last list, if any)."""
        if self.configured_models:
            return _default_first(self.model, self.configured_models)
        loop = asyncio.get_running_loop()
        async with self._models_lock:
            if loop.time() - self._models_at >= MODELS_CACHE_SECONDS:
                try:
                    page = await asyncio.wait_for((await self.sdk_client()).models.list(), timeout=10)
                    self._models = sorted(str(item.id) for item in page.data)
                    self._models_at = loop.time()
                except Exception as exc:  # the choice falls back to the default; asked again next time
                    log.warning("model list unavailable: %s", type(exc).__name__)
            return _default_first(self.model, self._models)

    async def complete(self, messages: ChatMessages, *, model: str | None = None, max_tokens: int = 30) -> str:
        """A short answer, not streamed (a generated title). On the replies' aiohttp session rather than
        the SDK: it runs once per new conversation, and the SDK's request building cost more CPU than
        the rest of a turn (bench/README.md, issue 19)."""
        body = orjson.dumps({"model": model or self.model, "messages": messages, "max_tokens": max_tokens,
                             "stream": False})
        try:
            async with asyncio.timeout(TITLE_TIMEOUT_SECONDS):
                async with self.session.post(self.completions_url, data=body,
                                             headers={"Accept": "application/json"}) as response:
                    if response.status != 200:
                        raise UpstreamError(_status_key(response.status))
                    answer = orjson.loads(await response.read())
            return str(answer["choices"][0]["message"].get("content") or "")
        except Exception as exc:
            log.warning("short completion failed: %s", type(exc).__name__)
            raise UpstreamError() from None

    async def _check_models(self) -> bool:
        """The model list answers with the key we hold (the cheapest authenticated call)."""
        try:
            await asyncio.wait_for((await self.sdk_client()).models.list(), timeout=5)
            return True
        except Exception:
            return False

    async def aclose(self) -> None:
        await self.session.close()
        if self._client is not None:
            await self._client.close()


class _IdleWatch:
    """Cancels a task when no token arrived for `timeout` seconds.

    One timer per reply that re-arms itself only when it fires: touching it per
    token is an attribute write, not a timer reschedule.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task | None, timeout: float) -> None:
        self.loop, self.task, self.timeout = loop, task, timeout
        self.last = loop.time()
        self.touched = False
        self.fired = False
        self.handle: asyncio.TimerHandle | None = loop.call_at(self.last + timeout, self._check)

    def touch(self) -> None:
        self.last = self.loop.time()
        self.touched = True

    def _check(self) -> None:
        idle = self.loop.time() - self.last
        if idle >= self.timeout and self.task is not None:
            self.fired = True
            self.handle = None
            self.task.cancel()
        else:
            self.handle = self.loop.call_at(self.last + self.timeout, self._check)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


def _default_first(default: str, names: list[str]) -> list[str]:
    return [default] + [name for name in names if name != default]


def _require_event_stream(content_type: str | None) -> None:
    """A 200 that is not an event stream (a proxy's HTML page, a non-streamed JSON body) is no reply:
    the user is told what came instead of saving an empty one. No Content-Type at all is let through
    (the stream's ending then says whether a reply came)."""
    if content_type is None:
        return
    mime = content_type.partition(";")[0].strip().lower()
    if mime != "text/event-stream":
        shown = "".join(char for char in mime if char.isprintable())[:80] or "?"
        log.warning("upstream answered 200 with %s, not text/event-stream (is OPENAI_BASE_URL the API's?)", shown)
        raise UpstreamError("error.upstream_not_stream", content_type=shown)


def _status_key(status: int) -> str:
    if status in (401, 403):
        return "error.upstream_auth"
    if status == 429:
        return "error.upstream_rate"
    log.warning("upstream status %s", status)
    return "error.upstream"


class DemoProvider:
    """An offline stand-in that needs no key: a labelled reply that shows what it was given.

    Deterministic, and a little Markdown (a quote of the message, a list, a table, a code
    block), so a first run without a key shows how replies are rendered.
    """

    name = "demo"
    model = "demo"

    def __init__(self, token_delay: float = 0.03) -> None:
        self.token_delay = token_delay

    async def models(self) -> list[str]:
        return [self.model]

    async def complete(self, messages: ChatMessages, *, model: str | None = None, max_tokens: int = 30) -> str:
        raise UpstreamError()  # titles come from the first message in demo mode

    async def stream(self, messages: ChatMessages, *, role_name: str, lang: Lang, model: str | None = None,
                     temperature: float | None = None, usage: Usage | None = None) -> AsyncIterator[str]:
        """(No token counts: the turn estimates them, marked as estimated.)"""
        history = [m for m in messages if m["role"] != "system"]
        content = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
        last, received = demo_received(content)
        last = " ".join(last.split())
        if len(last) > 60:
            last = last[:59] + "…"
        text = t("demo.label", lang) + " " + t("demo.reply", lang, role=role_name, count=len(history), last=last)
        if received:
            text += "\n\n" + t("demo.attachments", lang) + "\n\n" + "\n".join(f"- {line}" for line in received)
        await asyncio.sleep(self.token_delay * 3)
        for piece in _demo_pieces(text):
            yield piece
            await asyncio.sleep(self.token_delay)

    async def ping(self) -> bool:
        return True

    def preload(self) -> None:
        pass

    async def aclose(self) -> None:
        return None


def demo_received(content: str | list[dict[str, Any]]) -> tuple[str, list[str]]:
    """What the demo model says it received: the message's own text, and a line per file (a document's name
    and first line, an image's size)."""
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    text = "".join(p.get("text", "") for p in parts if p.get("type") == "text")
    own, _, files = text.partition("\n\n--- file: ")
    received = []
    for block in ("--- file: " + files).split("\n\n--- file: ") if files else []:
        head, _, body = block.removeprefix("--- file: ").partition(" ---\n")
        first = next((line.strip() for line in body.splitlines() if line.strip()), "")
        received.append(f"`{head[:80]}`: {first[:80]}")
    for part in parts:
        if part.get("type") == "image_url":
            received.append(_image_size(url_of(part["image_url"]["url"])))
    return own, received


def _image_size(url: str) -> str:
    """"image 800×600 (image/jpeg)" from a data URL: the header only is read."""
    import base64
    import io

    from PIL import Image

    head, _, data = url.partition(",")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            return f"image {image.width}×{image.height} ({head[5:].partition(';')[0]})"
    except (OSError, ValueError):
        return "image"


def _import_sdk() -> None:
    """(In a worker thread: see OpenAIProvider.sdk_client.)"""
    import openai  # noqa: F401


def _demo_pieces(text: str, size: int = 3) -> list[str]:
    """Cut text into token-like pieces: words for Latin text, a few characters for CJK."""
    pieces: list[str] = []
    current = ""
    for char in text:
        current += char
        if char == " " or (ord(char) > 0x2E80 and len(current) >= size) or len(current) >= 12:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


class Finishing(str):
    """delta_text's answer for a chunk with a finish reason (its text, often empty): the reply is whole
    even when no `[DONE]` follows. `counts`: (prompt, completion) tokens when the chunk carries them."""

    counts: tuple[int, int] | None = None


class Counted(str):
    """delta_text's answer (always "") for the chunk `stream_options.include_usage` adds at the end: no
    choices, the reply's `usage`."""

    counts: tuple[int, int] | None = None


MAX_COUNT = 10**9  # tokens one reply may report (far past any context window)


def _counts(data: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of a chunk's `usage`, if it has one."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    try:
        # (capped: a count past what a Redis integer holds would fail one HINCRBY of the save's MULTI)
        return (min(MAX_COUNT, max(0, int(usage.get("prompt_tokens") or 0))),
                min(MAX_COUNT, max(0, int(usage.get("completion_tokens") or 0))))
    except (TypeError, ValueError):
        return None


def _take_usage(text: str, usage: Usage | None) -> None:
    counts = getattr(text, "counts", None)
    if counts is not None and usage is not None:
        usage.input_tokens, usage.output_tokens = counts
        usage.estimated = False


def delta_text(line: bytes) -> str | None:
    """The text of one SSE line of a chat.completion.chunk stream; None at `[DONE]`; a Finishing for
    the chunk that carries the finish reason."""
    if not line.startswith(b"data:"):
        return ""
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return None
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(data, dict) and data.get("error"):
        log.warning("upstream sent an error event")
        raise UpstreamError()
    try:
        choice = data["choices"][0]
        text = choice["delta"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        counts = _counts(data)
        if counts is None:
            return ""
        counted = Counted()
        counted.counts = counts
        return counted
    if choice.get("finish_reason"):
        finishing = Finishing(text)
        finishing.counts = _counts(data)
        return finishing
    return text


def create_provider(settings: Settings) -> Provider:
    return DemoProvider() if settings.demo_mode else OpenAIProvider(settings)

