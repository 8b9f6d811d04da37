"""Every place the app relies on a library's private parts: what, where, why, and a check.

Each override replaces or skips a library's per-request work that benchmarks showed to be
a visible share of the app's CPU under load (docs/performance-history.md); each keeps
everything else of the library. They touch names a library may rename in any release, so:

- requirements.in holds each library to the release range listed here (`~=`), and
  requirements.txt, its lock, to one release of it;
- tests/unit/test_library_internals.py runs `problems()` and fails, naming each
  missing part, when an upgrade changes them. Update the override, then the range and the lock.

The standard library (`PYTHON`) has no range in requirements.in: the Dockerfile's image holds
the Python that ships to the tested series, and the README promises "3.11 or newer", so a
newer interpreter is not refused; its check must therefore test the behaviour, not just names.
"""

from __future__ import annotations

import inspect
import logging
import platform
import sys
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Callable

PYTHON = "python"  # the `library` of an override of the standard library


@dataclass(frozen=True)
class Override:
    library: str  # the distribution, as in requirements.in; PYTHON for the standard library
    tested: str  # release series the override is tested with ("8.1" = 8.1.*), pinned with ~= (PYTHON: by the Dockerfile)
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
    return problems + _check_redis_replies()


def _check_redis_replies() -> list[str]:
    """LeanPipeline and LeanRedis: replies read off hiredis's reader, redis-py's execute steps kept."""
    import redis._parsers.hiredis as hiredis_parser
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.asyncio.connection import AbstractConnection

    problems = _missing(hiredis_parser, ("NOT_ENOUGH_DATA", "_AsyncHiredisParser"), "redis._parsers.hiredis")
    parser = getattr(hiredis_parser, "_AsyncHiredisParser", None)
    if parser is not None:
        problems += _missing(parser, ("read_from_socket", "read_response", "on_connect"), "_AsyncHiredisParser")
        for attribute in ("self._reader", "self._connected"):
            if attribute not in inspect.getsource(parser):
                problems.append(f"_AsyncHiredisParser no longer sets {attribute}")
    client = Redis()  # (no connection is made)
    pipeline = client.pipeline()
    problems += _missing(Pipeline, ("_execute_transaction", "_execute_pipeline", "_disconnect_raise_on_watching",
                                    "raise_first_error", "annotate_exception"), "Pipeline")
    problems += _missing(pipeline, ("command_stack", "scripts", "watching", "explicit_transaction", "is_transaction",
                                    "connection", "connection_pool", "response_callbacks"), "Pipeline()")
    problems += _missing(Redis, ("_send_command_parse_response", "_close_connection"), "Redis")
    problems += _missing(client, ("single_connection_client", "connection_pool"), "Redis()")
    connection = client.connection_pool.make_connection()
    problems += _missing(AbstractConnection, ("_host_error", "send_packed_command"), "AbstractConnection")
    problems += _missing(connection, ("_parser", "retry", "socket_timeout", "health_check_interval",
                                      "next_health_check", "protocol"), "Connection()")
    for method, expected in (("_execute_transaction", ("self", "connection", "commands", "raise_on_error")),
                             ("_execute_pipeline", ("self", "connection", "commands", "raise_on_error"))):
        problems += _parameters(getattr(Pipeline, method, None) or (lambda: None), expected, f"Pipeline.{method}")
    return problems


def _check_process_pool() -> list[str]:
    """core/decoding.py: a hung worker is killed through the pool's own table of its processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        pool.submit(int).result(timeout=30)
        processes = getattr(pool, "_processes", None)
        if not isinstance(processes, dict) or not all(hasattr(p, "kill") for p in processes.values()):
            return ["ProcessPoolExecutor._processes is no longer a dict of processes"]
        return []
    finally:
        pool.shutdown()


def _check_sse_starlette() -> list[str]:
    from sse_starlette import EventSourceResponse

    async def nothing() -> Any:
        yield ""

    events = nothing()
    response = EventSourceResponse(events, ping=5)
    problems = _missing(EventSourceResponse, ("_listen_for_exit_signal", "_send_with_timeout", "_stream_response"),
                        "EventSourceResponse")
    problems += _missing(response, ("_ping_interval", "ping_interval", "active", "send_timeout",
                                    "data_sender_callable", "background", "sep", "_response_started"),
                         "EventSourceResponse()")
    problems += _parameters(EventSourceResponse._stream_response, ("self", "send"), "EventSourceResponse._stream_response")
    problems += _parameters(EventSourceResponse._send_with_timeout, ("self", "send", "message"),
                            "EventSourceResponse._send_with_timeout")
    problems += _parameters(EventSourceResponse._listen_for_exit_signal, (), "EventSourceResponse._listen_for_exit_signal")
    if not inspect.iscoroutinefunction(getattr(EventSourceResponse, "_listen_for_exit_signal", None)):
        problems.append("EventSourceResponse._listen_for_exit_signal is no longer a coroutine function")
    return problems


def _check_uvicorn() -> list[str]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    problems = _missing(HttpToolsProtocol, ("connection_made", "connection_lost", "on_message_begin",
                                            "on_headers_complete", "on_body", "on_message_complete"),
                        "HttpToolsProtocol")
    source = inspect.getsource(HttpToolsProtocol.__init__) + inspect.getsource(HttpToolsProtocol.on_message_begin)
    for attribute in ("self.loop", "self.transport", "self.cycle", "self.headers"):
        if attribute not in source:
            problems.append(f"HttpToolsProtocol no longer sets {attribute}")
    cycle_source = inspect.getsource(RequestResponseCycle.__init__)
    for attribute in ("self.response_started", "self.response_complete"):
        if attribute not in cycle_source:
            problems.append(f"RequestResponseCycle no longer sets {attribute}")
    for method in ("on_message_begin", "on_headers_complete", "on_body", "on_message_complete"):
        problems += _parameters(getattr(HttpToolsProtocol, method), ("self",) + (("body",) if method == "on_body" else ()),
                                f"HttpToolsProtocol.{method}")
    return problems


# the nodes _Precompute reads, makes, or (the statements that stop an include being inlined) finds
_JINJA_NODE_FIELDS: dict[str, tuple[str, ...]] = {
    "Template": ("body",), "Call": ("node", "args", "kwargs", "dyn_args", "dyn_kwargs"), "Name": ("name",),
    "Const": ("value",), "Keyword": ("key", "value"), "MarkSafe": ("expr",),
    "Include": ("template", "with_context", "ignore_missing"),
    "Assign": (), "AssignBlock": (), "Macro": (), "Block": (), "Extends": (), "Import": (), "FromImport": (),
    "CallBlock": (),
}


def _check_jinja2() -> list[str]:
    from jinja2 import DictLoader, Environment, nodes
    from jinja2.visitor import NodeTransformer

    problems = _missing(Environment, ("_parse",), "Environment")
    if not problems:
        problems += _parameters(Environment._parse, ("self", "source", "name", "filename"), "Environment._parse")
    if problems:
        return problems
    parsed: list[str | None] = []

    class Probe(Environment):
        def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
            parsed.append(name)
            return super()._parse(source, name, filename)

    # the override is worth nothing unless loading a template (an included one too) goes through it
    Probe(loader=DictLoader({"page": "{% include 'part' %}", "part": "-"})).get_template("page").render()
    if parsed != ["page", "part"]:
        problems.append(f"get_template() no longer parses with Environment._parse (it parsed {parsed})")
    for name, fields in _JINJA_NODE_FIELDS.items():
        node_class = getattr(nodes, name, None)
        if node_class is None:
            problems.append(f"nodes.{name}")
        else:
            problems += [f"nodes.{name}.{field}" for field in fields if field not in node_class.fields]
    problems += _missing(nodes.Node, ("find_all",), "nodes.Node")
    if "lineno" not in nodes.Node.attributes:
        problems.append("nodes.Node.lineno")
    problems += _missing(NodeTransformer, ("visit", "generic_visit"), "NodeTransformer")

    class Splice(NodeTransformer):
        def visit_Include(self, node: nodes.Include) -> list[nodes.Node]:
            return [nodes.Output([nodes.TemplateData("a")]), nodes.Output([nodes.TemplateData("b")])]

    if len(Splice().visit(Environment().parse("{% include 'part' %}")).body) != 2:
        problems.append("NodeTransformer no longer splices a list a visit_ method returns into the body")
    return problems


def _check_logging() -> list[str]:
    problems = _missing(logging, ("_srcfile",), "logging")
    if problems:
        return problems
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.Logger("library_internals.check")  # (made directly: not left in logging's tree)
    logger.addHandler(Keep())
    saved = logging._srcfile  # type: ignore[attr-defined]
    logging._srcfile = None  # type: ignore[attr-defined]
    try:
        logger.warning("-")
    finally:
        logging._srcfile = saved  # type: ignore[attr-defined]
    if not records or records[0].lineno != 0:
        problems.append("logging._srcfile = None no longer skips finding the caller (a record still has its line)")
    return problems


OVERRIDES = (
    Override(
        library="redis",
        tested="8.1",
        where="webapp/storage/redis_client.py: LeanConnectionPool, HiredisPacking, LeanPipeline, LeanRedis",
        why=(
            "redis-py 8's pools take an asyncio.Lock, record metrics, run a retry wrapper and dispatch an "
            "event on every borrow and return, and its asyncio connections pack commands in Python: a fifth "
            "of a round trip's CPU. The pool keeps redis-py's connections and replaces borrowing/returning "
            "by working on its idle list and in-use set; connections pack with hiredis like the sync client. "
            "A pipeline's replies are taken off hiredis's reader in one loop (redis-py reads each through four "
            "coroutines), and its execute and a command skip the observability awaits and the task per release."
        ),
        relies_on=("ConnectionPool._available_connections (list)", "ConnectionPool._in_use_connections (set)",
                   "ConnectionPool.get_connection/release/make_connection",
                   "AbstractConnection.pack_command/pack_commands/can_read/should_reconnect",
                   "_AsyncHiredisParser._reader/_connected/read_from_socket, NOT_ENOUGH_DATA",
                   "Pipeline._execute_transaction/_execute_pipeline/_disconnect_raise_on_watching",
                   "Redis._send_command_parse_response/_close_connection, AbstractConnection._parser/_host_error"),
        check=_check_redis,
    ),
    Override(
        library="sse-starlette",
        tested="3.7",
        where="webapp/web/sse.py: TurnEventResponse, OpenStreams",
        why=(
            "The stock response runs every stream in a task group of four tasks and wraps each send in a "
            "cancel scope; with hundreds of streams that was a visible share of the CPU. The stream runs in "
            "the request's task, one watcher per stream, one ticker per worker for pings and shutdown."
        ),
        relies_on=("EventSourceResponse._listen_for_exit_signal", "EventSourceResponse._send_with_timeout",
                   "EventSourceResponse._stream_response", "EventSourceResponse()._ping_interval",
                   "EventSourceResponse().active/send_timeout/data_sender_callable/background/sep",
                   "EventSourceResponse()._response_started (a revoked stream's last event needs the start sent)"),
        check=_check_sse_starlette,
    ),
    Override(
        library="uvicorn",
        tested="0.55",
        where="webapp/web/slow_clients.py: GuardedHttpToolsProtocol",
        why=(
            "uvicorn has no deadline for a request that is arriving (only for an idle connection), and no ASGI "
            "middleware sees a request before its headers are complete: a request whose head or body stalls "
            "held its connection for good. The guard is uvicorn's httptools protocol with a timer armed by "
            "its parser callbacks."
        ),
        relies_on=("uvicorn.protocols.http.httptools_impl.HttpToolsProtocol: connection_made/lost, on_message_begin, "
                   "on_headers_complete, on_body, on_message_complete; self.loop/transport/cycle/headers",
                   "RequestResponseCycle().response_started/response_complete"),
        check=_check_uvicorn,
    ),
    Override(
        library="jinja2",
        tested="3.1",
        where="webapp/web/render.py: LocalizedEnvironment._parse, _Precompute",
        why=(
            "Every `_('key')` and `icon(...)` is a context call per render (a turn's two fragments make ~50 "
            "`_()` calls) and every include builds a new context of every variable. Each language's "
            "environment turns them into constants and inlined partials when it parses a template: "
            "`Environment._parse`, which `get_template` (and so every include) goes through, is the one "
            "place between parsing and compiling. tests/unit/test_render_precompile.py checks the bytes out "
            "are the same with and without it."
        ),
        relies_on=("Environment._parse(source, name, filename), called by get_template for every template",
                   "nodes.Call.node/args/kwargs/dyn_args/dyn_kwargs, Name.name, Const.value, Keyword.key/value",
                   "nodes.MarkSafe(expr), nodes.Include.template/with_context/ignore_missing, Template.body",
                   "nodes.Assign/AssignBlock/Macro/Block/Extends/Import/FromImport/CallBlock, Node.find_all",
                   "NodeTransformer splicing a list a visit_ method returns into the parent's body"),
        check=_check_jinja2,
    ),
    Override(
        library=PYTHON,
        tested="3.11",
        where="webapp/main.py: logging._srcfile = None",
        why=(
            "Each record's caller (file, line, function) is found by walking the stack, for every access-log "
            "line of every request, and no format of ours shows it. The logging HOWTO's \"Optimization\" "
            "section turns it off by setting this private name to None."
        ),
        relies_on=("logging._srcfile: when None, Logger._log does not call findCaller",),
        check=_check_logging,
    ),
    Override(
        library=PYTHON,
        tested="3.11",
        where="webapp/core/decoding.py: Decoder._run (a hung decoder)",
        why=(
            "A worker process still decoding one file after DECODE_SECONDS (a hostile PDF or image) is killed; "
            "ProcessPoolExecutor has no public way to stop a busy worker before Python 3.14 (terminate_workers)."
        ),
        relies_on=("ProcessPoolExecutor._processes: {pid: Process}",),
        check=_check_process_pool,
    ),
)


def installed_outside_tested(override: Override) -> str | None:
    """The installed release when it is not of the tested series, else None. (The standard library:
    the running Python when it is older than the tested series; a newer one is left to the check.)"""
    if override.library == PYTHON:
        tested = tuple(int(part) for part in override.tested.split("."))
        return None if sys.version_info[:len(tested)] >= tested else platform.python_version()
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
