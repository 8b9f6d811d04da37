"""The fork bookkeeping of versions (webapp/versions.py), simulated on a plain list in-process."""

from __future__ import annotations

import orjson
import pytest

from webapp.base.models import BranchChange, BranchState
from webapp.core.versions import MAX_VERSIONS, TooManyVersions, fork, switch


class Conversation:
    """A conversation as Redis holds it: the active list, fork JSON and labels by index."""

    def __init__(self, texts: list[str]) -> None:
        self.messages = [orjson.dumps({"id": f"m{n}", "content": text}).decode() for n, text in enumerate(texts)]
        self.forks: dict[int, str] = {}
        self.versions: dict[int, str] = {}

    def state(self, index: int) -> BranchState:
        return BranchState(index=index, messages=self.messages[index:],
                           forks={j: f for j, f in self.forks.items() if j >= index},
                           versions={j: v for j, v in self.versions.items() if j >= index})

    def apply(self, change: BranchChange | None) -> None:
        if change is None:
            return
        self.messages = self.messages[: change.index] + change.messages
        for j in change.forks_del:
            self.forks.pop(j, None)
        self.forks.update(change.forks_set)
        for j in change.versions_del:
            self.versions.pop(j, None)
        self.versions.update(change.versions_set)

    def texts(self) -> list[str]:
        return [orjson.loads(raw)["content"] for raw in self.messages]

    def append(self, text: str) -> None:
        self.messages.append(orjson.dumps({"id": f"m{len(self.messages)}", "content": text}).decode())


def test_regenerating_twice_keeps_three_versions_and_flipping_restores_each() -> None:
    chat = Conversation(["welcome", "q", "a1"])
    chat.apply(fork(chat.state(2)))
    chat.append("a2")
    chat.apply(fork(chat.state(2)))
    chat.append("a3")
    assert chat.versions[2] == "3/3"
    chat.apply(switch(chat.state(2), 0))
    assert chat.texts() == ["welcome", "q", "a1"] and chat.versions[2] == "1/3"
    chat.apply(switch(chat.state(2), 1))
    assert chat.texts()[-1] == "a2" and chat.versions[2] == "2/3"
    assert switch(chat.state(2), 1) is None  # already shown


def test_editing_an_early_message_keeps_the_old_branch_with_its_own_versions() -> None:
    chat = Conversation(["welcome", "q1", "a1", "q2", "a2"])
    chat.apply(fork(chat.state(4)))  # regenerate a2
    chat.append("a2 again")
    chat.apply(fork(chat.state(1)))  # edit q1: the whole tail, its fork at 4 inside, goes aside
    chat.append("q1 edited")
    chat.append("a1 new")
    assert chat.versions == {1: "2/2"} and chat.texts() == ["welcome", "q1 edited", "a1 new"]
    chat.apply(switch(chat.state(1), 0))
    assert chat.texts() == ["welcome", "q1", "a1", "q2", "a2 again"]
    assert chat.versions == {1: "1/2", 4: "2/2"}  # the nested fork came back with its branch
    chat.apply(switch(chat.state(4), 0))
    assert chat.texts()[-1] == "a2"


def test_nested_forks_do_not_grow_by_escaping() -> None:
    # each edit stashes a tail holding the previous fork: stored as objects, not JSON in a string,
    # the size grows with the messages kept, never exponentially with the depth
    chat = Conversation(["welcome"] + [f"message {n} \\ \"quoted\"" for n in range(1, 41)])
    for index in range(39, 0, -2):
        chat.apply(fork(chat.state(index)))
        chat.append(f"edit {index}")
    assert max(len(f) for f in chat.forks.values()) < 20_000
    assert "\\\\\\\\" not in "".join(chat.forks.values())


def test_a_message_has_at_most_max_versions() -> None:
    chat = Conversation(["welcome", "q", "a"])
    for n in range(MAX_VERSIONS - 1):
        chat.apply(fork(chat.state(2)))
        chat.append(f"a{n}")
    with pytest.raises(TooManyVersions):
        fork(chat.state(2))


def test_switching_to_a_version_that_does_not_exist_is_refused() -> None:
    chat = Conversation(["welcome", "q", "a"])
    chat.apply(fork(chat.state(2)))
    chat.append("b")
    with pytest.raises(IndexError):
        switch(chat.state(2), 5)
