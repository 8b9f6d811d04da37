"""Saving a reply: the final event and the history in one MULTI (`end` always means saved), or what
is kept of it when the model or Redis fails."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from webapp.base.i18n import t
from webapp.base.models import Message, TurnEvent, new_message_id, now_iso
from webapp.core.titles import make_preview
from webapp.core.turns.run import SavedReply, TurnRun, log
from webapp.core.turns.writer_state import WriterState


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
            reply = Message(id=new_message_id(), role="assistant", content=content, ts=now_iso(), status=status,
                            role_id=run.role.id, role_name=run.role.name_zh if run.role.custom else "",
                            model=run.model or self.provider.model)
        if error_key:
            final = TurnEvent(seq=run.next_seq(), type="error", content=t(error_key, run.lang, **(error_params or {})))
        else:
            final = TurnEvent(seq=run.next_seq(), type="end", message_id=reply.id if reply else "")
        if not await self._save(run, reply, final):
            # never `end` for text that is not in the history: the reader is told, the user
            # message stays, and the conversation is unlocked so Retry works
            final = TurnEvent(seq=final.seq, type="error", content=t("error.save_failed", run.lang))
            status = "error"
            await self._release_after_failed_save(run, final)
        elif reply is not None:
            for hook in self.saved_hooks:
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

    async def _save(self, run: TurnRun, reply: Message | None, final: TurnEvent) -> bool:
        """Save the reply; a Redis outage is retried for as long as a turn may run. False: not saved.

        Only connection failures are retried, and a retry first asks whether the
        previous attempt was applied after all (its reply lost on the way back), so
        a reply is never saved twice. A conversation deleted while its reply was
        generating gets only the final event, not a new history.
        """
        deadline = time.monotonic() + self.settings.turn_timeout_seconds
        backoff = 0.1
        preview = make_preview(reply.content) if reply else ""
        unwritten: list[TurnEvent] | None = None
        # only a cancelled turn can have lost its conversation (deleting one stops its reply)
        exists = not run.cancel_reason or await self._conversation_exists(run)
        attempt = 0
        while True:
            attempt += 1
            try:
                unwritten = await self.stream_writer.take(run.ref) if unwritten is None else unwritten
                if (attempt > 1 or run.lease_lost) and await self.store.turn_saved(run.ref):
                    return True  # saved by the first attempt after all, or by another host's recovery
                await self.store.finish_turn(
                    run.conversation, turn_id=run.id, reply=reply, preview=preview,
                    final_event=final, unwritten=unwritten, conversation_exists=exists,
                )
                if reply is not None and exists:  # (what finish_turn wrote to the conversation)
                    before = run.conversation
                    run.saved = SavedReply(reply=reply, index=before.message_count, conversation=replace(
                        before, preview=preview, message_count=before.message_count + 1,
                        updated=time.time(), running_turn_id=None), before=run.user_message, forked=run.forked)
                return True
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self.metrics.redis_error()
                if time.monotonic() > deadline:
                    log.error("turn %s: reply lost, Redis unreachable for %ss: %s", run.id,
                              self.settings.turn_timeout_seconds, type(exc).__name__)
                    return False
                log.warning("turn %s: saving failed (%s), retrying", run.id, type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except RedisError as exc:  # a command refused: retrying would not help
                self.metrics.redis_error()
                log.error("turn %s: saving failed: %s", run.id, exc)
                return False

    async def _release_after_failed_save(self, run: TurnRun, final: TurnEvent) -> None:
        """Best effort (Redis may be refusing writes): mark the turn failed, unlock the conversation."""
        try:
            await self.store.abandon_turn(run.conversation, run.id, final)
        except RedisError as exc:
            log.error("turn %s: could not release the conversation after a failed save: %s", run.id, exc)

    async def _conversation_exists(self, run: TurnRun) -> bool:
        try:
            return await self.store.get_conversation(run.conversation.user_id, run.conversation.id) is not None
        except RedisError:
            return True
