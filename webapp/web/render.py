"""Server-side HTML: Markdown -> sanitized HTML, and the Jinja environment the pages use.

Assistant replies are Markdown written by a model, so they are untrusted: raw HTML in
them is escaped by the parser (``html=False``) and the result is cleaned again with nh3,
which keeps only the tags Markdown produces plus our code-block chrome. User text is
never rendered as Markdown; templates escape it.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import nh3
from jinja2 import Environment, FileSystemLoader, nodes
from jinja2.visitor import NodeTransformer
from markdown_it import MarkdownIt
from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from webapp.base.i18n import Lang, t
from webapp.base.models import WELCOME
from webapp.core.roles import answered_by
from webapp.core.titles import make_preview

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"

_ALLOWED_TAGS = {
    "a", "blockquote", "br", "button", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "li", "ol", "p", "pre", "s", "span", "strong", "table", "tbody", "td", "th", "thead",
    "tr", "ul",
}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "td": {"style"},
    "th": {"style"},
    "button": {"type", "class", "data-copy", "aria-label", "title"},
    "div": {"class"},
    "span": {"class"},
    "code": {"class"},
    "pre": {"class"},
}
_FORMATTER = HtmlFormatter(nowrap=True)


def _fence(md: MarkdownIt, lang: Lang):  # type: ignore[no-untyped-def]
    """Fenced code: Pygments highlighting in a block with a language label and a copy button."""

    def render(renderer: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        language = token.info.strip().split(maxsplit=1)[0] if token.info.strip() else ""
        try:
            lexer = get_lexer_by_name(language) if language else None
        except ClassNotFound:
            lexer = None
        code = highlight(token.content, lexer, _FORMATTER) if lexer else str(escape(token.content))
        label = escape(language or t("ui.code", lang))
        copy = escape(t("ui.copy", lang))
        return (
            f'<div class="code"><div class="code__bar"><span class="code__lang">{label}</span>'
            f'<button type="button" class="code__copy" data-copy aria-label="{copy}" title="{copy}">{copy}</button>'
            f'</div><pre class="highlight"><code>{code}</code></pre></div>\n'
        )

    return render


def _image_as_link(renderer: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    """Images become links: a model's reply must not make the browser fetch third-party URLs."""
    token = tokens[idx]
    alt = escape(token.content or token.attrGet("src") or "")
    return f'<a href="{escape(token.attrGet("src") or "")}">{alt}</a>'


def _table_open(renderer: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    return '<div class="table-wrap"><table>\n'


def _table_close(renderer: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    return "</table></div>\n"


@lru_cache(maxsize=2)
def _parser(lang: Lang) -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(["table", "strikethrough"])
    md.add_render_rule("fence", _fence(md, lang))
    md.add_render_rule("code_block", _fence(md, lang))
    md.add_render_rule("image", _image_as_link)
    md.add_render_rule("table_open", _table_open)
    md.add_render_rule("table_close", _table_close)
    return md


@lru_cache(maxsize=1024)
def render_markdown(text: str, lang: Lang = "zh") -> Markup:
    """Markdown -> sanitized HTML; links open in a new tab without access to this page."""
    html = _parser(lang).render(text)
    clean = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties={"text-align"},
    )
    return Markup(clean)


def parse_time(value: str | float) -> datetime | None:
    """An ISO timestamp or epoch seconds as an aware datetime; None if unreadable."""
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, timezone.utc)
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError, OSError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def relative_time(value: str | float, lang: Lang, now: datetime | None = None) -> str:
    """'just now', '5 min ago', 'yesterday', or a date: what a sidebar shows."""
    moment = parse_time(value)
    if moment is None:
        return ""
    now = now or datetime.now(timezone.utc)
    seconds = max(0, (now - moment).total_seconds())
    if seconds < 60:
        return t("time.now", lang)
    if seconds < 3600:
        return t("time.minutes", lang, n=int(seconds // 60))
    if seconds < 86400:
        return t("time.hours", lang, n=int(seconds // 3600))
    days = int(seconds // 86400)
    if days == 1:
        return t("time.yesterday", lang)
    if days < 7:
        return t("time.days", lang, n=days)
    return t("time.date", lang, y=moment.year, m=moment.month, d=moment.day)


def iso(value: str | float) -> str:
    moment = parse_time(value)
    return moment.isoformat(timespec="seconds") if moment else ""


def clock(value: str | float) -> str:
    """HH:MM in UTC; app.js rewrites it in the reader's own time zone."""
    moment = parse_time(value)
    return moment.strftime("%H:%M") if moment else ""


class _Precompute(NodeTransformer):
    """What a template can know once it is compiled for one language, done then instead of per render.

    - `_('key')` with constant arguments becomes its text: each is a Jinja context call, and a
      turn's two fragments make ~50 of them, the whole page ~100;
    - `icon('name', size)` becomes its SVG;
    - `{% include %}` of a partial that sets nothing (the CSRF field, the composer's buttons, ...)
      becomes that partial's body: an include builds a new context of every variable per render.
    The output is the same; less of it is computed per request.
    """

    _NOT_INLINED = (nodes.Assign, nodes.AssignBlock, nodes.Macro, nodes.Block, nodes.Extends, nodes.Import,
                    nodes.FromImport, nodes.CallBlock)

    def __init__(self, environment: LocalizedEnvironment) -> None:
        self.environment = environment

    def visit_Call(self, node: nodes.Call) -> nodes.Node:
        node = self.generic_visit(node)
        callee = node.node
        if not isinstance(callee, nodes.Name) or callee.name not in ("_", "icon") or node.dyn_args or node.dyn_kwargs:
            return node
        if not all(isinstance(arg, nodes.Const) for arg in node.args):
            return node
        if not all(isinstance(kwarg.value, nodes.Const) for kwarg in node.kwargs):
            return node
        args = [arg.value for arg in node.args]
        kwargs = {kwarg.key: kwarg.value.value for kwarg in node.kwargs}
        if callee.name == "_":
            if len(args) != 1:
                return node
            return nodes.Const(t(args[0], self.environment.lang, **kwargs), lineno=node.lineno)
        return nodes.MarkSafe(nodes.Const(str(icon(*args, **kwargs))), lineno=node.lineno)

    def visit_Include(self, node: nodes.Include) -> nodes.Node | list[nodes.Node]:
        if not (isinstance(node.template, nodes.Const) and isinstance(node.template.value, str)
                and node.with_context and not node.ignore_missing):
            return node
        environment = self.environment
        assert environment.loader is not None
        source, filename, _ = environment.loader.get_source(environment, node.template.value)
        included = environment._parse(source, node.template.value, filename)
        if any(True for _ in included.find_all(self._NOT_INLINED)):
            return node
        return list(included.body)


class LocalizedEnvironment(Environment):
    """The templates, compiled for one language (see _Precompute)."""

    def __init__(self, lang: Lang, **options: Any) -> None:
        super().__init__(**options)
        self.lang = lang

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Precompute(self).visit(super()._parse(source, name, filename))


def _create_environment(lang: Lang) -> LocalizedEnvironment:
    env = LocalizedEnvironment(
        lang, loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True,
        # templates change only with a release: no stat() of every template and include per render
        auto_reload=False, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["markdown"] = render_markdown
    env.filters["reltime"] = relative_time
    env.filters["iso"] = iso
    env.filters["clock"] = clock
    env.filters["answered_by"] = answered_by
    env.globals["icon"] = icon
    return env


@lru_cache(maxsize=256)
def icon(name: str, size: int = 18) -> Markup:
    """An icon of partials/icons.html, rendered once per name and size (templates get it compiled in)."""
    return Markup(_ICONS.get_template("partials/icons.html").module.icon(name, size))  # type: ignore[attr-defined]


_ICONS = _create_environment("zh")  # (icons have no words)
ENVIRONMENTS: dict[str, LocalizedEnvironment] = {"zh": _create_environment("zh"), "en": _create_environment("en")}


def compile_all() -> int:
    """Compile every template in every language: run once in a worker thread at start, so the first
    visitors' requests do not each compile what they render (tens of ms of CPU on the event loop)."""
    names = ENVIRONMENTS["zh"].list_templates(extensions=["html"])
    for env in (*ENVIRONMENTS.values(), _ICONS):
        for name in names:
            env.get_template(name)
    return len(names)


def environment(lang: Lang) -> LocalizedEnvironment:
    return ENVIRONMENTS.get(lang) or ENVIRONMENTS["zh"]


def _asset_version() -> str:
    """Changes whenever a stylesheet or script changes, so browsers never run a stale app.js."""
    static = TEMPLATES_DIR.parent / "static"
    stamp = max((p.stat().st_mtime_ns for p in static.rglob("*") if p.is_file()), default=0)
    return format(stamp // 1_000_000 % 0xFFFFFFFF, "x")


ASSET_VERSION = _asset_version()


def new_request_id() -> str:
    """A form's request id: posting the same form twice (a double click, a resent form) starts one turn."""
    return secrets.token_hex(8)


def ui_context(lang: Lang, **values: Any) -> dict[str, Any]:
    """What every template gets: the language, its translator, and helpers for message text."""

    def translate(key: str, **params: object) -> str:
        return t(key, lang, **params)

    def display_text(message: Any) -> str:
        # the stored welcome is the seed's Chinese text; every reader gets it in their language
        return t("welcome", lang) if message.kind == WELCOME else message.content

    def display_preview(conversation: Any) -> str:
        # a conversation with nothing but its welcome previews the welcome, in the reader's language
        return make_preview(t("welcome", lang)) if conversation.message_count <= 1 else conversation.preview

    return {
        "lang": lang, "_": translate, "display_text": display_text, "display_preview": display_preview,
        "asset_version": ASSET_VERSION, "request_id": new_request_id, **values,
    }


def render_template(name: str, lang: Lang, **values: Any) -> str:
    """A page or partial in `lang`, with what every template gets (ui_context)."""
    return environment(lang).get_template(name).render(ui_context(lang, **values))


render_fragment = render_template  # a partial rendered outside a request (e.g. for a server-sent event)
