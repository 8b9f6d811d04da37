"""Hostile text in every place the web UI shows text, in a real headless Chromium: nothing runs.

Each vector, if the browser ever ran it, does something observable: it sets `window.__xss`
(a trap installed before any page script logs every assignment), opens a dialog
(`alert`), or makes the browser fetch a path containing "pwned" (an image, a stylesheet, an
htmx attribute, a `<base>` or a meta refresh would). Every vector carries its own number in
those calls, so a failure names the vector and the place it ran in. Besides "nothing ran", the
suite checks that the text did reach the page, shown as text (its `textContent`, or what a
reader sees of Markdown), and that no element or attribute came from a vector (no `on*`
attribute, no `javascript:` URL, no `<script>`, `<iframe>`, `<base>`... in the page).

The places: a user message (sent with the composer, and as the page renders it), an assistant
reply (streamed chunks, then Markdown; the fake upstream's `[[echo]]` makes the model say the
vector), conversation titles (renamed with `POST /c/{id}/title`: sidebar, header, inline rename
field, labels), sidebar previews, search (the search box, `/sidebar?q=` and a page's `?q=`),
what errors show (the too-long message's form that keeps the typed text, the delete confirm
dialog, the Deleted/Restored toasts) and the page's <title> (whole page and HTMX navigation).
Role names are not a place: only the built-in roles exist, no user text reaches them.

The Content-Security-Policy would block most vectors even if text were not escaped; a
violation it reports is recorded as evidence, not a failure (the `open_page` fixture fails on
any, so this file makes its own page). Vectors go in batches, each a new anonymous user whose
conversations are made over HTTP (one per vector, plus one per group of vectors that fits in a
title), then looked at in few page loads: one page, one browser context, for the whole run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.conftest import AppServer
from tests.ui_fixtures import send, wait_reply_done
from webapp.core.titles import TITLE_MAX_CHARS, clean_title, make_preview

pytestmark = pytest.mark.browser

BATCH = 24  # vectors per user; the first page of their sidebar (30) lists every conversation of the batch

USER = "user message"
REPLY = "assistant reply"
TITLE = "conversation title"
PREVIEW = "sidebar preview"
SEARCH = "search"
ERRORS = "error messages"
PAGE_TITLE = "page <title>"
PLACES = (USER, REPLY, TITLE, PREVIEW, SEARCH, ERRORS, PAGE_TITLE)
# Not a place: role names. Only the built-in roles exist today; no user text reaches them.


@dataclass(frozen=True)
class Vector:
    number: int
    name: str
    text: str
    shown: str  # what a reader sees of it rendered as Markdown

    @property
    def label(self) -> str:
        return f"#{self.number} {self.name} {self.text!r}"


# (name, text, what Markdown shows of it when that differs from the text). Calls say `alert(1)`,
# `__xss=1` and `pwned`; each vector's number replaces the 1 (and follows "pwned").
TABLE: list[tuple[str, str, str | None]] = [
    # script tags
    ("script tag", "<script>window.__xss=1</script>", None),
    ("script tag, upper case", "<SCRIPT>alert(1)</SCRIPT>", None),
    ("script tag, mixed case with src", "<ScRiPt src=/pwned.js></sCrIpT>", None),
    ("script tag, fromCharCode", "<script>alert(1);alert(String.fromCharCode(88,83,83))</script>", None),
    ("script tag, fetch", "<script>fetch('/pwned-fetch')</script>", None),
    ("script tag, type attribute", '<script type="text/javascript">alert(1)</script>', None),
    ("script tag split by a null byte", "<scr\x00ipt>alert(1)</scr\x00ipt>", None),
    ("nested script tags", "<<script>alert(1)//<</script>", None),
    ("closing script first", "</script><script>alert(1)</script>", None),
    # event handlers
    ("img onerror", "<img src=x onerror=alert(1)>", None),
    ("img onerror, quoted", '<img src="x" onerror="window.__xss=1">', None),
    ("img onerror, mixed case", "<IMG SRC=x OnErRoR=alert(1)>", None),
    ("img onerror, entity-encoded handler", "<img src=x onerror=&#97;&#108;&#101;rt(1)>", "<img src=x onerror=alert("),
    ("img onerror, unclosed", "<img src=x onerror=alert(1)//", None),
    ("img src fetch", "<img src=/pwned.png>", None),
    ("img srcset", '<img srcset="/pwned-srcset.png 1x">', None),
    ("svg onload", "<svg onload=alert(1)>", None),
    ("svg onload with slash", "<svg/onload=window.__xss=1>", None),
    ("svg script", "<svg><script>alert(1)</script></svg>", None),
    ("svg animate onbegin", "<svg><animate onbegin=alert(1) attributeName=x dur=1s>", None),
    ("body onload", "<body onload=alert(1)>", None),
    ("input autofocus onfocus", "<input autofocus onfocus=alert(1)>", None),
    ("details ontoggle", "<details open ontoggle=alert(1)>", None),
    ("video source onerror", "<video><source onerror=alert(1)></video>", None),
    ("audio onerror", "<audio src=x onerror=alert(1)>", None),
    ("marquee onstart", "<marquee onstart=alert(1)>x</marquee>", None),
    ("unknown tag onclick over the page", "<x onclick=alert(1) style=display:block;position:fixed;inset:0>click", None),
    # frames, objects, URLs
    ("iframe srcdoc", '<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>', None),
    ("iframe javascript src", '<iframe src="javascript:alert(1)"></iframe>', None),
    ("iframe data src", "<iframe src=data:text/html,<script>alert(1)</script>></iframe>", None),
    ("object javascript data", '<object data="javascript:alert(1)"></object>', None),
    ("embed javascript src", "<embed src=javascript:alert(1)>", None),
    ("link javascript href", '<a href="javascript:alert(1)">click</a>', None),
    ("link javascript href, mixed case", '<a href="JaVaScRiPt:window.__xss=1">mixed</a>', None),
    ("link javascript href, entity", '<a href="&#106;avascript:alert(1)">entity</a>', '<a href="javascript:alert(1)">entity</a>'),
    ("link javascript href, tab inside", '<a href="jav&#x09;ascript:alert(1)">tab</a>', '<a href="jav\tascript:alert(1)">tab</a>'),
    ("link data href", '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">data</a>', None),
    ("bare javascript URL", "javascript:alert(1)", None),
    ("bare data URL", "data:text/html,<script>alert(1)</script>", None),
    # Markdown links, images, autolinks, raw HTML
    ("Markdown javascript link", "[click me](javascript:alert(1))", None),
    ("Markdown javascript link, mixed case", "[mixed](JaVaScRiPt:window.__xss=1)", None),
    ("Markdown javascript link, entity", "[entity](&#106;avascript:alert(1))", "[entity](javascript:alert(1))"),
    ("Markdown data link", "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)", None),
    ("Markdown javascript image", "![img](javascript:alert(1))", None),
    ("Markdown image alt breakout", '![x" onerror="alert(1)](/pwned-img.png)', 'x" onerror="alert(1)'),
    ("Markdown link title breakout", '[title trick](/pwned-link "a\\" onmouseover=\\"alert(1)")', "title trick"),
    ("Markdown link with a quote in the URL", '[q](https://example.com/" onmouseover="alert(1))', None),
    ("Markdown autolink javascript", "<javascript:alert(1)>", None),
    ("Markdown autolink with script", '<https://example.com/"><script>alert(1)</script>>', "<script>alert(1)</script>>"),
    ("Markdown raw HTML block", "<div>\n<script>alert(1)</script>\n</div>", None),
    ("Markdown emphasis around HTML", "**bold <img src=x onerror=alert(1)>**", "bold <img src=x onerror=alert(1)>"),
    ("Markdown inline code with HTML", "`<img src=x onerror=alert(1)>`", "<img src=x onerror=alert(1)>"),
    ("Markdown fenced HTML", "```html\n<script>alert(1)</script>\n```", "<script>alert(1)</script>"),
    ("Markdown table with HTML", "| <img src=x onerror=alert(1)> |\n|---|\n| <svg onload=alert(1)> |", "<svg onload=alert(1)>"),
    # styles
    ("style import", "<style>@import '/pwned.css';</style>", None),
    ("style expression", '<div style="width:expression(alert(1))">', None),
    ("style javascript url", '<div style="background:url(javascript:alert(1))">', None),
    ("link stylesheet", "<link rel=stylesheet href=/pwned.css>", None),
    # document-level tags and forms
    ("base href", '<base href="/pwned-base/">', None),
    ("meta refresh", '<meta http-equiv="refresh" content="0;url=/pwned-meta">', None),
    ("meta refresh javascript", '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">', None),
    ("form with formaction", '<form action="/pwned-form"><button formaction="javascript:alert(1)">go</button></form>', None),
    # htmx attributes as text
    ("hx-get on load", '<div hx-get="/pwned-hx" hx-trigger="load">hx</div>', None),
    ("hx-post on load", '<button hx-post="/pwned-hx" hx-trigger="load">hx</button>', None),
    ("hx-on handler", '<div hx-on::load="window.__xss=1">hx</div>', None),
    ("htmx sse-connect", '<div hx-ext="sse" sse-connect="/pwned-sse" sse-swap="message">', None),
    ("data-hx-get on load", '<p data-hx-get="/pwned-hx" data-hx-trigger="load">x</p>', None),
    # attribute breakouts, quotes, closing tags
    ("double-quote breakout", '"><script>alert(1)</script>', None),
    ("single-quote breakout", "'><img src=x onerror=alert(1)>", None),
    ("attribute injection, double quotes", '" autofocus onfocus="alert(1)', None),
    ("attribute injection, single quotes", "' autofocus onfocus='window.__xss=1", None),
    ("backtick breakout", "`><img src=x onerror=alert(1)>", None),
    ("nested quotes", '<img src="x" alt="a"b" onerror="alert(1)">', None),
    ("quotes in a javascript URL", '<a href="javascript:alert(&quot;1&quot;)">q</a>', '<a href="javascript:alert("1")">q</a>'),
    ("textarea breakout", "</textarea><script>alert(1)</script>", None),
    ("title breakout", "</title><script>alert(1)</script>", None),
    ("style breakout", "</style><img src=x onerror=alert(1)>", None),
    ("comment breakout", "--><script>alert(1)</script><!--", None),
    ("comment trick", '<!--<img src="--><img src=x onerror=alert(1)//">', None),
    ("CDATA breakout", "]]><script>alert(1)</script>", None),
    ("noscript mXSS", '<noscript><p title="</noscript><img src=x onerror=alert(1)>">', None),
    ("math mXSS", "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>", None),
    # template injection (shown literally), entities, unicode
    ("Jinja/Angular expression", "{{7*7}} {{constructor.constructor('alert(1)')()}}", None),
    ("JS template literal", "${7*7} ${alert(1)}", None),
    ("Jinja statement", "{% for x in range(3) %}{{ x }}{% endfor %} {{ config }}", None),
    ("Ruby/ERB expression", "#{7*7} <%= 7*7 %>", "<%= 7"),
    ("HTML entities of a script tag", "&lt;script&gt;alert(1)&lt;/script&gt;", "<script>alert(1)</script>"),
    ("numeric entities of an img tag", "&#60;img src=x onerror=alert(1)&#62;", "<img src=x onerror=alert(1)>"),
    ("RTL override around a tag", "\u202e<img src=x onerror=alert(1)>\u202d", None),
    ("zero-width space inside a tag", "<scr\u200bipt>alert(1)</script>", None),
    ("null byte before a tag", "\x00<img src=x onerror=alert(1)>", None),
    ("fullwidth angle brackets", "\uff1cscript\uff1ealert(1)\uff1c/script\uff1e", None),
    ("JS line separators", "\u2028<script>alert(1)</script>\u2029", None),
]


def _numbered(number: int, text: str) -> str:
    return text.replace("alert(1)", f"alert({number})").replace("__xss=1", f"__xss={number}").replace(
        "pwned", f"pwned{number}"
    )


VECTORS = [
    Vector(n, name, _numbered(n, text), _numbered(n, shown if shown is not None else text))
    for n, (name, text, shown) in enumerate(TABLE, start=1)
]
BY_NUMBER = {v.number: v for v in VECTORS}

# Runs before any script of every page and frame: assignments to window.__xss are logged, and
# so is every report of the Content-Security-Policy.
TRAP = """
(() => {
  let value;
  Object.defineProperty(window, "__xss", {
    configurable: false,
    get() { return value; },
    set(v) { value = v; console.error("XSS-EXECUTED window.__xss=" + v); },
  });
  document.addEventListener("securitypolicyviolation", (e) => {
    console.warn("CSP-REPORT " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " " + (e.sample || ""));
  }, true);
})();
"""

# Elements and attributes that only a vector could have put in the page.
SCAN = """() => {
  const found = [];
  const describe = (el) => el.outerHTML.slice(0, 160);
  const FORBIDDEN = "script, iframe, frame, frameset, object, embed, applet, base, img, video, audio, source, "
    + "track, marquee, math, isindex, link, meta, style, portal, "
    + "template:not(#toast-template):not(.msg__source):not(.session-update), "
    + "svg:not(.icon), form[action*=pwned], a[href*=pwned]:not(.prose a)";
  for (const el of document.body.querySelectorAll(FORBIDDEN)) found.push(describe(el));
  // a message's Markdown source (for "Copy Markdown") is ours: it must hold text, never an element
  for (const el of document.body.querySelectorAll("template.msg__source")) {
    if (el.content.children.length) found.push(describe(el));
  }
  // a reply's end on a page's channel brings the sidebar item as a template (app.js puts it in place)
  for (const el of document.body.querySelectorAll("template.session-update")) {
    for (const inner of el.content.querySelectorAll(FORBIDDEN)) found.push(describe(inner));
  }
  for (const el of document.head.querySelectorAll("base, script:not([src^='/static/'])")) found.push(describe(el));
  const URL_ATTRIBUTES = new Set(["href", "src", "action", "formaction", "data", "poster", "background",
                                  "xlink:href", "srcset", "codebase", "dynsrc", "lowsrc"]);
  for (const el of document.querySelectorAll("*")) {
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      const value = attr.value.replace(/[\\u0000-\\u0020\\u007f-\\u00a0\\u200b-\\u200f\\u2028-\\u202e\\ufeff]/g, "").toLowerCase();
      const bad = name.startsWith("on") || name === "srcdoc" || /^(data-)?hx-on/.test(name)
        || (URL_ATTRIBUTES.has(name) && /^(javascript|data|vbscript):/.test(value))
        || (/^(data-)?(hx-(get|post|put|patch|delete|trigger|ext|vals|headers)|sse-connect)$/.test(name)
            && value.includes("pwned"))
        || (name === "style" && /expression|javascript|url\\(/.test(value));
      if (bad) found.push(`${name}="${attr.value.slice(0, 80)}" on ${describe(el)}`);
    }
  }
  return found;
}"""

# What the page shows, read in one go; also the trap's value and the scan.
SNAPSHOT = """() => {
  const text = (el) => (el ? el.textContent : null);
  const items = {};
  for (const li of document.querySelectorAll("#session-list .session")) {
    const rename = li.querySelector("a[href$='/title/edit']");
    const confirm = li.querySelector("[hx-confirm]");
    items[li.id.slice("conv-".length)] = {
      title: text(li.querySelector(".session__title")),
      preview: text(li.querySelector(".session__preview")),
      renameLabel: rename ? rename.getAttribute("aria-label") : null,
      confirm: confirm ? confirm.getAttribute("hx-confirm") : null,
      renameValue: li.querySelector(".rename__input") ? li.querySelector(".rename__input").value : null,
    };
  }
  const main = document.querySelector("#main");
  const box = document.querySelector("#composer-input");
  const search = document.querySelector("#search");
  return {
    xss: window.__xss === undefined ? null : String(window.__xss),
    documentTitle: document.title,
    conversation: main ? main.dataset.conversation : null,
    header: text(document.querySelector(".chat__title")),
    user: [...document.querySelectorAll("#message-list .msg--user .msg__body")].map((e) => e.textContent),
    assistant: [...document.querySelectorAll("#message-list .msg--assistant .msg__body")].map((e) => e.innerText),
    items,
    search: search ? search.value : null,
    empty: text(document.querySelector("#session-list .sessions__empty")),
    toasts: [...document.querySelectorAll("#toasts .toast__text")].map((e) => e.textContent),
    confirm: text(document.querySelector("#confirm-text")),
    draft: box ? box.value : null,
    formError: text(document.querySelector(".composer__error")),
    streamed: window.__streamed === undefined ? null : window.__streamed,
    injected: (SCAN)(),
  };
}""".replace("SCAN", SCAN)

# Keeps the longest text the streaming bubble showed, chunk by chunk, until `done` replaces it.
RECORD_STREAM = """() => {
  window.__streamed = "";
  if (window.__recorder) window.__recorder.disconnect();
  window.__recorder = new MutationObserver(() => {
    const box = document.querySelector(".msg--streaming .msg__stream");
    if (box && box.textContent.length >= window.__streamed.length) window.__streamed = box.textContent;
  });
  window.__recorder.observe(document.body, { subtree: true, childList: true, characterData: true });
}"""

# A plain form post (no htmx), as a browser without JavaScript sends it: a refused message
# comes back as the whole page with the error and the text in the box.
POST_FORM = """([action, fields]) => {
  const form = document.createElement("form");
  form.method = "post";
  form.action = action;
  for (const [name, value] of Object.entries(fields)) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    form.append(input);
  }
  document.body.append(form);
  form.submit();
}"""


def norm(text: str | None) -> str:
    """Text as compared: the HTML parser drops a NUL or makes it U+FFFD; whitespace collapsed."""
    return " ".join((text or "").replace("\x00", "").replace("\ufffd", "").split())


@dataclass
class Planned:
    """A conversation a batch creates: its vectors are its title, its message and (said back) its reply."""

    vectors: list[Vector]
    id: str = ""

    @property
    def text(self) -> str:
        return "\n\n".join(v.text for v in self.vectors)

    @property
    def title(self) -> str:
        return clean_title(" ".join(v.text for v in self.vectors))

    @property
    def preview(self) -> str:
        return make_preview(self.text.strip())  # the echoed reply is the conversation's latest message


def plan_batch(batch: list[Vector]) -> tuple[list[Planned], list[Planned]]:
    """Groups of vectors as long a title as allowed (opened one by one), and a conversation for each
    vector that does not start a group, so that every vector starts some sidebar preview."""
    groups: list[Planned] = []
    for vector in batch:
        if groups and len(" ".join(v.text for v in [*groups[-1].vectors, vector])) <= TITLE_MAX_CHARS:
            groups[-1].vectors.append(vector)
        else:
            groups.append(Planned([vector]))
    singles = [Planned([vector]) for group in groups for vector in group.vectors[1:]]
    return groups, singles


def messages_of(batch: list[Vector], limit: int) -> Iterator[tuple[list[Vector], str]]:
    """The batch as few composer messages as fit the limit; the fake model says each back."""

    def text(vectors: list[Vector]) -> str:
        return "\n\n".join(v.text for v in vectors) + "\n\n[[echo]] [[delay:1]]"

    group: list[Vector] = []
    for vector in batch:
        if group and len(text([*group, vector])) > limit:
            yield group, text(group)
            group = []
        group.append(vector)
    if group:
        yield group, text(group)


@dataclass
class Findings:
    executed: list[str] = field(default_factory=list)
    injected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    csp_reports: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    seen: dict[str, set[int]] = field(default_factory=lambda: {place: set() for place in PLACES})

    def expect(self, place: str, vectors: list[Vector], found: bool, what: str, got: Any) -> None:
        """`found`: the vectors' text is in `place` as text; otherwise a miss naming them."""
        if found:
            self.seen[place].update(v.number for v in vectors)
        else:
            names = ", ".join(v.label for v in vectors)
            self.missing.append(f"{names} not shown in {place} ({what}); the page had {got!r}"[:500])

    def expect_each(self, place: str, vectors: list[Vector], shown: str | None, what: str, markdown: bool = False) -> None:
        for vector in vectors:
            self.expect(place, [vector], norm(vector.shown if markdown else vector.text) in norm(shown), what, shown)

    def expect_item(self, place: str, plan: Planned, item: dict[str, Any] | None, what: str) -> None:
        """A sidebar item (list or search results) shows the plan's title, and its preview."""
        self.expect(place, plan.vectors, item is not None and norm(item["title"]) == norm(plan.title),
                    f"{what}, title", item)
        self.expect(PREVIEW, plan.vectors[:1], item is not None and norm(item["preview"]) == norm(plan.preview),
                    f"{what}, preview", item)


class Probe:
    """Everything a browser context reports, tagged with the step the test is at."""

    def __init__(self, findings: Findings, base_url: str) -> None:
        self.findings = findings
        self.host = urlsplit(base_url).netloc
        self.where = "setup"

    def attach(self, context: Any, page: Any) -> None:
        context.on("request", self.on_request)
        context.on("page", self.on_popup)
        page.on("dialog", self.on_dialog)
        page.on("console", self.on_console)
        page.on("pageerror", lambda error: self.findings.page_errors.append(f"{self.where}: {error}"))

    def on_request(self, request: Any) -> None:
        url = urlsplit(request.url)
        if "pwned" in url.path or (url.scheme in ("http", "https") and url.netloc != self.host):
            self.findings.executed.append(f"{self.where}: the browser requested {request.url}")

    def on_popup(self, popup: Any) -> None:
        self.findings.executed.append(f"{self.where}: a window opened ({popup.url})")
        popup.close()

    def on_dialog(self, dialog: Any) -> None:
        self.findings.executed.append(f"{self.where}: {dialog.type}({dialog.message!r})")
        dialog.dismiss()

    def on_console(self, message: Any) -> None:
        text = message.text
        if text.startswith("XSS-EXECUTED"):
            self.findings.executed.append(f"{self.where}: {text}")
        elif text.startswith("CSP-REPORT"):
            self.findings.csp_reports.append(f"{self.where}: {text}")

    def look(self, page: Any) -> dict[str, Any]:
        """The page as shown now; a set trap or an injected element is recorded."""
        shot = page.evaluate(SNAPSHOT)
        if shot["xss"]:
            self.findings.executed.append(f"{self.where}: window.__xss is {shot['xss']}")
        self.findings.injected.extend(f"{self.where}: {found}" for found in shot["injected"])
        return shot


def create_conversations(client: httpx.Client, plans: list[Planned]) -> None:
    """Over HTTP as the batch's user: each plan's conversation, its turn (the model says the text back)
    and its title, renamed through the web UI's route (the client sends the page's CSRF token)."""
    events: list[str] = []
    for plan in plans:
        created = client.post("/api/sessions", json={})
        assert created.status_code == 201, created.text
        plan.id = created.json()["id"]
        started = client.post(f"/api/sessions/{plan.id}/turns", json={"message": f"{plan.text}\n\n[[echo]] [[delay:0]]"})
        assert started.status_code == 202, started.text
        events.append(started.json()["events_url"])
    for url in events:  # the turns ran side by side; each stream ends once its reply is saved
        body = client.get(url).text
        assert '"type":"end"' in body.replace(" ", ""), body[-300:]
    for plan in plans:
        renamed = client.post(f"/c/{plan.id}/title", data={"title": " ".join(v.text for v in plan.vectors)},
                              headers={"HX-Request": "true"})
        assert renamed.status_code == 200, (renamed.status_code, renamed.text[:300])


def htmx_get(page: Any, url: str, target: str) -> None:
    """What an hx-get link does (the sidebar's links, the rename button), without finding the link
    first: the sidebar may be showing search results without it."""
    page.evaluate("([url, target]) => htmx.ajax('GET', url, {target, swap: 'outerHTML'})", [url, target])


def search(page: Any, query: str) -> None:
    """Type in the search box and press Enter; returns once the results replaced the list."""
    page.evaluate("() => { document.querySelector('#session-list').dataset.stale = '1' }")
    page.fill("#search", query)
    page.press("#search", "Enter")
    page.wait_for_selector("#session-list:not([data-stale])")


def run_batch(page: Any, probe: Probe, client: httpx.Client, batch: list[Vector]) -> None:
    """One user (the client's identity; the browser takes it over by its cookie) sees the batch everywhere."""
    findings = probe.findings
    created = client.post("/api/sessions", json={})  # the conversation the composer sends in
    assert created.status_code == 201, created.text
    home = created.json()["id"]
    groups, singles = plan_batch(batch)
    create_conversations(client, groups + singles)
    page.context.clear_cookies()
    page.context.add_cookies([{"name": "chat_uid", "value": client.cookies["chat_uid"], "url": str(client.base_url)}])
    span = f"#{batch[0].number}-#{batch[-1].number}"
    probe.where = f"opening the first page ({span})"
    page.goto(f"/c/{home}")
    max_chars = int(page.locator("#composer").get_attribute("data-max"))

    # (1, 2) the composer: the user's bubble, the streamed chunks, the reply's Markdown
    for sent, message in messages_of(batch, max_chars):
        probe.where = f"{USER} and {REPLY}, sent with the composer (#{sent[0].number}-#{sent[-1].number})"
        page.evaluate(RECORD_STREAM)
        send(page, message)
        wait_reply_done(page)
        shot = probe.look(page)
        findings.expect_each(USER, sent, shot["user"][-1], "the composer's bubble")
        findings.expect_each(REPLY, sent, shot["streamed"], "streamed chunks")
        findings.expect_each(REPLY, sent, shot["assistant"][-1], "Markdown", markdown=True)

    # (1, 2, 3, 4) the same page rendered by the server, with every conversation in the sidebar
    probe.where = f"whole page with the sidebar ({span})"
    page.reload()
    shot = probe.look(page)
    findings.expect_each(USER, batch, " ".join(shot["user"]), "whole page")
    findings.expect_each(REPLY, batch, " ".join(shot["assistant"]), "whole page", markdown=True)
    for plan in groups + singles:
        item = shot["items"].get(plan.id)
        findings.expect_item(TITLE, plan, item, "sidebar")
        findings.expect(TITLE, plan.vectors, item is not None and norm(plan.title) in norm(item["renameLabel"])
                        and norm(plan.title) in norm(item["confirm"]), "rename and delete labels", item)

    # (6) deleting a conversation: the confirm dialog, the Deleted toast, Undo, the Restored toast
    plan = groups[0]
    probe.where = f"{ERRORS}: confirm dialog and toasts ({span})"
    item = page.locator(f"#conv-{plan.id}")
    item.hover()
    item.locator("button[title='Delete']").click()
    page.wait_for_selector("#confirm[open]")
    asked = probe.look(page)["confirm"]
    page.click("#confirm button[value='ok']")
    undo = page.locator("#toasts .toast .toast__action")
    undo.wait_for()
    deleted = probe.look(page)["toasts"]
    # a click, as a user would: even with a 200-character title the toast stays within the window
    box = undo.bounding_box()
    assert box is not None and box["x"] + box["width"] <= page.viewport_size["width"]
    undo.click()
    page.wait_for_selector(f"#conv-{plan.id}")
    page.wait_for_selector("#toasts .toast:not(:has(.toast__action))")
    restored = probe.look(page)["toasts"]
    title = norm(plan.title)
    findings.expect(ERRORS, plan.vectors, title in norm(asked), "confirm dialog", asked)
    findings.expect(ERRORS, plan.vectors, any(title in norm(t) and "Deleted" in t for t in deleted),
                    "Deleted toast", deleted)
    findings.expect(ERRORS, plan.vectors, any(title in norm(t) and "Restored" in t for t in restored),
                    "Restored toast", restored)

    # (5) the search box (/sidebar?q=): every conversation matches "[[echo]]", in its message
    probe.where = f"{SEARCH}: search box results ({span})"
    search(page, "[[echo]]")
    shot = probe.look(page)
    for plan in groups + singles:
        findings.expect_item(SEARCH, plan, shot["items"].get(plan.id), "search results")
    query = f"{groups[0].title[:170]} ~nothing-{batch[0].number}"
    probe.where = f"{SEARCH}: search box, no match ({span})"
    search(page, query)
    shot = probe.look(page)
    findings.expect(SEARCH, groups[0].vectors, norm(query) in norm(shot["empty"]), "no-match message", shot["empty"])

    # (7, 3, 5) each group's conversation: opened by HTMX, then as a whole page searching for its
    # title (the search field holds it), then its title in the inline rename field
    for plan in groups:
        names = f"#{plan.vectors[0].number}-#{plan.vectors[-1].number}"
        probe.where = f"{PAGE_TITLE}, {TITLE} after HTMX navigation ({names})"
        htmx_get(page, f"/c/{plan.id}", "#main")
        page.wait_for_selector(f"#main[data-conversation='{plan.id}']")
        shot = probe.look(page)
        findings.expect(PAGE_TITLE, plan.vectors, norm(shot["documentTitle"]).startswith(norm(plan.title)),
                        "document.title after HTMX navigation", shot["documentTitle"])
        findings.expect(TITLE, plan.vectors, norm(shot["header"]) == norm(plan.title), "header", shot["header"])
        findings.expect_each(USER, plan.vectors, shot["user"][-1], "its conversation")
        findings.expect_each(REPLY, plan.vectors, shot["assistant"][-1], "its conversation", markdown=True)

        probe.look(page)  # before leaving the page
        probe.where = f"{PAGE_TITLE}, {SEARCH}: whole page with ?q= ({names})"
        page.goto(f"/c/{plan.id}?q={quote(plan.title, safe='')}")
        shot = probe.look(page)
        findings.expect(PAGE_TITLE, plan.vectors, norm(shot["documentTitle"]).startswith(norm(plan.title)),
                        "document.title of the page", shot["documentTitle"])
        findings.expect(TITLE, plan.vectors, norm(shot["header"]) == norm(plan.title), "header", shot["header"])
        findings.expect(SEARCH, plan.vectors, norm(shot["search"]) == norm(plan.title), "search field",
                        shot["search"])
        findings.expect_item(SEARCH, plan, shot["items"].get(plan.id), "search results")

        probe.where = f"{TITLE}: inline rename field ({names})"
        htmx_get(page, f"/c/{plan.id}/title/edit", f"#conv-{plan.id}")
        page.wait_for_selector(f"#conv-{plan.id} .rename__input")
        item = probe.look(page)["items"].get(plan.id) or {}
        findings.expect(TITLE, plan.vectors, norm(item.get("renameValue")) == norm(plan.title), "rename field", item)

    # (6) a message over the limit, posted as a form: the page comes back with the error and the text
    probe.look(page)
    probe.where = f"{ERRORS}: too-long message kept in the form ({span})"
    page.goto(f"/c/{home}")
    draft = "\n\n".join(v.text for v in batch)
    draft += "\n" + "x" * max(1, max_chars + 1 - len(draft))
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    with page.expect_navigation():
        page.evaluate(POST_FORM, [f"/c/{home}/messages", {"csrf_token": token, "message": draft}])
    shot = probe.look(page)
    findings.expect(ERRORS, batch, bool(shot["formError"]), "form error", shot["formError"])
    findings.expect_each(ERRORS, batch, shot["draft"], "the form keeps the text")
    page.wait_for_timeout(100)  # anything an injected element would load or run has had its chance
    probe.look(page)


def test_no_vector_runs_script_wherever_text_is_shown(
    browser: Any, app_server: AppServer, make_client: Callable[..., httpx.Client]
) -> None:
    started = time.monotonic()
    findings = Findings()
    # one context and page for every batch (a new one costs a renderer process); each batch is a
    # new user all the same: the identity cookie is swapped
    context = browser.new_context(
        base_url=app_server.base_url, viewport={"width": 1280, "height": 800}, locale="en-US",
        extra_http_headers={"Accept-Language": "en-US,en"},
    )
    try:
        context.set_default_timeout(10_000)
        context.add_init_script(script=TRAP)
        probe = Probe(findings, app_server.base_url)
        page = context.new_page()
        probe.attach(context, page)
        for start in range(0, len(VECTORS), BATCH):
            run_batch(page, probe, make_client(), VECTORS[start : start + BATCH])
    finally:
        context.close()
    seconds = time.monotonic() - started

    print(f"\nxss: tried {len(VECTORS)} vectors in {len(PLACES)} places, {len(findings.executed)} executed "
          f"({len(findings.injected)} injected, {len(findings.csp_reports)} CSP reports, {seconds:.1f} s)")
    for report in findings.csp_reports[:10]:
        print("  CSP blocked:", report)

    def listing(lines: list[str]) -> str:
        return "\n".join(lines[:40]) + (f"\n... and {len(lines) - 40} more" if len(lines) > 40 else "")

    def who(line: str) -> str:  # the vector a logged call or request names by its number
        found = re.search(r"__xss=(\d+)|pwned(\d+)|alert\('(\d+)'\)", line)
        number = found and int(next(group for group in found.groups() if group))
        return f"{line}  <- {BY_NUMBER[number].label}" if number in BY_NUMBER else line

    assert findings.executed == [], "a vector ran script:\n" + listing([who(line) for line in findings.executed])
    assert findings.injected == [], "a vector became markup:\n" + listing(findings.injected)
    assert findings.page_errors == [], "the page threw:\n" + listing(findings.page_errors)
    assert findings.missing == [], "a vector's text did not reach the page as text:\n" + listing(findings.missing)
    unseen = {place: sorted(set(BY_NUMBER) - seen) for place, seen in findings.seen.items() if set(BY_NUMBER) - seen}
    assert unseen == {}, f"vectors not checked in every place: {unseen}"
    assert len(VECTORS) >= 60
