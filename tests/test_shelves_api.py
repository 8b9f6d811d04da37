"""Pins, the archive, folders and batches over HTTP on the real app (issue 37): the JSON API, the
sidebar's forms without JavaScript, export and import, and the refusals (CSRF, cross-site, another
user's ids, hostile input). Also on the Redis Cluster pass (.ci/run)."""

from __future__ import annotations

from typing import Any, Callable

import httpx
import pytest

from tests.conftest import api_turn, create_session


def patch(client: httpx.Client, sid: str, **body: Any) -> httpx.Response:
    return client.patch(f"/api/sessions/{sid}", json=body)


def listed(client: httpx.Client, **params: Any) -> list[str]:
    response = client.get("/api/sessions", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def new_folder(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.post("/api/folders", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


def test_pin_archive_and_folder_by_patch_and_the_lists_that_follow(client: httpx.Client) -> None:
    a, b, c = (create_session(client)["id"] for _ in range(3))
    folder = new_folder(client, "Work")

    assert patch(client, a, pinned=True).json()["pinned"] is True
    archived = patch(client, b, archived=True).json()
    assert archived["archived"] is True and archived["pinned"] is False
    moved = patch(client, c, folder_id=folder["id"]).json()
    assert moved["folder_id"] == folder["id"]

    assert listed(client) == [c, a]  # archived ones only in the archive
    assert listed(client, archived="true") == [b]
    assert listed(client, folder=folder["id"]) == [c]
    assert listed(client, q="is:pinned") == [a]
    assert listed(client, q="in:archived") == [b]
    assert listed(client, q="folder:work") == [c]

    assert patch(client, c, folder_id=None).json()["folder_id"] is None
    assert patch(client, b, archived=False).json()["archived"] is False
    assert set(listed(client)) == {a, b, c}


def test_sending_in_an_archived_conversation_unarchives_it(client: httpx.Client) -> None:
    sid = create_session(client)["id"]
    patch(client, sid, archived=True)
    api_turn(client, sid, "back to it")
    assert client.get(f"/api/sessions/{sid}").json()["archived"] is False
    assert listed(client, archived="true") == []


def test_folders_are_listed_renamed_and_deleted_keeping_their_conversations(client: httpx.Client) -> None:
    folder = new_folder(client, "Drafts")
    sid = create_session(client)["id"]
    patch(client, sid, folder_id=folder["id"])
    renamed = client.patch(f"/api/folders/{folder['id']}", json={"name": "Final"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Final"
    assert client.get("/api/folders").json() == [{"id": folder["id"], "name": "Final"}]
    assert client.post("/api/folders", json={"name": "FINAL"}).status_code == 409  # names are unique
    assert client.delete(f"/api/folders/{folder['id']}").status_code == 204
    assert client.get("/api/folders").json() == []
    assert client.get(f"/api/sessions/{sid}").json()["folder_id"] is None
    assert sid in listed(client)
    assert client.delete(f"/api/folders/{folder['id']}").status_code == 404


def test_bulk_deletes_with_one_undo_archives_moves_and_exports(client: httpx.Client) -> None:
    ids = [create_session(client)["id"] for _ in range(4)]
    folder = new_folder(client, "Batch")

    moved = client.post("/api/sessions/bulk", json={"action": "move", "ids": ids[:2], "folder_id": folder["id"]})
    assert moved.status_code == 200 and moved.json()["done"] == 2
    assert set(listed(client, folder=folder["id"])) == set(ids[:2])

    exported = client.post("/api/sessions/bulk", json={"action": "export", "ids": ids[:2]}).json()["export"]
    assert exported["format"] == "chat-export" and len(exported["conversations"]) == 2
    assert {c["folder"] for c in exported["conversations"]} == {"Batch"}

    deleted = client.post("/api/sessions/bulk", json={"action": "delete", "ids": ids[1:3]}).json()
    assert deleted["done"] == 2
    assert set(listed(client)) == {ids[0], ids[3]}
    restored = client.post("/api/sessions/bulk", json={"action": "restore", "ids": deleted["ids"]})
    assert restored.json()["done"] == 2
    assert set(listed(client)) == set(ids)
    assert client.get(f"/api/sessions/{ids[1]}").json()["folder_id"] == folder["id"]  # back where it was kept

    archived = client.post("/api/sessions/bulk", json={"action": "archive", "ids": ids})
    assert archived.json()["done"] == 4 and listed(client) == []


def test_export_and_import_carry_pins_archive_and_folders(make_client: Callable[..., httpx.Client]) -> None:
    source, target = make_client(), make_client()
    pinned, archived, filed = (create_session(source)["id"] for _ in range(3))
    folder = new_folder(source, "Carried")
    patch(source, pinned, pinned=True, title="pinned one")
    patch(source, archived, archived=True, title="archived one")
    patch(source, filed, folder_id=folder["id"], title="filed one")
    data = source.get("/api/export").content

    imported = target.post("/api/import", content=data, headers={"Content-Type": "application/json"})
    assert imported.status_code == 201, imported.text
    sessions = {s["title"]: s for s in target.get("/api/sessions", params={"limit": 100}).json()["items"]}
    assert sessions["pinned one"]["pinned"] is True
    folders = target.get("/api/folders").json()
    assert [f["name"] for f in folders] == ["Carried"]
    assert sessions["filed one"]["folder_id"] == folders[0]["id"]
    archive = target.get("/api/sessions", params={"archived": "true"}).json()["items"]
    assert [s["title"] for s in archive] == ["archived one"]


def test_another_users_conversations_and_folders_are_not_found(make_client: Callable[..., httpx.Client]) -> None:
    alice, mallory = make_client(), make_client()
    sid = create_session(alice)["id"]
    folder = new_folder(alice, "Private")
    mine = create_session(mallory)["id"]

    assert patch(mallory, sid, pinned=True).status_code == 404
    assert patch(mallory, sid, archived=True).status_code == 404
    assert patch(mallory, mine, folder_id=folder["id"]).status_code == 404  # her folder is none of his
    assert mallory.patch(f"/api/folders/{folder['id']}", json={"name": "mine"}).status_code == 404
    assert mallory.delete(f"/api/folders/{folder['id']}").status_code == 404
    bulk = mallory.post("/api/sessions/bulk", json={"action": "delete", "ids": [sid]})
    assert bulk.status_code == 200 and bulk.json()["done"] == 0
    exported = mallory.post("/api/sessions/bulk", json={"action": "export", "ids": [sid]}).json()
    assert exported["export"]["conversations"] == []
    assert mallory.post("/api/sessions/bulk", json={"action": "restore", "ids": [sid]}).status_code == 410
    # the sidebar's forms alike
    mallory.get("/")
    assert mallory.post(f"/c/{sid}/keep", data={"do": "pin"}).status_code == 404
    assert mallory.get(f"/c/{sid}/move").status_code == 404
    assert mallory.post(f"/c/{mine}/keep", data={"what": "folder", "value": folder["id"]}).status_code == 404
    assert mallory.post(f"/folders/{folder['id']}/rename", data={"name": "x"}).status_code == 404
    assert mallory.post(f"/folders/{folder['id']}/delete").status_code == 404
    assert mallory.post("/bulk", data={"action": "archive", "ids": [sid]}).status_code == 303
    assert mallory.post("/bulk/export", data={"ids": [sid]}).json()["conversations"] == []
    assert alice.get(f"/api/sessions/{sid}").json()["pinned"] is False
    assert alice.get(f"/api/sessions/{sid}").json()["archived"] is False
    assert alice.get("/api/folders").json() == [folder]
    assert mallory.get("/api/sessions", params={"folder": folder["id"]}).status_code == 404


@pytest.mark.parametrize("body, status", [
    ({"name": ""}, 422),
    ({"name": "   "}, 422),
    ({"name": "x" * 41}, 422),
    ({"name": "x" * 201}, 422),
    ({"name": 5}, 422),
    ({}, 422),
])
def test_bad_folder_names_are_refused_and_nothing_is_stored(client: httpx.Client, body: dict[str, Any],
                                                            status: int) -> None:
    response = client.post("/api/folders", json=body)
    assert response.status_code == status, response.text
    assert "detail" in response.json() or "error" in response.json()
    assert client.get("/api/folders").json() == []


def test_hostile_ids_and_batches_are_refused(client: httpx.Client) -> None:
    sid = create_session(client)["id"]
    assert patch(client, sid, folder_id="../../etc").status_code == 400
    assert patch(client, sid, folder_id="x" * 37).status_code == 422
    assert client.delete("/api/folders/not-an-id").status_code == 400
    assert client.post("/api/sessions/bulk", json={"action": "delete", "ids": ["*"]}).status_code == 400
    assert client.post("/api/sessions/bulk", json={"action": "explode", "ids": [sid]}).status_code == 422
    assert client.post("/api/sessions/bulk", json={"action": "delete", "ids": []}).status_code == 422
    too_many = [sid] * 201
    assert client.post("/api/sessions/bulk", json={"action": "archive", "ids": too_many}).status_code == 422
    assert client.get("/api/sessions", params={"folder": "{x}"}).status_code == 400
    assert client.get(f"/api/sessions/{sid}").json()["archived"] is False


def test_cross_site_requests_and_forms_without_a_token_are_refused(make_client: Callable[..., httpx.Client]) -> None:
    client = make_client()
    sid = create_session(client)["id"]
    folder = new_folder(client, "Guarded")
    evil = {"Origin": "https://evil.example"}
    assert client.patch(f"/api/sessions/{sid}", json={"pinned": True}, headers=evil).status_code == 403
    assert client.post("/api/folders", json={"name": "evil"}, headers=evil).status_code == 403
    assert client.delete(f"/api/folders/{folder['id']}", headers=evil).status_code == 403
    assert client.post("/api/sessions/bulk", json={"action": "delete", "ids": [sid]}, headers=evil).status_code == 403
    tokenless = make_client(page_token=False)
    tokenless.cookies.update(client.cookies)
    for path, data in ((f"/c/{sid}/keep", {"do": "pin"}), ("/folders", {"name": "x"}),
                       (f"/folders/{folder['id']}/delete", {}), ("/bulk", {"action": "delete", "ids": sid}),
                       ("/bulk/export", {"ids": sid})):
        assert tokenless.post(path, data=data).status_code == 403, path
    assert client.get(f"/api/sessions/{sid}").json()["pinned"] is False
    assert [f["name"] for f in client.get("/api/folders").json()] == ["Guarded"]


def test_the_sidebar_forms_work_without_javascript(client: httpx.Client) -> None:
    keep, a, b = (create_session(client)["id"] for _ in range(3))
    client.get(f"/c/{a}")  # the identity cookie and its page
    assert client.post("/folders", data={"name": "<script>alert(1)</script>"},
                       headers={"Referer": f"http://x/c/{a}"}).status_code == 303
    again = client.post("/folders", data={"name": "<script>alert(1)</script>"})  # the same form twice
    assert again.status_code == 303
    [folder] = client.get("/api/folders").json()
    pin = client.post(f"/c/{a}/keep", data={"do": "pin"})
    assert pin.status_code == 303
    assert client.post(f"/c/{b}/keep", data={"what": "folder", "value": folder["id"]}).status_code == 303
    page = client.get(f"/c/{a}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert 'class="shelf shelf--pinned"' in page
    assert client.get(f"/c/{a}/move").status_code == 200
    assert f'id="move-{a}"' in client.get(f"/c/{a}/move").text
    archived = client.post(f"/c/{a}/keep", data={"do": "archive"})
    assert archived.status_code == 303
    assert f"conv-{a}" in client.get(f"/c/{b}?archived=1").text
    bulk = client.post("/bulk", data={"action": "delete", "ids": [a, b]}, headers={"Referer": f"http://x/c/{b}"})
    # the page it came from is gone: the newest one left, with the batch's one Undo
    assert bulk.status_code == 303 and bulk.headers["location"] == f"/c/{keep}?batch={a},{b}"
    assert 'data-undo-batch' in client.get(bulk.headers["location"]).text
    assert client.get("/api/sessions", params={"archived": "true"}).json()["items"] == []
    undo = client.post("/bulk", data={"action": "restore", "ids": [a, b]})
    assert undo.status_code == 303
    assert client.get(f"/api/sessions/{a}").status_code == 200
    exported = client.post("/bulk/export", data={"ids": [a, b]})
    assert exported.status_code == 200 and len(exported.json()["conversations"]) == 2
    assert client.post(f"/c/{a}/keep", data={"do": "nonsense"}).status_code == 422
