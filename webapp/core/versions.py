"""Versions of a conversation's messages: regenerate, edit and resend, and flipping between them.

The history a turn reads (the Redis list) is always the *active branch*, so a turn's cost
does not depend on how many versions exist. Where a message has versions (a "fork" at its
list index), the other versions are kept aside, each as the whole tail of the branch from
that index: its messages, and the forks and version counters inside it. Regenerating the
last reply forks at the reply; editing a user message forks at that message. Flipping to
another version swaps the active tail with the chosen one, so the model then sees it.

These are pure functions over plain data; store.py reads and writes it atomically, the
turn writer and conversations service call them under the conversation's lock.
"""

from __future__ import annotations

import orjson

from webapp.base.models import BranchChange, BranchState

Tail = dict  # {"messages": [message objects], "forks": {index: fork object}, "versions": {index: "a/c"}}

MAX_VERSIONS = 50  # versions of one message
MAX_FORK_BYTES = 4_000_000  # one message's versions, all their tails included


class TooManyVersions(Exception):
    """A fork would exceed MAX_VERSIONS or MAX_FORK_BYTES."""


def version_label(active: int, count: int) -> str:
    return f"{active + 1}/{count}"


def parse_label(label: str) -> tuple[int, int]:
    """'2/3' -> (2, 3): the shown version (1-based) and how many there are."""
    shown, _, count = label.partition("/")
    return int(shown), int(count)


def _stash(state: BranchState) -> Tail:
    """The active tail as plain objects: stored once as JSON, never JSON inside a JSON string
    (whose escaping would double with every fork nested in another)."""
    after = state.index
    return {
        "messages": [orjson.loads(raw) for raw in state.messages],
        "forks": {str(j): orjson.loads(f) for j, f in state.forks.items() if j > after},
        "versions": {str(j): v for j, v in state.versions.items() if j > after},
    }


def _raw(item: object) -> str:
    """A stored message or fork back as the JSON string Redis keeps (older data kept strings)."""
    return item if isinstance(item, str) else orjson.dumps(item).decode()


def _dump_fork(active: int, tails: list[Tail | None]) -> str:
    if len(tails) > MAX_VERSIONS:
        raise TooManyVersions()
    raw = orjson.dumps({"active": active, "tails": tails}).decode()
    if len(raw) > MAX_FORK_BYTES:
        raise TooManyVersions()
    return raw


def fork(state: BranchState) -> BranchChange:
    """Keep the active tail from `state.index` as a version and start a new, empty one there.

    The caller then appends the new version's messages (the edited message, the new reply).
    """
    existing = orjson.loads(state.forks[state.index]) if state.index in state.forks else None
    stash = _stash(state)
    if existing is None:
        tails: list[Tail | None] = [stash, None]
    else:
        tails = existing["tails"]
        tails[existing["active"]] = stash
        tails.append(None)
    active = len(tails) - 1
    later = [j for j in set(state.forks) | set(state.versions) if j > state.index]
    return BranchChange(
        index=state.index, messages=[],
        forks_set={state.index: _dump_fork(active, tails)},
        forks_del=sorted(j for j in later if j in state.forks),
        versions_set={state.index: version_label(active, len(tails))},
        versions_del=sorted(j for j in later if j in state.versions),
    )


def switch(state: BranchState, to: int) -> BranchChange | None:
    """Make version `to` (0-based) of the fork at `state.index` the active one; None if it is already."""
    existing = orjson.loads(state.forks[state.index])
    tails: list[Tail | None] = existing["tails"]
    if not 0 <= to < len(tails):
        raise IndexError(to)
    if to == existing["active"]:
        return None
    tails[existing["active"]] = _stash(state)
    chosen = tails[to]
    tails[to] = None
    assert chosen is not None
    later = [j for j in set(state.forks) | set(state.versions) if j > state.index]
    forks_set = {int(j): _raw(f) for j, f in chosen["forks"].items()}
    forks_set[state.index] = _dump_fork(to, tails)
    versions_set = {int(j): v for j, v in chosen["versions"].items()}
    versions_set[state.index] = version_label(to, len(tails))
    return BranchChange(
        index=state.index, messages=[_raw(m) for m in chosen["messages"]],
        forks_set=forks_set, forks_del=sorted(j for j in later if j in state.forks and j not in forks_set),
        versions_set=versions_set,
        versions_del=sorted(j for j in later if j in state.versions and j not in versions_set),
    )
