"""A real OpenAI-compatible HTTP server whose replies describe the request it got.

Tests (and the benchmarks) point the app's ``OPENAI_BASE_URL`` at it, so the app's
real HTTP client, timeouts and streaming code are exercised. Every reply starts with
``ctx={N} sys={S} last={L}``: the number of non-system messages received, a tag of the
system prompt and the start of the last user message. A test can therefore check the
context window the app built without looking inside the app.

Directives in the last user message change the behaviour of that one request:
``[[fail:500]]``, ``[[fail:429]]``, ``[[stall]]``, ``[[stall_after:N]]``, ``[[drop:N]]``,
``[[tokens:N]]``, ``[[delay:MS]]``, ``[[ttft:MS]]``; with ``[[once]]`` a failure directive applies
only the first time that message is seen, so a Retry succeeds; ``[[vary]]`` ends the reply with
the request's number, so a regenerated answer differs. ``[[echo]]`` makes the reply the last user
message itself (directives removed, trimmed), streamed in pieces of ECHO_PIECE characters: a test
chooses what the model says, e.g. Markdown or hostile text. ``[[whoami]]`` makes the reply
``model={model} temperature={t} system={the whole system prompt}``: which model and which system
prompt (a custom role's, say) the request carried (``parse_whoami`` reads it back). Upstreams that
answer 200 but not as they should: ``[[html]]`` (an HTML page), ``[[json]]`` (a plain, non-streamed
completion), ``[[nodone]]`` (the stream's tokens, then a clean close with no finish reason and no
``[DONE]``), ``[[big:N]]`` (one delta of N characters).

Token counts: asked for them (``stream_options: {"include_usage": true}``), a stream ends, as OpenAI's
does, with a chunk of no choices and ``usage``: ``prompt_tokens`` = PROMPT_TOKENS_PER_MESSAGE per
message received, ``completion_tokens`` = the reply's streamed tokens. ``[[nousage]]`` (or the server's
``report_usage=False``) sends none, as many OpenAI-compatible servers do.

Run it alone for a benchmark::

    python tests/fake_upstream.py --port 9000 --ttft-ms 100 --token-delay-ms 20 --tokens 50
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import itertools
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

try:
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

except ImportError:  # pragma: no cover - orjson is in the test requirements
    import json

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


DEFAULT_MODEL = "fake-model"
HEADER_TOKENS = 3  # "ctx=..", " sys=..", " last=.." are the first three tokens
STALL_SECONDS = 120.0
ECHO_PIECE = 8  # characters per streamed token of an echoed reply
PROMPT_TOKENS_PER_MESSAGE = 10  # the prompt_tokens reported: this many per message of the request

_DIRECTIVE = re.compile(
    r"\[\[(fail|stall_after|stall|drop|tokens|delay|ttft|echo|once|vary|whoami|html|json|nodone|big|nousage)(?::(\d+))?\]\]"
)
_WHOAMI = re.compile(r"^model=(\S*) temperature=(\S*) system=(.*)$", re.DOTALL)
_REPLY = re.compile(r"^ctx=(\d+) sys=(\S+) last=(.*?)((?: t\d+)*)(?: v\d+)?$", re.DOTALL)


# ---------------------------------------------------------------- reply encoding


def expected_sys_tag(prompt: str | None) -> str:
    """The ``sys=`` tag the fake upstream sends for a system prompt (``none`` if absent)."""
    if prompt is None:
        return "none"
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:8]


def expected_last_tag(message: str) -> str:
    """The ``last=`` tag for a user message: whitespace collapsed, first 30 characters."""
    return " ".join(message.split())[:30]


def reply_tokens(ctx: int, sys_tag: str, last_tag: str, tokens: int) -> list[str]:
    """Every token of a complete reply, in order; joined they are the reply text."""
    header = [f"ctx={ctx}", f" sys={sys_tag}", f" last={last_tag}"]
    filler = [f" t{i}" for i in range(1, max(0, tokens - HEADER_TOKENS) + 1)]
    return header + filler


def echo_tokens(message: str) -> list[str]:
    """The tokens of an ``[[echo]]`` reply: the message without its directives, trimmed, in pieces."""
    text = _DIRECTIVE.sub("", message).strip()
    return [text[start : start + ECHO_PIECE] for start in range(0, len(text), ECHO_PIECE)]


def expected_reply(ctx: int, system_prompt: str | None, last_message: str, tokens: int) -> str:
    """The full reply text for a request with ``ctx`` messages ending in ``last_message``."""
    return "".join(
        reply_tokens(ctx, expected_sys_tag(system_prompt), expected_last_tag(last_message), tokens)
    )


def whoami_tokens(model: str, temperature: Any, system: str | None) -> list[str]:
    text = f"model={model} temperature={temperature if temperature is not None else 'none'} system={system or ''}"
    return [text[start : start + ECHO_PIECE] for start in range(0, len(text), ECHO_PIECE)]


def parse_whoami(text: str) -> dict[str, Any]:
    """Decode a ``[[whoami]]`` reply: ``{"model": str, "temperature": str, "system": str}``."""
    match = _WHOAMI.match(text)
    if match is None:
        raise ValueError(f"not a whoami reply: {text[:120]!r}")
    return {"model": match.group(1), "temperature": match.group(2), "system": match.group(3)}


def parse_reply(text: str) -> dict[str, Any]:
    """Decode a reply: ``{"ctx": int, "sys": str, "last": str, "filler": int}``.

    Raises ``ValueError`` when ``text`` is not a reply of the fake upstream.
    """
    match = _REPLY.match(text)
    if match is None:
        raise ValueError(f"not a fake upstream reply: {text[:120]!r}")
    filler = match.group(4)
    return {
        "ctx": int(match.group(1)),
        "sys": match.group(2),
        "last": match.group(3),
        "filler": filler.count(" t"),
    }


# ---------------------------------------------------------------- request handling


@dataclass(frozen=True)
class Behaviour:
    """How one request is answered; server defaults overridden by directives."""

    ttft_ms: float = 10.0
    token_delay_ms: float = 5.0
    tokens: int = 12
    fail: int | None = None
    stall: bool = False
    stall_after: int | None = None
    drop_after: int | None = None
    echo: bool = False
    once: bool = False  # misbehave only the first time this message is seen (then a Retry works)
    vary: bool = False  # end the reply with the request's number, so two answers to one context differ
    whoami: bool = False  # the reply names the model, temperature and system prompt it was asked with
    answer_as: str = ""  # "html" or "json": a 200 that is not an event stream
    no_ending: bool = False  # the stream closes cleanly without a finish reason or [DONE]
    big: int = 0  # one extra delta of this many characters after the header
    usage: bool = True  # report token counts when asked (stream_options.include_usage)

    def with_directives(self, text: str) -> Behaviour:
        changes: dict[str, Any] = {}
        for name, value in _DIRECTIVE.findall(text):
            number = int(value) if value else None
            if name == "fail":
                changes["fail"] = number or 500
            elif name == "stall":
                changes["stall"] = True
            elif name == "stall_after" and number is not None:
                changes["stall_after"] = number
            elif name == "drop" and number is not None:
                changes["drop_after"] = number
            elif name == "tokens" and number is not None:
                changes["tokens"] = number
            elif name == "delay" and number is not None:
                changes["token_delay_ms"] = float(number)
            elif name == "ttft" and number is not None:
                changes["ttft_ms"] = float(number)
            elif name == "echo":
                changes["echo"] = True
            elif name == "once":
                changes["once"] = True
            elif name == "vary":
                changes["vary"] = True
            elif name == "whoami":
                changes["whoami"] = True
            elif name in ("html", "json"):
                changes["answer_as"] = name
            elif name == "nodone":
                changes["no_ending"] = True
            elif name == "big" and number is not None:
                changes["big"] = number
            elif name == "nousage":
                changes["usage"] = False
        return replace(self, **changes)


def _text_of(content: Any) -> str:
    """Message content as text; the OpenAI format also allows a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict)
        )
    return ""


def _error_body(message: str, kind: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class FakeUpstream:
    """The aiohttp application and its listening site; start and stop on one event loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ttft_ms: float = 10.0,
        token_delay_ms: float = 5.0,
        tokens: int = 12,
        model: str = DEFAULT_MODEL,
        max_records: int = 100_000,
        report_usage: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.model = model
        self.defaults = Behaviour(ttft_ms=ttft_ms, token_delay_ms=token_delay_ms, tokens=tokens, usage=report_usage)
        self.seen_once: set[str] = set()
        self.requests_served = 0
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_records)
        self._ids = itertools.count(1)
        self._in_flight: collections.Counter[str] = collections.Counter()  # chat requests being answered, by system prompt
        self._runner: web.AppRunner | None = None

    # -- lifecycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 2**20)  # (images as data URLs: as a provider takes them)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_requests", self._list_requests)
        app.router.add_post("/_reset", self._reset)
        # handler_cancellation: a stalled or streaming handler stops when its client goes away.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        if self.port == 0:
            server = site._server  # the asyncio server; the only way to learn the bound port
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- recorded requests

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received under ``/v1``, oldest first."""
        return list(self._records)

    def chat_requests(self, containing: str | None = None) -> list[dict[str, Any]]:
        """Chat completion requests, optionally only those whose last user message
        contains ``containing`` (tests put a unique marker in their messages)."""
        found = [r for r in self._records if r["path"] == "/v1/chat/completions"]
        if containing is not None:
            found = [r for r in found if containing in r["last_user_message"]]
        return found

    def reset(self) -> None:
        self._records.clear()

    def _record(self, request: web.Request, body: dict[str, Any] | None) -> None:
        headers = {str(k): v for k, v in request.headers.items() if k.lower() != "authorization"}
        messages = (body or {}).get("messages") or []
        last_user = next(
            (_text_of(m.get("content")) for m in reversed(messages)
             if isinstance(m, dict) and m.get("role") == "user"),
            "",
        )
        last_parts = next((m.get("content") for m in reversed(messages)
                           if isinstance(m, dict) and m.get("role") == "user"), "")
        self._records.append(
            {
                "path": request.path,
                # the last user message's content parts as received (text is one text part): images arrive
                # as image_url parts, tests check their data URLs
                "last_user_parts": last_parts if isinstance(last_parts, list) else [{"type": "text", "text": last_parts}],
                "model": (body or {}).get("model"),
                "stream": bool((body or {}).get("stream")),
                "stream_options": (body or {}).get("stream_options"),
                "messages": messages,
                "last_user_message": last_user,
                "headers": headers,
                "received_at": time.time(),
            }
        )

    # -- handlers

    @staticmethod
    def _authorized(request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(token.strip())

    @staticmethod
    def _unauthorized() -> web.Response:
        body = _error_body("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return web.Response(status=401, body=_dumps(body), content_type="application/json")

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, None)
        if not self._authorized(request):
            return self._unauthorized()
        body = {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "fake"}
                     for name in (self.model, self.model + "-large")],
        }
        return web.Response(body=_dumps(body), content_type="application/json")

    async def _list_requests(self, request: web.Request) -> web.Response:
        return web.Response(body=_dumps(self.requests), content_type="application/json")

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self._record(request, body if isinstance(body, dict) else None)
        if not self._authorized(request):
            return self._unauthorized()
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            error = _error_body("'messages' is required", "invalid_request_error", "bad_request")
            return web.Response(status=400, body=_dumps(error), content_type="application/json")

        messages = [m for m in body["messages"] if isinstance(m, dict)]
        system = next((_text_of(m.get("content")) for m in messages if m.get("role") == "system"), None)
        # how many requests with this system prompt are being answered at once, this one included
        # (a test of how many calls of one kind an app makes at once reads it off the records)
        self._in_flight[system or ""] += 1
        self._records[-1]["concurrent"] = self._in_flight[system or ""]
        try:
            return await self._answer(request, body, messages, system)
        finally:
            self._in_flight[system or ""] -= 1

    async def _answer(self, request: web.Request, body: dict[str, Any], messages: list[dict[str, Any]],
                      system: str | None) -> web.StreamResponse:
        non_system = [m for m in messages if m.get("role") != "system"]
        last_user = next(
            (_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        behaviour = self.defaults.with_directives(last_user)
        if behaviour.once:
            if last_user in self.seen_once:
                behaviour = replace(behaviour, fail=None, stall=False, stall_after=None, drop_after=None)
            self.seen_once.add(last_user)
        model = body.get("model") or self.model

        if behaviour.fail is not None:
            status = behaviour.fail
            kind = "rate_limit_exceeded" if status == 429 else "server_error"
            error = _error_body(f"fake upstream failure boom-{status}", kind, kind)
            headers = {"Retry-After": "0"} if status == 429 else None
            return web.Response(
                status=status, body=_dumps(error), content_type="application/json", headers=headers
            )

        if behaviour.whoami:
            tokens = whoami_tokens(model, body.get("temperature"), system)
        elif behaviour.echo:
            tokens = echo_tokens(last_user)
        else:
            tokens = reply_tokens(
                len(non_system), expected_sys_tag(system), expected_last_tag(last_user), behaviour.tokens
            )
        self.requests_served += 1
        if behaviour.vary:
            tokens = tokens + [f" v{self.requests_served}"]
        if behaviour.big:
            tokens = tokens[:1] + ["x" * (behaviour.big - 1) + "y"] + tokens[1:]
        completion_id = f"chatcmpl-fake-{next(self._ids)}"
        created = int(time.time())
        if behaviour.answer_as == "html":  # a proxy's or a web server's page where the API should be
            return web.Response(body=b"<!doctype html><title>Welcome</title><h1>It works!</h1>",
                                content_type="text/html", charset="utf-8")
        if not body.get("stream") or behaviour.answer_as == "json":
            await asyncio.sleep(behaviour.ttft_ms / 1000)
            return self._completion(completion_id, created, model, "".join(tokens), len(messages))
        wants_usage = isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage")
        counts = (PROMPT_TOKENS_PER_MESSAGE * len(messages), len(tokens)) if wants_usage and behaviour.usage else None
        return await self._stream(request, behaviour, tokens, completion_id, created, model, counts)

    def _completion(
        self, completion_id: str, created: int, model: str, text: str, prompt_messages: int
    ) -> web.Response:
        body = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_messages,
                "completion_tokens": len(text.split()),
                "total_tokens": prompt_messages + len(text.split()),
            },
        }
        return web.Response(body=_dumps(body), content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        behaviour: Behaviour,
        tokens: list[str],
        completion_id: str,
        created: int,
        model: str,
        counts: tuple[int, int] | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        def frame(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
                ],
            }
            return b"data: " + _dumps(chunk) + b"\n\n"

        if behaviour.stall:
            await asyncio.sleep(STALL_SECONDS)
            return response

        await asyncio.sleep(behaviour.ttft_ms / 1000)
        delay = behaviour.token_delay_ms / 1000
        for sent, token in enumerate(tokens):
            if behaviour.stall_after is not None and sent >= behaviour.stall_after:
                await asyncio.sleep(STALL_SECONDS)
                return response
            if behaviour.drop_after is not None and sent >= behaviour.drop_after:
                return self._abort(request, response)
            if sent and delay:
                await asyncio.sleep(delay)
            delta = {"role": "assistant", "content": token} if sent == 0 else {"content": token}
            await response.write(frame(delta))
        if behaviour.drop_after is not None and behaviour.drop_after <= len(tokens):
            return self._abort(request, response)
        if not behaviour.no_ending:
            last = frame({}, "stop")
            if counts is not None:  # OpenAI's usage chunk: no choices, after the finish reason
                last += b"data: " + _dumps({
                    "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": {"prompt_tokens": counts[0], "completion_tokens": counts[1],
                                             "total_tokens": counts[0] + counts[1]},
                }) + b"\n\n"
            await response.write(last + b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    def _abort(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Cut the TCP connection mid-body, as a crashed upstream or proxy would."""
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError  # nothing more can be written; end the handler quietly


# ---------------------------------------------------------------- running in a thread


class ThreadedFakeUpstream:
    """A FakeUpstream on its own event loop in a daemon thread, for synchronous fixtures."""

    def __init__(self, **options: Any) -> None:
        self.server = FakeUpstream(**options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-upstream", daemon=True)

    def start(self) -> ThreadedFakeUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ThreadedFakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.server.requests

    def chat_requests(self, containing: str | None = None) -> list[dict[str, Any]]:
        return self.server.chat_requests(containing)

    def reset(self) -> None:
        self.server.reset()  # deque.clear is atomic; done on return, unlike a scheduled call


def start_in_thread(**options: Any) -> ThreadedFakeUpstream:
    """Start a fake upstream in a background thread; ``.base_url`` is ready on return."""
    return ThreadedFakeUpstream(**options).start()


# ---------------------------------------------------------------- script


async def _serve(args: argparse.Namespace) -> None:
    server = FakeUpstream(
        args.host,
        args.port,
        ttft_ms=args.ttft_ms,
        token_delay_ms=args.token_delay_ms,
        tokens=args.tokens,
        model=args.model,
        max_records=args.max_records,
    )
    await server.start()
    print(f"fake upstream listening on {server.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(
    *,
    description: str | None = None,
    ttft_ms: float = 10.0,
    token_delay_ms: float = 5.0,
    tokens: int = 12,
    max_records: int = 10_000,
    use_uvloop: bool = False,
) -> None:
    """The command line; the benchmarks call it with their own defaults (bench/fake_upstream.py)."""
    parser = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--ttft-ms", type=float, default=ttft_ms, help="delay before the first token")
    parser.add_argument("--token-delay-ms", type=float, default=token_delay_ms, help="delay between tokens")
    parser.add_argument("--tokens", type=int, default=tokens, help="tokens per reply, header included")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--max-records", type=int, default=max_records, help="requests kept for GET /_requests")
    run = asyncio.run
    if use_uvloop:
        try:
            from uvloop import run  # type: ignore[no-redef]
        except ImportError:  # the stdlib loop works, it is only slower
            pass
    try:
        run(_serve(parser.parse_args()))
    except KeyboardInterrupt:
        pass

if __name__ == "__main__":
    main()
