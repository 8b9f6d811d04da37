"""Every place the app relies on a library's private parts: what, where, why, and a check.

Both overrides replace a library's per-request machinery that benchmarks showed to be
a large share of the app's CPU under load (bench/README.md); each keeps everything
else of the library. They touch names a library may rename in any release, so:

- requirements.in holds each library to the release range listed here (`~=`), and
  requirements.txt, its lock, to one release of it;
- tests/unit/test_library_internals.py runs `problems()` and fails, naming each
  missing part, when an upgrade changes them. Update the override, then the range and the lock.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Callable


@dataclass(frozen=True)
class Override:
    library: str  # the distribution, as in requirements.in
    tested: str  # release series the override is tested with ("8.1" = 8.1.*), pinned with ~=
    where: str  # our code that relies on it
    why: str
    relies_on: tuple[str, ...]  # the private names, for a reader
    check: Callable[[], list[str]]  # what is missing or changed, empty when all is there


def _missing(owner: Any, names: tuple[str, ...], label: str) -> list[str]:
    return [f"{label}.{name}" for name in names if not hasattr(owner, name)]


def _parameters(function: Any, expected: tuple[str, ...], label: str) -> list[str]:
    names = tuple(inspect.signature(function).parameters)
    return [] if names == expected else [f"{label}{names} (expected {expected})"]


def _check_redis() -> list[str]:
    from redis.asyncio import ConnectionPool
    from redis.asyncio.connection import AbstractConnection

    pool = ConnectionPool()
    problems = _missing(pool, ("_available_connections", "_in_use_connections", "max_connections",
                               "connection_class", "make_connection"), "ConnectionPool()")
    problems += _missing(AbstractConnection, ("pack_command", "pack_commands", "can_read", "should_reconnect",
                                              "is_connected", "connect", "disconnect"), "AbstractConnection")
    if not isinstance(getattr(pool, "_available_connections", None), list):
        problems.append("ConnectionPool()._available_connections is no longer a list")
    if not isinstance(getattr(pool, "_in_use_connections", None), set):
        problems.append("ConnectionPool()._in_use_connections is no longer a set")
    problems += _parameters(ConnectionPool.get_connection, ("self", "command_name", "keys", "options"),
                            "ConnectionPool.get_connection")
    problems += _parameters(ConnectionPool.release, ("self", "connection"), "ConnectionPool.release")
    return problems


def _check_sse_starlette() -> list[str]:
    from sse_starlette import EventSourceResponse

    async def nothing() -> Any:
        yield ""

    events = nothing()
    response = EventSourceResponse(events, ping=5)
    problems = _missing(EventSourceResponse, ("_listen_for_exit_signal", "_send_with_timeout", "_stream_response"),
                        "EventSourceResponse")
    problems += _missing(response, ("_ping_interval", "ping_interval", "active", "send_timeout",
                                    "data_sender_callable", "background", "sep"), "EventSourceResponse()")
    problems += _parameters(EventSourceResponse._stream_response, ("self", "send"), "EventSourceResponse._stream_response")
    problems += _parameters(EventSourceResponse._send_with_timeout, ("self", "send", "message"),
                            "EventSourceResponse._send_with_timeout")
    problems += _parameters(EventSourceResponse._listen_for_exit_signal, (), "EventSourceResponse._listen_for_exit_signal")
    if not inspect.iscoroutinefunction(getattr(EventSourceResponse, "_listen_for_exit_signal", None)):
        problems.append("EventSourceResponse._listen_for_exit_signal is no longer a coroutine function")
    return problems


OVERRIDES = (
    Override(
        library="redis",
        tested="8.1",
        where="webapp/redis_client.py: LeanConnectionPool, HiredisPacking",
        why=(
            "redis-py 8's pools take an asyncio.Lock, record metrics, run a retry wrapper and dispatch an "
            "event on every borrow and return, and its asyncio connections pack commands in Python: a fifth "
            "of a round trip's CPU. The pool keeps redis-py's connections and replaces borrowing/returning "
            "by working on its idle list and in-use set; connections pack with hiredis like the sync client."
        ),
        relies_on=("ConnectionPool._available_connections (list)", "ConnectionPool._in_use_connections (set)",
                   "ConnectionPool.get_connection/release/make_connection",
                   "AbstractConnection.pack_command/pack_commands/can_read/should_reconnect"),
        check=_check_redis,
    ),
    Override(
        library="sse-starlette",
        tested="3.7",
        where="webapp/sse.py: TurnEventResponse, OpenStreams",
        why=(
            "The stock response runs every stream in a task group of four tasks and wraps each send in a "
            "cancel scope; with hundreds of streams that was a visible share of the CPU. The stream runs in "
            "the request's task, one watcher per stream, one ticker per worker for pings and shutdown."
        ),
        relies_on=("EventSourceResponse._listen_for_exit_signal", "EventSourceResponse._send_with_timeout",
                   "EventSourceResponse._stream_response", "EventSourceResponse()._ping_interval",
                   "EventSourceResponse().active/send_timeout/data_sender_callable/background/sep"),
        check=_check_sse_starlette,
    ),
)


def installed_outside_tested(override: Override) -> str | None:
    """The installed release when it is not of the tested series, else None."""
    installed = version(override.library)
    return None if (installed + ".").startswith(override.tested + ".") else installed


def problems() -> list[str]:
    """Everything an upgrade broke, one line each, naming the library and the part."""
    found: list[str] = []
    for override in OVERRIDES:
        installed = installed_outside_tested(override)
        if installed is not None:
            found.append(f"{override.library} {installed} is not the tested {override.tested}.* ({override.where})")
        found += [f"{override.library}: {problem} ({override.where})" for problem in override.check()]
    return found
