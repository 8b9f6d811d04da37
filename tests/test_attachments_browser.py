"""Attachments in headless Chromium, on the demo app (its model takes images and says what it received): the
picker, Alt+U, paste, drop, chips with thumbnails and removal, the progress bar, a refused file that leaves
the typed text alone, and the same form without JavaScript."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AppServer
from tests.files import image_bytes

pytestmark = pytest.mark.browser

PICKER = "#composer [data-attach]"
CHIPS = "#composer [data-chips] .chip"
DONE_REPLY = "#message-list .msg--assistant:not(.msg--streaming) >> text=I received these files"  # (the demo's)


@pytest.fixture
def demo_page(browser: Any, demo_app_server: AppServer) -> Iterator[Callable[..., Any]]:
    contexts: list[Any] = []
    violations: list[str] = []

    def open_(path: str = "/", **options: Any) -> Any:
        options.setdefault("viewport", {"width": 1280, "height": 800})
        context = browser.new_context(base_url=demo_app_server.base_url, locale="en-US",
                                      extra_http_headers={"Accept-Language": "en-US,en"}, **options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda message: "Content Security Policy" in message.text
                and violations.append(message.text))
        page.goto(path)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert violations == []


def file(name: str, data: bytes, mime: str) -> dict[str, Any]:
    return {"name": name, "mimeType": mime, "buffer": data}


def wait_uploaded(page: Any, count: int) -> None:
    page.wait_for_function("n => document.querySelectorAll('#composer [data-chips] .chip[data-id]').length === n",
                           arg=count)


def test_picked_files_show_as_chips_and_the_model_and_the_bubble_get_them(demo_page, artifacts: Path) -> None:
    page = demo_page()
    page.set_input_files(PICKER, [file("screen.png", image_bytes(3000, 1500), "image/png"),
                                  file("notes <b>.txt", b"First line of notes\nsecond", "text/plain")])
    wait_uploaded(page, 2)
    assert page.locator(f"{CHIPS} .chip__thumb").count() == 1
    assert page.locator(CHIPS).nth(1).locator(".chip__name").inner_text() == "notes <b>.txt"
    assert page.locator(PICKER).input_value() == ""  # uploaded already: the post carries ids
    page.fill("#composer-input", "what do you see?")
    page.screenshot(path=str(artifacts / "attachments-chips.png"))
    page.press("#composer-input", "Enter")
    page.wait_for_selector("#message-list .msg--user .file__thumb")
    page.wait_for_selector(DONE_REPLY)
    assert page.locator(CHIPS).count() == 0
    bubble = page.locator("#message-list .msg--user").last
    assert bubble.locator(".file__chip").inner_text().startswith("notes <b>.txt")
    thumb = bubble.locator(".file__thumb")
    assert page.evaluate("img => img.complete && img.naturalWidth", thumb.element_handle()) == 2048
    reply = page.locator("#message-list .msg--assistant .msg__body").last.inner_text()
    assert "image 2048×1024 (image/jpeg)" in reply and "First line of notes" in reply
    page.screenshot(path=str(artifacts / "attachments-bubble.png"))
    # the thumbnail opens the file full size; the chip downloads it
    with page.expect_download() as download:
        bubble.locator(".file__chip").click()
    assert download.value.suggested_filename.endswith(".txt")  # (Chromium makes "<" and ">" "_" in a file name)
    assert Path(download.value.path()).read_bytes() == b"First line of notes\nsecond"


def test_alt_u_opens_the_picker_and_a_pasted_or_dropped_file_becomes_a_chip(demo_page) -> None:
    page = demo_page()
    # Playwright asks Chromium to report file choosers when the first listener is added, without
    # waiting for the answer: a key pressed at once can open a chooser nobody intercepts (seen on
    # a loaded CI machine, the input clicked and no event). Listen first, then a round trip.
    page.on("filechooser", lambda _chooser: None)
    page.evaluate("() => document.readyState")
    page.focus("#composer-input")
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Alt+U")
    chooser.value.set_files([file("a.md", b"# from the picker", "text/markdown")])
    wait_uploaded(page, 1)
    page.evaluate("""() => {
        const data = new DataTransfer();
        data.items.add(new File(["pasted text"], "pasted.txt", {type: "text/plain"}));
        document.querySelector('#composer-input').dispatchEvent(
            new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
    }""")
    wait_uploaded(page, 2)
    page.evaluate("""() => {
        const data = new DataTransfer();
        data.items.add(new File(["dropped"], "dropped.csv", {type: "text/csv"}));
        const main = document.querySelector('#main');
        main.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true, cancelable: true}));
        main.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
    }""")
    wait_uploaded(page, 3)
    names = page.locator(f"{CHIPS} .chip__name").all_inner_texts()
    assert names == ["a.md", "pasted.txt", "dropped.csv"]
    # removing one forgets it on the server too; the send carries the others only
    with page.expect_response(lambda r: r.request.method == "DELETE" and "/api/files/" in r.url) as deleted:
        page.locator(CHIPS).nth(1).locator(".chip__remove").click()
    assert deleted.value.status == 204
    assert len(page.input_value("#composer input[name=attachments]").split(",")) == 2
    assert page.locator("#composer .round-btn--send").is_enabled()  # files alone may be sent
    page.press("#composer-input", "Enter")
    page.wait_for_selector(DONE_REPLY)
    reply = page.locator("#message-list .msg--assistant .msg__body").last.inner_text()
    assert "a.md" in reply and "dropped.csv" in reply and "pasted.txt" not in reply


def test_a_refused_file_says_why_on_its_chip_and_the_typed_text_stays(demo_page) -> None:
    page = demo_page()
    page.fill("#composer-input", "my long question")
    page.set_input_files(PICKER, [file("cat.png", b"not an image at all", "image/png")])
    page.wait_for_selector(f"{CHIPS}.is-error")
    assert "cat.png" in page.locator(f"{CHIPS} .chip__error").inner_text()
    assert page.input_value("#composer-input") == "my long question"
    assert page.locator("#composer .round-btn--send").is_disabled()  # until the refused file is removed
    page.locator(f"{CHIPS} .chip__remove").click()
    assert page.locator("#composer .round-btn--send").is_enabled()


def test_a_large_file_shows_upload_progress(demo_page) -> None:
    page = demo_page()
    page.evaluate("""() => {
        window.progressSeen = [];
        new MutationObserver(() => document.querySelectorAll('.chip__progress').forEach(
            (bar) => window.progressSeen.push([bar.value, bar.max]))).observe(
            document.body, {subtree: true, childList: true, attributes: true});
    }""")
    big = ("line of a big log file\n" * 200_000).encode()  # 4.6 MB
    page.set_input_files(PICKER, [file("big.log", big, "text/plain")])
    wait_uploaded(page, 1)
    seen = page.evaluate("window.progressSeen")
    assert seen and all(total == len(big) for _, total in seen)
    assert page.locator(f"{CHIPS} .chip__progress").count() == 0  # gone once uploaded


def test_without_javascript_the_form_sends_text_and_files_in_one_post(demo_page, artifacts: Path) -> None:
    page = demo_page(java_script_enabled=False)
    page.fill("#composer-input", "no script here")
    page.set_input_files("#composer input[name=files]", [file("photo.jpg", image_bytes(800, 600, "JPEG"), "image/jpeg")])
    page.click("#composer .round-btn--send")
    page.wait_for_selector("#message-list .msg--user .file__thumb")
    page.screenshot(path=str(artifacts / "attachments-no-js.png"))
    page.wait_for_function("() => true")
    for _ in range(30):  # the page refreshes itself while the reply is written
        if "image 800×600" in page.content():
            break
        page.wait_for_timeout(500)
        page.reload()
    assert "image 800×600 (image/jpeg)" in page.content()
    # a refused file: the page again, the typed text in the composer
    page.fill("#composer-input", "keep this text")
    page.set_input_files("#composer input[name=files]", [file("x.png", b"plain text", "image/png")])
    page.click("#composer .round-btn--send")
    page.wait_for_selector(".composer__error")
    assert page.input_value("#composer-input") == "keep this text"


def test_hostile_file_names_and_pdf_text_stay_text(demo_page) -> None:
    from tests.files import pdf_bytes

    page = demo_page()
    hostile = "<img src=x onerror=window.pwned=1>.txt"
    page.set_input_files(PICKER, [file(hostile, b"<script>window.pwned=2</script> first", "text/plain"),
                                  file("x.pdf", pdf_bytes(["<img src=x onerror=window.pwned=3>"]), "application/pdf")])
    wait_uploaded(page, 2)
    page.press("#composer-input", "Enter")
    page.wait_for_selector(DONE_REPLY)
    bubble = page.locator("#message-list .msg--user").last
    assert bubble.locator(".file__chip").first.inner_text().startswith(hostile)
    reply = page.locator("#message-list .msg--assistant .msg__body").last.inner_text()
    assert "<img src=x onerror=window.pwned=3>" in reply
    page.reload()
    page.wait_for_selector("#message-list .msg--user .file__chip")
    assert page.evaluate("window.pwned") is None
