"""Each language's precompiled templates write the same bytes as plain Jinja (webapp/web/render.py).

render.py compiles every template once per language: `_('key')` and `icon(...)` with constant
arguments become text, and includes of partials that set nothing are inlined (`_Precompute`, run
by `LocalizedEnvironment._parse`, a private Jinja method: webapp/base/library_internals.py). Here
every template under templates/ is rendered in both languages, in a few situations a user meets,
by the app's environment and by a plain Jinja environment with the same loader, options, filters
and globals, and the two outputs must be byte-identical.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import replace
from typing import Any, Callable

import pytest
from jinja2 import Environment, meta, nodes

from webapp.base.i18n import Lang, t
from webapp.base.models import WELCOME, Attachment, Conversation, Message, Usage
from webapp.core.admin import UserPage, UserRow
from webapp.core.conversations import DRAFT_ID, Streaming
from webapp.core.spending import UsageReport, UsageRow
from webapp.core.listing import ConversationList
from webapp.core.shelves import Folder
from webapp.core.roles import BUILTIN_ROLES, custom_role
from webapp.web.render import TEMPLATES_DIR, LocalizedEnvironment, environment, ui_context
from webapp.web.routes.usage import chart_bars

LANGS: tuple[Lang, ...] = ("zh", "en")
TEMPLATE_FILES = sorted(path.relative_to(TEMPLATES_DIR).as_posix() for path in TEMPLATES_DIR.rglob("*") if path.is_file())
MACROS_ONLY = {"partials/icons.html"}  # defines the icon macro, writes nothing itself

OLD = 1_700_000_000.0  # 2023-11-14: the sidebar and token lists show a date, not "5 min ago", so no run differs
TS = "2024-03-05T09:07:00.000+00:00"
CSRF = "csrf-token-1"
CHANNEL = "c0ffee0123456789"
FOLDER_ID = "f0f0f0f0-2222-4a3b-9c8d-777788889999"


def plain_twin(app: LocalizedEnvironment) -> Environment:
    """A stock Jinja environment made with the app environment's options, filters and globals."""
    options = {name: getattr(app, name) for name in inspect.signature(Environment).parameters
               if name not in ("extensions", "enable_async") and hasattr(app, name)}
    plain = Environment(**options, extensions=[type(extension) for extension in app.extensions.values()],
                        enable_async=app.is_async)
    plain.filters.update(app.filters)
    plain.tests.update(app.tests)
    plain.globals.update(app.globals)
    plain.policies.update(app.policies)
    return plain


# what the routes give the templates, in situations a user meets -------------------------------------

def message(index: int, role: str, content: str, **fields: Any) -> Message:
    return Message(id=f"m_{index:016x}", role=role, content=content, ts=TS, **fields)


def conversation_page() -> dict[str, Any]:
    """A conversation scrolled back to its 31st message, with versions, a stopped and a failed reply,
    a user message being edited without JavaScript, the Undo toast of a delete, and its sidebar
    with a running conversation, one being renamed and a further page (accounts mode, demo model)."""
    conv = Conversation(id="5d0f1c2e-8a4b-4f51-9c7e-2b6f3a1d9e40", user_id="u_1",
                        title='Plans for "Friday" <b>&</b> more', preview="Sure: <i>first</i>, book…", role="r_0a1b2c3d4e5f6a7b",
                        message_count=36, created=OLD, updated=OLD, model="gpt-4o-mini", last_turn_id="t_1")
    running = Conversation(id="0b8f9a64-1111-4c2d-8e3f-444455556666", user_id="u_1", title="", preview="",
                           role="assistant", message_count=1, created=OLD, updated=OLD - 86400, running_turn_id="t_9")
    renaming = Conversation(id="7c6d5e4f-2222-4a3b-9c8d-777788889999", user_id="u_1", title="Rust & <lifetimes>",
                            preview="'a outlives 'b", role="programmer", message_count=4, created=OLD, updated=OLD - 900_000)
    pinned = Conversation(id="1a1a1a1a-4444-4c2d-8e3f-444455556666", user_id="u_1", title="Pinned <one>",
                          preview="p", role="assistant", message_count=2, created=OLD, updated=OLD, pinned=OLD * 1000)
    filed = Conversation(id="2b2b2b2b-5555-4c2d-8e3f-444455556666", user_id="u_1", title="Filed & away",
                         preview="f", role="assistant", message_count=2, created=OLD, updated=OLD, folder=FOLDER_ID)
    poet = custom_role("Poet <3", 'Writes & "rhymes"', "You write short poems.", "gpt-4o", 0.7,
                       role_id="r_0a1b2c3d4e5f6a7b", created=OLD)
    reply = ("Here is a plan:\n\n1. **Book** the room\n2. Ask [Ann](https://example.com/ann?x=1&y=2)\n\n"
             "| day | what |\n|:--|--:|\n| Fri | <talk> |\n\n```python\nprint('<hi>' & 1)\n```\n\n```\nplain <code>\n```")
    messages = [
        message(30, "user", "What's <script>alert(1)</script> & why?\nSecond line", attachments=[
            Attachment(id="f_00000000000000a1", name='<img src=x onerror="alert(1)">.png', kind="image",
                       type="image/jpeg", size=123456, width=2048, height=1536),
            Attachment(id="f_00000000000000a2", name="report <1>.pdf", kind="pdf", type="application/pdf",
                       size=99999, chars=50000, kept=20000, pages=40, read=12),
            Attachment(id="f_00000000000000a3", name="notes.md", kind="text", type="text/plain; charset=utf-8",
                       size=20, chars=30000, kept=20000)]),
        message(31, "assistant", reply, role_id="teacher", model="gpt-4o-mini",
                usage=Usage(input_tokens=1200, output_tokens=340, ttft_ms=420, duration_ms=5100)),
        message(32, "user", "Shorter, please"),
        message(33, "assistant", "Roses are <red>", status="interrupted", role_id=poet.id, role_name="Poet <3", model="gpt-4o"),
        message(34, "user", "Once more"),
        message(35, "assistant", "", status="error", role_id="assistant"),
    ]
    return {
        # the conversation pane (pages.pane_values, with the roles and models the selectors offer)
        "conv": conv, "role": BUILTIN_ROLES["assistant"], "roles": [*BUILTIN_ROLES.values(), replace(poet, id="r_0a1b2c3d4e5f6a7e", published=True), poet],
        "models": ["gpt-4o-mini", "gpt-4o", 'o1 "preview"'], "messages": messages, "first_index": 30,
        "streaming": None, "no_reply_text": "", "retry_text": "Once more", "retry_for": messages[-1].id,
        "is_empty": False, "versions": {31: (2, 3), 32: (1, 2), 35: (3, 3)}, "max_chars": 8000, "last_index": 35,
        "max_attachments": 5,
        "demo": True, "draft": "x" * 8001, "form_error": "The message cannot be longer than 8000 characters",
        "active_id": conv.id, "current_path": f"/c/{conv.id}", "role_missing": True, "channel_id": CHANNEL,
        "editing_index": 32, "edit_text": "Shorter <please>", "edit_error": "Nothing changed", "searching": False,
        "partial": False, "main_oob": False, "oob": False,
        # the whole page's sidebar (pages.render_pane) and what the base page reads
        "sessions": [conv, running, renaming], "next_cursor": "1699999999.5:7c6d&x", "query": "", "cursor": None,
        "editing_id": renaming.id, "deleted_id": "0b8f9a64-aaaa-4c2d-8e3f-444455556666", "refresh_seconds": 0,
        "list_oob": False, "csrf_token": CSRF, "auth_mode": "accounts",
        # one message, one sidebar item, a toast, a delete that opens the next conversation
        "m": messages[1], "idx": 31, "c": conv, "text": 'Deleted "Plans" <b>', "kind": "", "undo_url": f"/c/{conv.id}/restore",
        "following": conv,
        # a turn started and done (stream.py: turn_started, turn_done)
        "user_message": messages[4], "was_empty": False, "sidebar": True, "turn_id": "t_1", "reply": messages[5],
        "reply_index": 35, "error_text": "The model <gpt-4o> did not answer", "sidebar_item": conv,
        # sign-in, error, roles, settings and sharing pages
        "action": "/login", "heading": "ui.login", "next": f"/c/{conv.id}", "username": "ann_o'neil",
        "error": "Wrong username or password", "notice": "", "allow_signup": True, "message": "Not found: <nothing>",
        "back": f"/c/{conv.id}", "form": {"name": "Critic <new>", "model": "gpt-4o", "temperature": "1.5"},
        "limits": {"name": 40, "description": 200, "prompt": 4000}, "max_roles": 20,
        "accounts": True, "imported": 3, "new_token": "cht_0123456789abcdef<>", "storage": {"used": 1.5, "quota": 100.0},
        "tokens": [{"id": "tk_1", "name": "CLI <laptop>", "created": OLD}, {"id": "tk_2", "name": "", "created": 0}],
        "share_url": "https://chat.example/s/abc?x=1&y=<2>",
        # usage and admin pages
        "is_admin": True, **usage_values(), **admin_values(),
        # the sidebar's groups: a pinned conversation, a folder holding one, one being moved, a batch's undo
        "listed": ConversationList(items=[conv, running, renaming], grouped=True, pinned=[pinned],
                                   folders=[Folder(id=FOLDER_ID, name="Work <&> \"stuff\"", count=12, items=[filed]),
                                            Folder(id="9e9e9e9e-3333-4a3b-9c8d-777788889999", name="empty")]),
        "folders_all": [Folder(id=FOLDER_ID, name="Work <&> \"stuff\"")], "moving_id": filed.id,
        "batch_ids": [running.id, renaming.id], "undo_ids": [running.id], "undo_action": "unarchive",
        "toast": {"text": "Archived 2 <conversations>", "undo_ids": [running.id], "undo_action": "unarchive"},
    }


def usage_values(empty: bool = False) -> dict[str, Any]:
    rows = [] if empty else [UsageRow("2024-03-05", 'gpt-4o "mini" <x>', 1200, 340, 3, 1, 0.0123),
                             UsageRow("2024-03-04", "demo", 10, 20, 1, 1, None)]
    total = UsageRow("", "", 1210, 360, 4, 2, 0.0123)
    report = UsageReport(rows=rows, days=[("2024-03-04", 30), ("2024-03-05", 1540)], models=rows, total=total,
                         month_tokens=1570, budget=0 if empty else 100_000, resets="2024-04-01", priced=not empty)
    bars, top = chart_bars(report.days)
    return {"report": report, "bars": bars, "top": top, "chart_width": 600, "chart_height": 160}


def admin_values(empty: bool = False) -> dict[str, Any]:
    row = UserRow(uid="a_" + "0" * 24, username="ann_o'neil", created=OLD, last_active=OLD + 60, conversations=3,
                  tokens=1570, budget=100_000, own_budget=None, disabled=False, storage=1_500_000, admin=True)
    other = replace(row, uid="a_" + "1" * 24, username="bob<b>", last_active=0, own_budget=0, budget=0,
                    disabled=True, storage=None, admin=False)
    users = UserPage(rows=[] if empty else [row, other], total=0 if empty else 120, page=2, pages=3,
                     query="" if empty else "b&<")
    audit = [] if empty else [{"who": "ann", "what": "disable", "whom": "bob<b>", "detail": "", "at": OLD},
                              {"who": "ann", "what": "budget", "whom": "bob<b>", "detail": "500", "at": OLD}]
    poet = custom_role("Poet <3", 'Writes & "rhymes"', "You write short poems.", role_id="r_0a1b2c3d4e5f6a7c",
                       created=OLD)
    shared = replace(custom_role("Team <voice>", "", "House style.", role_id="r_0a1b2c3d4e5f6a7d", created=OLD),
                     published=True)
    return {"users": users, "audit": audit, "notice": "", "new_password": "" if empty else "pw-<secret>",
            "password_for": "bob<b>", "published": [] if empty else [shared], "own_roles": [] if empty else [poet]}


def first_visit() -> dict[str, Any]:
    """The draft a first visit shows (stored nowhere, no channel, no models offered), every form as
    HTMX swaps it out of band, and the pages in their other state (sign-up, no tokens, not shared)."""
    page = conversation_page()
    draft = Conversation(id=DRAFT_ID, user_id="u_2", title="", preview="", role="assistant", message_count=1,
                         created=OLD, updated=OLD)
    welcome = Message(id="m_00000000000000aa", role="assistant", content=t("welcome", "zh"), ts=TS, kind=WELCOME)
    for optional in ("last_index", "editing_index", "edit_text", "edit_error"):  # (read with `is defined`)
        del page[optional]
    return {
        **page, "conv": draft, "role": BUILTIN_ROLES["assistant"], "roles": list(BUILTIN_ROLES.values()), "models": [],
        "messages": [welcome], "first_index": 0, "retry_text": "", "retry_for": "", "is_empty": True, "versions": {},
        "demo": False, "draft": "", "form_error": "", "active_id": None, "current_path": "/", "role_missing": False,
        "channel_id": "", "partial": True, "main_oob": True, "oob": True, "sessions": [], "next_cursor": None,
        "editing_id": "", "deleted_id": None, "list_oob": True, "auth_mode": "anonymous",
        "m": welcome, "idx": 0, "c": draft, "text": "Network error", "kind": "error", "undo_url": "", "following": None,
        "user_message": None, "was_empty": True, "sidebar": False, "turn_id": "", "reply": None, "reply_index": 0,
        "error_text": "", "sidebar_item": None,
        "action": "/signup", "heading": "ui.signup", "next": "/", "username": "", "error": "", "notice": "Signed out",
        "allow_signup": False, "form": {}, "accounts": False, "imported": None, "new_token": "", "tokens": [], "storage": None,
        "share_url": "", "is_admin": False, **usage_values(empty=True), **admin_values(empty=True),
        "listed": None, "folders_all": [], "moving_id": "", "batch_ids": [], "undo_ids": [],
        "undo_action": "", "toast": None,
    }


def reply_streaming() -> dict[str, Any]:
    """A reply being written on a page whose reply has a stream of its own (no channel), with the sidebar
    showing search results; its turn's done event on the page's channel brings the sidebar's item."""
    page = conversation_page()
    conv = replace(page["conv"], running_turn_id="t_2", message_count=4)
    messages = [Message(id="m_00000000000000bb", role="assistant", content=t("welcome", "zh"), ts=TS, kind=WELCOME),
                *page["messages"][:3]]
    return {
        **page, "conv": conv, "messages": messages, "first_index": 0, "last_index": 3, "editing_index": -1,
        "streaming": Streaming(turn_id="t_2", after=4, text="Partial <b>reply</b> & more"), "retry_text": "",
        "retry_for": "", "versions": {1: (1, 2)}, "channel_id": "", "searching": True, "query": "friday & <plans>",
        "sessions": [conv], "next_cursor": None, "cursor": None, "refresh_seconds": 2, "oob": True,
        "listed": ConversationList(items=[conv], folder=Folder(id=FOLDER_ID, name="Work")),
        "m": messages[2], "idx": 2, "user_message": messages[3], "was_empty": True, "reply": messages[1],
        "reply_index": 1, "error_text": "", "sidebar": True, "sidebar_item": conv, "text": "Restored", "kind": "",
    }


def no_reply() -> dict[str, Any]:
    """The last message got no reply (the model failed before a word): send it again; its page's
    channel is open and the sidebar is a later page of the list."""
    page = conversation_page()
    messages = page["messages"][:5]
    return {
        **page, "messages": messages, "last_index": 34, "retry_text": "", "retry_for": "",
        "no_reply_text": "Once more, with <feeling>", "error_text": "", "reply": None, "turn_id": "t_3",
        "cursor": "1700000000.0:abc", "sessions": [], "next_cursor": None, "editing_id": "",
        "listed": ConversationList(items=[], archived=True), "moving_id": "",
        "m": messages[4], "idx": 34, "channel_id": CHANNEL, "sidebar_item": page["conv"],
    }


SITUATIONS: tuple[Callable[[], dict[str, Any]], ...] = (conversation_page, first_visit, reply_streaming, no_reply)


def context(situation: Callable[[], dict[str, Any]], lang: Lang) -> dict[str, Any]:
    """What the template gets in `lang` (render.ui_context), with a fixed form request id: the stock
    one is random per call, and the same render twice must write the same bytes."""
    return ui_context(lang, **situation(), request_id=lambda: "req-0123456789abcdef")


def read_names(env: Environment, name: str) -> set[str]:
    """The values a template reads from its context (not those it sets, nor its macros, nor globals),
    less those it asks about with `is defined` first."""
    assert env.loader is not None
    tree = env.parse(env.loader.get_source(env, name)[0])
    asked = {test.node.name for test in tree.find_all(nodes.Test)
             if test.name == "defined" and isinstance(test.node, nodes.Name)}
    macros = {macro.name for macro in tree.find_all(nodes.Macro)}
    return meta.find_undeclared_variables(tree) - asked - macros - set(env.globals)


# the tests ------------------------------------------------------------------------------------------

def test_each_situation_gives_every_template_each_value_it_reads() -> None:
    """A value missing here would render as empty in both environments and hide a difference."""
    plain = plain_twin(environment("zh"))
    missing = {f"{name} ({situation.__name__})": sorted(read_names(plain, name) - context(situation, "zh").keys())
               for name in TEMPLATE_FILES for situation in SITUATIONS}
    assert {where: names for where, names in missing.items() if names} == {}


@pytest.mark.parametrize("lang", LANGS)
def test_every_template_renders_byte_identical_with_and_without_precompilation(lang: Lang) -> None:
    app = environment(lang)
    plain = plain_twin(app)
    rendered: set[str] = set()
    written: set[str] = set()
    differences: list[str] = []
    for name in TEMPLATE_FILES:
        for situation in SITUATIONS:
            values = context(situation, lang)
            precompiled = app.get_template(name).render(values)
            stock = plain.get_template(name).render(values)
            if precompiled != stock:
                diff = difflib.unified_diff(stock.splitlines(), precompiled.splitlines(), "plain Jinja",
                                            "precompiled", lineterm="", n=1)
                differences.append(f"{name} ({situation.__name__}, {lang}):\n" + "\n".join(list(diff)[:20]))
            if precompiled.strip():
                written.add(name)
        rendered.add(name)
    assert differences == [], "\n\n".join(differences)
    assert len(rendered) == len(TEMPLATE_FILES) >= 40
    assert set(TEMPLATE_FILES) - written == MACROS_ONLY  # every other one wrote something in some situation


@pytest.mark.parametrize("lang", LANGS)
def test_the_app_environment_does_precompile(lang: Lang) -> None:
    """Guards the test above: were the override no longer called (a Jinja upgrade renaming `_parse`),
    both environments would be plain Jinja and trivially agree."""
    app = environment(lang)
    plain = plain_twin(app)

    def counts(env: Environment) -> tuple[int, int]:
        assert env.loader is not None
        constant_calls = includes = 0
        for name in TEMPLATE_FILES:
            tree = env.parse(env.loader.get_source(env, name)[0])
            constant_calls += sum(1 for call in tree.find_all(nodes.Call)
                                  if isinstance(call.node, nodes.Name) and call.node.name in ("_", "icon")
                                  and all(isinstance(arg, nodes.Const) for arg in call.args)
                                  and all(isinstance(kwarg.value, nodes.Const) for kwarg in call.kwargs))
            includes += sum(1 for _ in tree.find_all(nodes.Include))
        return constant_calls, includes

    (app_calls, app_includes), (plain_calls, plain_includes) = counts(app), counts(plain)
    assert app_calls == 0 and plain_calls > 100
    assert app_includes < plain_includes
