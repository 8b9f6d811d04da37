"""Attachments in-process, on a real redis-server with the fake model over HTTP: what is stored of a file,
what is refused (and that nothing is then stored), what the model receives, and how files live and die with
their conversation."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.files import bomb_png, encrypted_pdf, image_bytes, pdf_bytes
from tests.unit.wiring import Core
from webapp.base.errors import (
    AttachmentNotFound,
    AttachmentTooLarge,
    EmptyAttachment,
    ImagesNotSupported,
    StorageFull,
    TooManyAttachments,
    UnreadableAttachment,
    UnsupportedAttachment,
)
from webapp.base.models import Attachment
from webapp.core.attachments import clean_name
from webapp.llm.providers import demo_received

ALICE, BOB = "alice", "bob"


async def upload(core: Core, user: str, name: str, data: bytes) -> Attachment:
    async def read() -> bytes:
        return data
    return await core.uploads.upload(user, name, len(data), read)


async def uploads_left(core: Core, user: str) -> dict[str, str]:
    return await core.store.redis.hgetall(core.store.keys.uploads(user))


def decoded_image(data_url: str) -> Image.Image:
    head, _, data = data_url.partition(",")
    assert head == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


async def test_a_photo_reaches_a_vision_model_resized_as_a_data_url(core: Core, upstream) -> None:
    core.settings.openai_vision_models = "other, fake-model"
    photo = await upload(core, ALICE, "holiday.jpeg", image_bytes(4000, 3000, "JPEG"))
    # (decoded at half scale: a 12 MP JPEG comes out at 2000 px, see core/attachments.py)
    assert (photo.kind, photo.type, photo.width, photo.height) == ("image", "image/jpeg", 2000, 1500)
    conversation = await core.conversations.create(ALICE)
    started = await core.writer.start_turn(conversation.id, ALICE, "img-marker-1 what is this?", None, "en",
                                           attachments=[photo.id])
    await core.finish(ALICE, started)
    parts = upstream.chat_requests("img-marker-1")[-1]["last_user_parts"]
    assert parts[0] == {"type": "text", "text": "img-marker-1 what is this?"}
    image = decoded_image(parts[1]["image_url"]["url"])
    assert image.size == (2000, 1500)
    stored, data = await core.uploads.download(ALICE, conversation.id, photo.id)
    assert stored == photo and base64.b64decode(parts[1]["image_url"]["url"].partition(",")[2]) == data
    history = await core.history(ALICE, conversation.id)
    assert history[-2].attachments == [photo]
    assert await uploads_left(core, ALICE) == {}  # moved into the conversation


async def test_a_model_that_takes_no_images_refuses_them_before_anything_is_sent(core: Core, upstream) -> None:
    photo = await upload(core, ALICE, "shot.png", image_bytes(50, 40))
    conversation = await core.conversations.create(ALICE)
    with pytest.raises(ImagesNotSupported) as refused:
        await core.writer.start_turn(conversation.id, ALICE, "no-vision-marker", None, "en", attachments=[photo.id])
    assert refused.value.params["model"] == "fake-model"
    assert upstream.chat_requests("no-vision-marker") == []
    assert len(await core.history(ALICE, conversation.id)) == 1  # only the welcome
    core.settings.openai_vision_models = "*"  # the same ids again, once a model can see them
    started = await core.writer.start_turn(conversation.id, ALICE, "no-vision-marker 2", None, "en",
                                           attachments=[photo.id])
    await core.finish(ALICE, started)


async def test_a_refused_edit_leaves_the_conversation_and_the_upload_as_they_were(core: Core, upstream) -> None:
    """An edit whose files are refused (images for a model without vision, an unknown or expired id) is
    refused before it forks anything or moves a file: the conversation still shows the question and its
    reply, the upload stays the user's to remove, and nothing of it is served from the conversation."""
    conversation = await core.conversations.create(ALICE)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "kept question", None, "en"))
    before = await core.history(ALICE, conversation.id)
    asked = before[-2]
    photo = await upload(core, ALICE, "shot.png", image_bytes(50, 40))
    with pytest.raises(ImagesNotSupported):
        await core.writer.edit(conversation.id, ALICE, asked.id, "with a picture", "en", attachments=[photo.id])
    with pytest.raises(AttachmentNotFound):
        await core.writer.edit(conversation.id, ALICE, asked.id, "with a gone file", "en",
                               attachments=["f_" + "0" * 16])
    assert await core.history(ALICE, conversation.id) == before
    assert photo.id in await uploads_left(core, ALICE)
    assert not await core.store.redis.exists(core.store.keys.files(ALICE, conversation.id))
    await core.finish(ALICE, await core.writer.edit(conversation.id, ALICE, asked.id, "edited fine", "en"))
    assert (await core.history(ALICE, conversation.id))[-2].content == "edited fine"


async def test_a_pdfs_text_reaches_the_model_and_what_was_cut_is_said(core: Core, upstream) -> None:
    core.settings.attachment_text_chars = 300
    pages = [f"Page {n} says <script>alert({n})</script> " + "x" * 150 for n in range(1, 11)]
    report = await upload(core, ALICE, "report.pdf", pdf_bytes(pages))
    assert (report.kind, report.pages, report.kept) == ("pdf", 10, 300)
    assert report.read < report.pages and report.cut
    conversation = await core.conversations.create(ALICE)
    started = await core.writer.start_turn(conversation.id, ALICE, "pdf-marker", None, "en", attachments=[report.id])
    await core.finish(ALICE, started)
    sent = upstream.chat_requests("pdf-marker")[-1]["messages"][-1]["content"]
    assert isinstance(sent, str) and "--- file: report.pdf ---" in sent
    assert "Page 1 says <script>alert(1)</script>" in sent
    assert f"only the first 300 of {report.chars} characters are included" in sent
    assert f"only pages 1-{report.read} of 10 were read" in sent


async def test_a_text_file_goes_in_as_text_and_a_message_may_be_only_files(core: Core, upstream) -> None:
    notes = await upload(core, ALICE, "notes.md", "# First line\nsecond".encode())
    source = await upload(core, ALICE, "Makefile", b"all:\n\techo hi\n")  # text by content, no extension
    assert (notes.kind, source.kind) == ("text", "text")
    conversation = await core.conversations.create(ALICE)
    started = await core.writer.start_turn(conversation.id, ALICE, "", None, "en", attachments=[notes.id, source.id])
    await core.finish(ALICE, started)
    sent = upstream.chat_requests("--- file: notes.md ---")[-1]["messages"][-1]["content"]
    assert "# First line\nsecond" in sent and "echo hi" in sent
    assert (await core.store.get_conversation(ALICE, conversation.id)).title == "notes.md"


async def test_chinese_and_windows_text_files_are_read_and_kept_as_utf8(core: Core) -> None:
    """A GBK (GB18030) file, as older Chinese editors save, and a UTF-16 one with its BOM (Windows Notepad)
    are text: read, and kept (and served) as UTF-8. Binary data is no text in any of these."""
    gbk = await upload(core, ALICE, "笔记.txt", "第一行：你好，世界\n第二行".encode("gbk"))
    utf16 = await upload(core, ALICE, "notes.txt", "\ufeffHello 世界\r\nline two".encode("utf-16-le"))
    assert (gbk.kind, utf16.kind) == ("text", "text")
    conversation = await core.conversations.create(ALICE)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "read these", None, "en",
                                                          attachments=[gbk.id, utf16.id]))
    _, data = await core.uploads.download(ALICE, conversation.id, gbk.id)
    assert data.decode("utf-8") == "第一行：你好，世界\n第二行"
    _, data = await core.uploads.download(ALICE, conversation.id, utf16.id)
    assert data.decode("utf-8") == "Hello 世界\r\nline two"
    with pytest.raises(UnsupportedAttachment):
        await upload(core, ALICE, "noise.txt", bytes(range(128, 256)) * 40)


async def test_a_pdf_of_many_pages_is_read_up_to_its_page_bound_and_says_so(core: Core) -> None:
    from webapp.core.decoding import PDF_MAX_PAGES

    many = await upload(core, ALICE, "many.pdf", pdf_bytes([f"p{n}" for n in range(PDF_MAX_PAGES + 40)]))
    assert (many.pages, many.read) == (PDF_MAX_PAGES + 40, PDF_MAX_PAGES) and many.cut


async def test_a_large_non_jpeg_image_is_refused_before_it_is_decoded(core: Core) -> None:
    from webapp.core.decoding import OTHER_MAX_PIXELS

    side = int(OTHER_MAX_PIXELS ** 0.5) + 10  # (a PNG this size decodes whole: refused from its header)
    with pytest.raises(UnreadableAttachment):
        await upload(core, ALICE, "wide.png", bomb_png(side))


@pytest.mark.parametrize("name, data, error", [
    ("cat.png", b"just text, not a png", UnsupportedAttachment),
    ("notes.txt", image_bytes(10, 10), UnsupportedAttachment),
    ("drawing.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", UnsupportedAttachment),
    ("program.exe", b"MZ\x90\x00\x03\x00\x00\x00", UnsupportedAttachment),
    ("report.pdf", b"%PDF-1.4 this is not really a pdf", UnreadableAttachment),
    ("secret.pdf", encrypted_pdf(), UnreadableAttachment),
    ("bomb.png", bomb_png(), UnreadableAttachment),
    ("broken.png", image_bytes(300, 300)[:200], UnreadableAttachment),
    ("empty.txt", b"", EmptyAttachment),
    ("blank.txt", b"  \n ", EmptyAttachment),
])
async def test_bad_files_are_refused_and_nothing_is_stored(core: Core, name: str, data: bytes, error: type) -> None:
    with pytest.raises(error):
        await upload(core, ALICE, name, data)
    assert await uploads_left(core, ALICE) == {}


async def test_a_file_over_the_limit_is_refused_naming_the_limit(core: Core) -> None:
    core.settings.max_attachment_bytes = 2_000_000
    with pytest.raises(AttachmentTooLarge) as refused:
        await upload(core, ALICE, "big.txt", b"a" * 2_000_001)
    assert refused.value.params == {"name": "big.txt", "limit": 2.0}
    with pytest.raises(TooManyAttachments):
        core.uploads.check_count(core.settings.max_attachments + 1)


@pytest.mark.parametrize("hostile, clean", [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\evil.txt", "evil.txt"),
    ("a\x00b\nc\r\x1b[31m.txt", "abc[31m.txt"),
    ("\u202egnp.txt", "gnp.txt"),  # a right-to-left override would show it as "txt.png"
    ("...", "file"),
    ("<img src=x onerror=alert(1)>.txt", "<img src=x onerror=alert(1)>.txt"),  # kept; templates escape it
    ("x" * 300 + ".md", "x" * 117 + ".md"),
])
def test_hostile_names_lose_paths_and_control_characters(hostile: str, clean: str) -> None:
    assert clean_name(hostile) == clean


async def test_another_users_upload_or_a_made_up_id_is_not_found(core: Core) -> None:
    bobs = await upload(core, BOB, "bob.txt", b"bob's notes")
    conversation = await core.conversations.create(ALICE)
    for ids in ([bobs.id], ["f_0123456789abcdef"], ["../../x"], ["f_0123*"]):
        with pytest.raises(AttachmentNotFound):
            await core.writer.start_turn(conversation.id, ALICE, "hello", None, "en", attachments=ids)
    assert len(await uploads_left(core, BOB)) == 3  # still Bob's, untouched
    with pytest.raises(AttachmentNotFound):
        await core.uploads.download(ALICE, conversation.id, bobs.id)


async def test_regenerate_and_edit_send_the_files_again(core: Core, upstream) -> None:
    doc = await upload(core, ALICE, "spec.txt", b"the spec's first line\nmore")
    conversation = await core.conversations.create(ALICE)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "regen-marker", None, "en",
                                                          attachments=[doc.id]))
    await core.finish(ALICE, await core.writer.regenerate(conversation.id, ALICE, "en"))
    assert all("the spec's first line" in r["last_user_message"] for r in upstream.chat_requests("regen-marker"))
    assert len(upstream.chat_requests("regen-marker")) == 2
    asked = (await core.history(ALICE, conversation.id))[-2]
    await core.finish(ALICE, await core.writer.edit(conversation.id, ALICE, asked.id, "edited-marker", "en"))
    assert "the spec's first line" in upstream.chat_requests("edited-marker")[-1]["last_user_message"]
    edited = (await core.history(ALICE, conversation.id))[-2]
    assert edited.attachments == [doc]
    await core.finish(ALICE, await core.writer.edit(conversation.id, ALICE, edited.id, "removed-marker", "en",
                                                    attachments=[]))
    assert "spec.txt" not in upstream.chat_requests("removed-marker")[-1]["last_user_message"]


async def test_files_go_with_their_conversation_and_come_back_with_undo(core: Core) -> None:
    doc = await upload(core, ALICE, "a.txt", b"kept until deleted")
    conversation = await core.conversations.create(ALICE)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "hi", None, "en",
                                                          attachments=[doc.id]))
    files_key = core.store.keys.files(ALICE, conversation.id)
    assert 0 < await core.store.redis.ttl(files_key) <= core.store.conversation_ttl
    await core.store.delete_undoably(conversation, keep_seconds=30)
    assert not await core.store.redis.exists(files_key)
    await core.store.undo_delete(ALICE, conversation.id)
    assert (await core.uploads.download(ALICE, conversation.id, doc.id))[1] == b"kept until deleted"
    await core.store.delete_conversation(conversation)
    assert not await core.store.redis.exists(files_key)


async def test_files_count_in_the_storage_quota(core: Core) -> None:
    before = await core.store.measure_usage(ALICE)
    await upload(core, ALICE, "photo.jpg", image_bytes(1500, 1000, "JPEG", color=None))
    measured = await core.store.measure_usage(ALICE)
    assert measured > before + 1000
    core.quota.quota_bytes = measured + 1000
    with pytest.raises(StorageFull):
        await upload(core, ALICE, "more.txt", b"y" * 5000)


def test_the_demo_model_says_what_it_received() -> None:
    png = base64.b64encode(image_bytes(640, 480, "JPEG")).decode()
    own, received = demo_received([
        {"type": "text", "text": "look\n\n--- file: a.csv ---\nname,size\n1,2\n--- end of a.csv ---"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{png}"}},
    ])
    assert own == "look"
    assert received == ["`a.csv`: name,size", "image 640×480 (image/jpeg)"]


async def test_export_and_import_carry_the_files_as_base64(core: Core) -> None:
    from webapp.base.errors import InvalidImport
    from webapp.core.export_format import ExportFile

    core.settings.openai_vision_models = "fake-model"
    photo = await upload(core, ALICE, "p.png", image_bytes(64, 48))
    doc = await upload(core, ALICE, "d.txt", b"doc text")
    conversation = await core.conversations.create(ALICE)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "see", None, "en",
                                                          attachments=[photo.id, doc.id]))
    exported = await core.portability.everything(ALICE)
    [record] = exported["conversations"]
    assert {f["id"] for f in record["files"]} == {photo.id, doc.id}
    assert [f["data"] for f in record["files"] if f["id"] == doc.id] == [base64.b64encode(b"doc text").decode()]
    ids, _ = await core.portability.import_(BOB, ExportFile.model_validate(exported))
    imported = await core.history(BOB, ids[0])
    assert [a.id for a in imported[-2].attachments] == [photo.id, doc.id]
    assert (await core.uploads.download(BOB, ids[0], doc.id))[1] == b"doc text"
    # an edited export cannot make an SVG pass for an image
    svg = base64.b64encode(b"<svg onload=alert(1)>").decode()
    record["files"][0].update(kind="image", data=svg, type="image/svg+xml")
    with pytest.raises(InvalidImport):
        await core.portability.import_(BOB, ExportFile.model_validate(exported))


async def test_a_message_of_files_only_can_be_edited_with_no_text_but_not_emptied(core: Core) -> None:
    from webapp.base.errors import EmptyMessage

    doc = await upload(core, ALICE, "only.txt", b"just a file")
    conversation = await core.conversations.create(ALICE)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "", None, "en", attachments=[doc.id]))
    asked = (await core.history(ALICE, conversation.id))[-2]
    await core.finish(ALICE, await core.writer.edit(conversation.id, ALICE, asked.id, "", "en"))
    edited = (await core.history(ALICE, conversation.id))[-2]
    assert (edited.content, edited.attachments) == ("", [doc])
    with pytest.raises(EmptyMessage):
        await core.writer.edit(conversation.id, ALICE, edited.id, "  ", "en", attachments=[])
