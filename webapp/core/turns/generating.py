"""Generating a reply: the model's stream, coalesced into events for the readers and the turn's stream."""

from __future__ import annotations

import asyncio
import time

from webapp.base.models import TurnEvent
from webapp.core.turns.run import MAX_EVENT_CHARS, TurnRun, log
from webapp.core.turns.writer_state import WriterState
from webapp.llm.providers import UpstreamError
from webapp.llm.tokens import estimate_usage


class TurnGenerating(WriterState):
    """Generating a reply: a part of TurnWriter (writer.py)."""

    async def _generate(self, run: TurnRun, messages: list[dict[str, str]]) -> None:
        status, error_key, error_params = "complete", "", {}
        try:
            # a reply may take TURN_TIMEOUT_SECONDS at most (its lease is renewed until then)
            async with asyncio.timeout(max(1, self.settings.turn_timeout_seconds - 5)):
                async for delta in self.provider.stream(
                    messages, role_name=run.role.name(run.lang), lang=run.lang, model=run.model or None,
                    temperature=run.role.temperature, usage=run.usage,
                ):
                    self._add_text(run, delta)
        except TimeoutError:
            status, error_key = "error", "error.reply_too_long"
        except asyncio.CancelledError:
            status = "interrupted"
            error_key = "" if run.cancel_reason == "user" else "error.interrupted"
        except UpstreamError as exc:
            status, error_key, error_params = exc.status, exc.key, exc.params
            self.metrics.upstream_error()
        except Exception:
            log.exception("turn %s failed", run.id)
            status, error_key = "error", "error.upstream"
            self.metrics.upstream_error()
        try:
            if run.usage.estimated:  # the model sent no counts (or was cut off before its last chunk)
                estimate_usage(messages, "".join(run.text), run.usage)
        except Exception:  # (an estimate never keeps a reply from being saved)
            log.exception("turn %s: usage not estimated", run.id)
        await asyncio.shield(self._finish(run, status, error_key, error_params))

    def _add_text(self, run: TurnRun, delta: str) -> None:
        """Queue a delta; emit at once if the last event is older than the coalescing window."""
        if run.first_token_at is None:
            run.first_token_at = time.perf_counter()
            self.metrics.observe_ttft(run.first_token_at - run.started)
        run.text.append(delta)
        run.pending.append(delta)
        if run.flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        due = run.last_emit + self.coalesce
        now = loop.time()
        if now >= due:
            self._emit_pending(run)
        else:
            run.flush_handle = loop.call_at(due, self._emit_pending, run)

    def _emit_pending(self, run: TurnRun) -> None:
        run.flush_handle = None
        if not run.pending or run.finished:
            return
        content = "".join(run.pending)
        run.pending.clear()
        run.last_emit = asyncio.get_running_loop().time()
        if len(content) > MAX_EVENT_CHARS:
            self._emit_split(run, content)
            return
        event = TurnEvent(seq=run.next_seq(), type="chunk", content=content)
        run.publish(event)
        self.stream_writer.add(run.ref, event)

    def _emit_split(self, run: TurnRun, content: str) -> None:
        for start in range(0, len(content), MAX_EVENT_CHARS):
            event = TurnEvent(seq=run.next_seq(), type="chunk", content=content[start : start + MAX_EVENT_CHARS])
            run.publish(event)
            self.stream_writer.add(run.ref, event)
