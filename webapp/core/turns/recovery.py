"""Turns whose writer is gone: saved as `interrupted` by whichever host notices first.

A writer holds its conversation's lock as a lease of a few seconds and renews it while
the reply generates (leases.py). A host killed mid-reply (SIGKILL, OOM, a lost dyno)
stops renewing; once the lease lapses, any host that looks at the turn saves the text
its event stream holds as an interrupted reply, writes the final `error` event (which
ends every reader's stream, on every host) and leaves the conversation free. Who
looks: the lease keeper's sweep on every host, a reader following the turn, and a new
turn on the same conversation (which must not stack its message on an unsaved reply).
At most the text of one stream flush interval, not yet written to Redis, is lost.
"""

from __future__ import annotations

import logging

from webapp.base.i18n import t
from webapp.base.models import TERMINAL, Conversation, Message, TurnEvent, TurnInfo, Usage, new_message_id, now_iso
from webapp.core.titles import make_preview
from webapp.llm.tokens import estimate_tokens
from webapp.storage.keys import TurnRef
from webapp.storage.spending import utc_day
from webapp.storage.store import Store

log = logging.getLogger("webapp.turns")


class OrphanRecovery:
    """Saves a turn whose lease lapsed; one host does it, the others read its result."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def recover(self, ref: TurnRef, *, lock_taken: bool = False) -> TurnInfo | None:
        """The turn's state after saving it if it was orphaned; a live turn is left alone.

        `lock_taken`: the caller holds the conversation's lock now (a new turn starting),
        so the orphan is known to have lost its lease.
        """
        info = await self.store.get_turn(ref)
        if info is None or info.status != "running":
            return info
        if not lock_taken and await self.store.lock_holder(ref.user_id, info.session_id) == ref.turn_id:
            return info  # its writer still renews the lease
        if not await self.store.claim_recovery(ref, info.session_id):
            return await self.store.get_turn(ref)  # another host is saving it, or its writer is back
        events = await self.store.read_events(ref, 0)
        if events and events[-1].type in TERMINAL:  # saved meanwhile, after all
            return await self.store.get_turn(ref)
        # (its conversation deleted meanwhile: only the turn's own state and stream are written, SAVE_REPLY)
        conversation = Conversation.from_hash(info.session_id, {"user_id": ref.user_id})
        content = "".join(e.content for e in events if e.type == "chunk")
        reply = None
        if content:
            # what it cost is known only in part: its text, estimated (the prompt and the model went with the host)
            reply = Message(id=new_message_id(), role="assistant", content=content, ts=now_iso(), status="interrupted",
                            usage=Usage(output_tokens=estimate_tokens(content), estimated=True))
        final = TurnEvent(seq=(events[-1].seq if events else 0) + 1, type="error", content=t("error.interrupted"))
        # the lock is not the orphan's any more (that is how it was found): leave it alone
        await self.store.finish_turn(
            conversation, turn_id=ref.turn_id, reply=reply, preview=make_preview(content), final_event=final,
            release_lock=False, spending_day=utc_day(), lane=True,
        )
        log.warning("turn %s: its writer is gone; saved %d chars as interrupted", ref.turn_id, len(content))
        return await self.store.get_turn(ref)
