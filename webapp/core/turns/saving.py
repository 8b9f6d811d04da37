"""Saving a reply: the final event and the history in one MULTI (`end` always means saved), or what
is kept of it when the model or Redis fails.

Every ending says what was saved (README, "How a turn works"): `end`, the reply; `error`, why it did
not finish, what it wrote so far being saved with it as a marked reply (failed, or interrupted), except
when the error says it could not be saved: then nothing of it is saved, now or later (no recovery finds
its text), and its conversation is free at once. Where Redis cannot even be told so, the error says
the text may still be kept once Redis is back; where another host's recovery saved the turn first, the
ending is that recovery's (interrupted), not this writer's."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from redis.exceptions import RedisError

from webapp.base.i18n import t
from webapp.base.models import Message, TurnEvent, new_message_id, now_iso
from webapp.core.titles import make_preview
from webapp.core.turns.run import SavedReply, TurnRun, log
from webapp.core.turns.writer_state import WriterState
from webapp.storage.failures import PASSING
from webapp.storage.spending import utc_day


class TurnSaving(WriterState):
    """Saving a reply: a part of TurnWriter (writer.py)."""

    async def _finish(self, run: TurnRun, status: str, error_key: str,
                      error_params: dict[str, str] | None = None) -> None:
        if run.flush_handle is not None:
            run.flush_handle.cancel()
        self._emit_pending(run)
        content = "".join(run.text)
        reply = None
        if content or status == "complete":
            usage = run.usage
            usage.duration_ms = round((time.perf_counter() - run.started) * 1000)
            usage.ttft_ms = round((run.first_token_at - run.started) * 1000) if run.first_token_at else 0
            reply = Message(id=new_message_id(), role="assistant", content=content, ts=now_iso(), status=status,
                            role_id=run.role.id, role_name=run.role.name_zh if run.role.custom else "",
                            model=run.model or self.provider.model, usage=usage)
        if error_key:
            final = TurnEvent(seq=run.next_seq(), type="error", content=t(error_key, run.lang, **(error_params or {})))
        else:
            final = TurnEvent(seq=run.next_seq(), type="end", message_id=reply.id if reply else "")
        saved = await self._save(run, reply, final)
        if saved is None:
            # never `end` for text that is not in the history: the reader is told, the user
            # message stays, and the conversation is unlocked so Retry works
            final, status = await self._abandon(run, final.seq), "error"
        elif saved is not final:  # another host recovered the turn first: its ending is the true one
            final, status = saved, "interrupted"
        elif reply is not None:
            if reply.usage is not None:
                self.metrics.tokens_used(reply.model, reply.usage.input_tokens, reply.usage.output_tokens)
            # (the search index, the title writer: not for a reply whose conversation was deleted meanwhile)
            for hook in self.saved_hooks if run.kept else ():
                try:
                    hook(run, reply)
                except Exception:
                    log.exception("turn %s: a saved-reply hook failed", run.id)
        run.finished = True
        run.publish(final)
        self.runs.pop(run.id, None)
        self.ended(run.ref)
        duration = time.perf_counter() - run.started
        ttft = (run.first_token_at - run.started) if run.first_token_at else None
        self.metrics.turn_finished(status, duration)
        log.info(
            "turn id=%s session=%s status=%s provider=%s ttft_ms=%s total_ms=%.0f chars=%d events=%d",
            run.id, run.conversation.id, status, self.provider.name,
            f"{ttft * 1000:.0f}" if ttft is not None else "-", duration * 1000, len(content), final.seq,
        )

    async def _save(self, run: TurnRun, reply: Message | None, final: TurnEvent) -> TurnEvent | None:
        """Save the reply; a Redis outage, failover or restart is retried for as long as a turn may run.
        Returns the final event the turn was saved with (`final`, or another host's recovery's), None
        when it was not saved.

        Only failures that pass by themselves are retried (storage/failures.py), and a retry first
        asks whether the previous attempt was applied after all (its reply lost on the way back), so
        a reply is never saved twice. A conversation deleted while its reply was generating (on whichever
        host, whether or not the delete stopped the reply) gets only the final event, not a new history:
        the save checks in Redis that the conversation still exists (storage/turns.SAVE_REPLY).
        """
        deadline = time.monotonic() + self.settings.turn_timeout_seconds
        backoff = 0.1
        preview = make_preview(reply.content) if reply else ""
        unwritten: list[TurnEvent] | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                unwritten = await self.stream_writer.take(run.ref) if unwritten is None else unwritten
                if attempt > 1 or run.lease_lost:
                    info = await self.store.get_turn(run.ref)
                    if info is not None and info.status != "running":  # saved by the first attempt after all,
                        if reply is None or info.message_id == reply.id:  # or by another host's recovery
                            run.kept = reply is not None  # (as far as can be known: its conversation existed)
                            return final
                        return TurnEvent(seq=final.seq, type="error", content=t("error.interrupted", run.lang))
                written = await self.store.finish_turn(
                    run.conversation, turn_id=run.id, reply=reply, preview=preview,
                    final_event=final, unwritten=unwritten,
                    spending_day=utc_day() if reply is not None else "", lane=run.lane,
                )
                run.kept = reply is not None and written
                if reply is not None and written:  # (what finish_turn wrote to the conversation)
                    before = run.conversation
                    run.saved = SavedReply(reply=reply, index=before.message_count, conversation=replace(
                        before, preview=preview, message_count=before.message_count + 1,
                        tokens=before.tokens + (reply.usage.input_tokens + reply.usage.output_tokens
                                                if reply.usage else 0),
                        updated=time.time(), running_turn_id=None), before=run.user_message, forked=run.forked)
                return final
            except PASSING as exc:
                self.metrics.redis_error()
                if time.monotonic() > deadline:
                    log.error("turn %s: reply lost, Redis unreachable for %ss: %s", run.id,
                              self.settings.turn_timeout_seconds, type(exc).__name__)
                    return None
                log.warning("turn %s: saving failed (%s), retrying", run.id, type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except RedisError as exc:  # a command refused: retrying would not help
                self.metrics.redis_error()
                log.error("turn %s: saving failed: %s", run.id, exc)
                return None

    async def _abandon(self, run: TurnRun, seq: int) -> TurnEvent:
        """After a failed save: make sure nothing of the reply is kept and free the conversation, and say
        so; or, where that cannot be made sure of, say what may still happen to the text."""
        final = TurnEvent(seq=seq, type="error", content=t("error.save_failed", run.lang))
        try:
            if await self.store.abandon_turn(run.conversation, run.id, final):
                return final
            return TurnEvent(seq=seq, type="error", content=t("error.interrupted", run.lang))  # another host keeps it
        except RedisError as exc:
            log.error("turn %s: could not release the conversation after a failed save: %s", run.id, exc)
            return TurnEvent(seq=seq, type="error", content=t("error.save_pending", run.lang))
