"""The writer of a turn: start it, generate the reply, save it, cancel it.

Generation runs as a server-side task that does not depend on any HTTP connection.
Its events are kept in memory for readers on this worker (reader.py follows them
with no Redis round trip per reader per chunk) and written to a per-turn Redis Stream
in pipelined batches, so a reader on another worker, or one resuming with
Last-Event-ID after a reload, can follow the same reply. When the turn ends the whole
reply is saved to the history in the same MULTI that writes the final event, so `end`
always means "saved".

The rules of starting a turn live here, not in the store: ownership, one reply at a
time per conversation, the rate limit, the title a first message gives, the preview.
"""

from __future__ import annotations

from webapp.core.turns.generating import TurnGenerating
from webapp.core.turns.run import RepeatedRequest, SavedReply, Started, TurnRun
from webapp.core.turns.saving import TurnSaving
from webapp.core.turns.starting import TurnStarting


__all__ = ["TurnWriter", "Started", "SavedReply", "RepeatedRequest", "TurnRun"]  # what a start and a save give back


class TurnWriter(TurnStarting, TurnGenerating, TurnSaving):
    """Starts turns, runs their generation tasks, saves their replies and cancels them: starting.py,
    generating.py and saving.py, on what writer_state.py holds."""
