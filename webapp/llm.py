"""Model providers: any OpenAI-compatible endpoint, and the offline demo model."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Protocol

import httpx2
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient

from .config import Settings
from .i18n import Lang, t

log = logging.getLogger("webapp.llm")

ChatMessages = list[dict[str, str]]


class UpstreamError(Exception):
    """The model failed; `key` is the catalog key of what the user is told (never the raw error)."""

    def __init__(self, key: str = "error.upstream") -> None:
        super().__init__(key)
        self.key = key


class Provider(Protocol):
    name: str
    model: str

    def stream(self, messages: ChatMessages, *, role_name: str, lang: Lang) -> AsyncIterator[str]:
        """Yield the reply's text deltas; raise UpstreamError on failure."""
        ...

    async def aclose(self) -> None: ...

    async def ping(self) -> bool: ...


class OpenAIProvider:
    """Streams chat completions from any OpenAI-compatible API through one shared AsyncOpenAI.

    The client uses the SDK's aiohttp transport: with hundreds of concurrent streams
    httpx's pool costs several times more (see the bench README).
    """

    name = "openai"

    def __init__(self, settings: Settings) -> None:
        self.model = settings.openai_model
        self.token_timeout = settings.openai_timeout
        self.client = AsyncOpenAI(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url or None,
            max_retries=1,
            timeout=httpx2.Timeout(settings.openai_timeout, connect=10.0),
            http_client=DefaultAioHttpClient(
                timeout=httpx2.Timeout(settings.openai_timeout, connect=10.0),
                limits=httpx2.Limits(max_connections=5000, max_keepalive_connections=1000),
            ),
        )

    async def stream(self, messages: ChatMessages, *, role_name: str, lang: Lang) -> AsyncIterator[str]:
        try:
            async with asyncio.timeout(self.token_timeout) as deadline:
                response = await self.client.chat.completions.create(
                    model=self.model, messages=messages, stream=True  # type: ignore[arg-type]
                )
                async for chunk in response:
                    if chunk.choices:
                        text = chunk.choices[0].delta.content
                        if text:
                            yield text
                    # the deadline is per token, not per reply: a long answer is fine, a stall is not
                    deadline.reschedule(asyncio.get_running_loop().time() + self.token_timeout)
        except (asyncio.TimeoutError, openai.APITimeoutError):
            raise UpstreamError("error.upstream_timeout") from None
        except openai.AuthenticationError:
            raise UpstreamError("error.upstream_auth") from None
        except openai.RateLimitError:
            raise UpstreamError("error.upstream_rate") from None
        except openai.APIStatusError as exc:
            log.warning("upstream status %s", exc.status_code)
            raise UpstreamError() from None
        except (openai.APIError, OSError, ValueError) as exc:
            log.warning("upstream failed: %s", type(exc).__name__)
            raise UpstreamError() from None
        except Exception as exc:  # aiohttp payload errors and the like surface raw mid-stream
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.warning("upstream stream broke: %s", type(exc).__name__)
            raise UpstreamError() from None

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self.client.models.list(), timeout=5)
            return True
        except Exception:
            return False

    async def aclose(self) -> None:
        await self.client.close()


class DemoProvider:
    """An offline stand-in that needs no key: a labelled reply that shows what it was given."""

    name = "demo"
    model = "demo"

    def __init__(self, token_delay: float = 0.03) -> None:
        self.token_delay = token_delay

    async def stream(self, messages: ChatMessages, *, role_name: str, lang: Lang) -> AsyncIterator[str]:
        history = [m for m in messages if m["role"] != "system"]
        last = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
        last = " ".join(last.split())
        if len(last) > 60:
            last = last[:59] + "…"
        text = t("demo.label", lang) + " " + t("demo.reply", lang, role=role_name, count=len(history), last=last)
        await asyncio.sleep(self.token_delay * 3)
        for piece in _demo_pieces(text):
            yield piece
            await asyncio.sleep(self.token_delay)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


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


def create_provider(settings: Settings) -> Provider:
    return DemoProvider() if settings.demo_mode else OpenAIProvider(settings)
