"""Custom roles and the model choice, over real HTTP: what the fake model receives is the proof.

The fake upstream's `[[whoami]]` reply names the model, temperature and system prompt its
request carried, so each test checks the upstream request the app really made.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from bs4 import BeautifulSoup

from tests.conftest import SYSTEM_PROMPTS, api_turn, create_session, messages_of, unique
from tests.fake_upstream import parse_whoami

EN = {"Accept-Language": "en-US,en"}
HX = {"HX-Request": "true"}


def new_role(client: httpx.Client, **fields: object) -> dict:
    body = {"name": unique("role"), "description": "a test role", "system_prompt": unique("You are a pirate"),
            **fields}
    response = client.post("/api/roles", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def whoami(client: httpx.Client, sid: str, role: str | None = None) -> dict:
    turn = api_turn(client, sid, f"{unique('who')} [[whoami]]", role=role)
    assert turn.ended, turn.events
    return parse_whoami(turn.text)


def test_a_custom_roles_prompt_model_and_temperature_reach_the_model(client: httpx.Client) -> None:
    role = new_role(client, model="fake-model-large", temperature=0.3)
    listed = client.get("/api/roles").json()
    assert [r["id"] for r in listed[:3]] == ["assistant", "teacher", "programmer"]  # the built-in ones stay
    assert listed[-1] == role and role["custom"] and role["system_prompt"].startswith("You are a pirate")
    sid = create_session(client, role=role["id"])["id"]
    seen = whoami(client, sid)
    assert seen == {"model": "fake-model-large", "temperature": "0.3", "system": role["system_prompt"]}
    # the reply records who answered, and the badge says it
    reply = messages_of(client, sid)["items"][-1]
    assert (reply["role_id"], reply["role_name"], reply["model"]) == (role["id"], role["name"], "fake-model-large")
    page = BeautifulSoup(client.get(f"/c/{sid}", headers=EN).text, "html.parser")
    assert page.select(".msg--assistant .badge")[-1].get_text() == f"{role['name']} · fake-model-large"
    # a built-in role's reply says its name too, not just "AI"
    other = create_session(client, role="teacher")["id"]
    api_turn(client, other, unique("hello"))
    page = BeautifulSoup(client.get(f"/c/{other}", headers=EN).text, "html.parser")
    assert page.select(".msg--assistant .badge")[-1].get_text() == "AI Teacher · fake-model"


def test_the_model_picked_for_a_conversation_wins_over_the_roles_and_reaches_the_model(
    client: httpx.Client,
) -> None:
    models = client.get("/api/models").json()
    assert models == {"default": "fake-model", "models": ["fake-model", "fake-model-large"]}  # the upstream's list
    sid = create_session(client)["id"]
    assert whoami(client, sid)["model"] == "fake-model"
    assert client.patch(f"/api/sessions/{sid}", json={"model": "fake-model-large"}).json()["model"] == "fake-model-large"
    assert whoami(client, sid)["model"] == "fake-model-large"
    # a role with a model of its own: the user's pick still wins; back to "" and the role's applies
    role = new_role(client, model="fake-model")
    client.patch(f"/api/sessions/{sid}", json={"role": role["id"]})
    assert whoami(client, sid)["model"] == "fake-model-large"
    assert client.patch(f"/api/sessions/{sid}", json={"model": "nope"}).status_code == 400
    client.patch(f"/api/sessions/{sid}", json={"model": ""})
    assert whoami(client, sid) == {"model": "fake-model", "temperature": "none", "system": role["system_prompt"]}
    # the web UI's selector, without JavaScript (a form post) and with htmx (a fragment)
    assert client.post(f"/c/{sid}/model", data={"model": "fake-model-large"}).status_code == 303
    assert whoami(client, sid)["model"] == "fake-model-large"
    fragment = BeautifulSoup(client.post(f"/c/{sid}/model", data={"model": ""}, headers=HX).text, "html.parser")
    assert fragment.select_one("form#model-selector option[selected]")["value"] == ""
    page = BeautifulSoup(client.get(f"/c/{sid}").text, "html.parser")
    assert [o["value"] for o in page.select("#model-selector option")] == ["", "fake-model", "fake-model-large"]


def test_roles_are_validated_limited_per_user_and_escaped(make_client: Callable[..., httpx.Client]) -> None:
    client = make_client(headers=EN)
    for bad in ({"name": "", "system_prompt": "x"}, {"name": "x" * 41, "system_prompt": "x"},
                {"name": "x", "system_prompt": ""}, {"name": "   ", "system_prompt": "x"},
                {"name": "x", "system_prompt": "p" * 4001}, {"name": "x", "system_prompt": "x", "temperature": 3},
                {"name": "x", "description": "d" * 201, "system_prompt": "x"},
                {"name": "x", "system_prompt": "x", "model": "not-offered"}):
        response = client.post("/api/roles", json=bad)
        assert response.status_code in (400, 422), (bad, response.status_code)
    hostile = new_role(client, name="<script>alert(1)</script>", description='"><img src=x onerror=alert(1)>')
    sid = create_session(client, role=hostile["id"])["id"]
    for path in ("/roles", f"/c/{sid}"):
        html = client.get(path).text
        assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<img src=x" not in html
    # at most MAX_ROLES_PER_USER (50) of one's own
    for _ in range(49):
        new_role(client)
    refused = client.post("/api/roles", json={"name": "one too many", "system_prompt": "x"})
    assert refused.status_code == 409 and "50" in refused.json()["detail"]
    assert len(client.get("/api/roles").json()) == 3 + 50


def test_deleting_a_role_in_use_falls_back_to_the_default_and_says_so(client: httpx.Client) -> None:
    role = new_role(client)
    sid = create_session(client, role=role["id"])["id"]
    assert client.patch(f"/api/roles/{role['id']}", json={"system_prompt": "Edited prompt"}).status_code == 200
    assert whoami(client, sid)["system"] == "Edited prompt"
    assert client.delete(f"/api/roles/{role['id']}").status_code == 204
    assert client.get(f"/api/roles/{role['id']}").status_code == 404
    page = BeautifulSoup(client.get(f"/c/{sid}", headers=EN).text, "html.parser")
    assert "custom role was deleted" in page.select_one("#role-missing").get_text()
    assert page.select_one(".roles__name").get_text() == "Assistant"
    assert whoami(client, sid)["system"] == SYSTEM_PROMPTS["assistant"]
    assert client.get(f"/api/sessions/{sid}").json()["role"] == "assistant"  # the turn saved the fallback
    # the earlier reply still says which role wrote it
    replies = [m for m in messages_of(client, sid)["items"] if m["role"] == "assistant" and m["role_name"]]
    assert replies and replies[0]["role_name"] == role["name"]


def test_the_roles_page_works_without_javascript(make_client: Callable[..., httpx.Client]) -> None:
    client = make_client(headers=EN)
    sid = create_session(client)["id"]
    page = BeautifulSoup(client.get(f"/c/{sid}").text, "html.parser")
    link = page.select_one("#manage-roles")["href"]
    assert link == f"/roles?back=/c/{sid}"
    name = unique("Reviewer")
    created = client.post("/roles", data={"name": name, "description": "reads code", "system_prompt": "Review it.",
                                          "model": "", "temperature": "0.5", "back": f"/c/{sid}"})
    assert created.status_code == 303 and created.headers["location"] == f"/roles?back=/c/{sid}"
    roles_page = BeautifulSoup(client.get(created.headers["location"]).text, "html.parser")
    assert roles_page.select_one("#roles-back")["href"] == f"/c/{sid}"
    item = next(li for li in roles_page.select("#role-list li") if name in li.get_text())
    role_id = item["id"].removeprefix("role-item-")
    # a form error keeps what was typed
    refused = client.post("/roles", data={"name": "", "system_prompt": "kept text"})
    assert refused.status_code == 422 and "kept text" in refused.text
    assert client.post(f"/roles/{role_id}", data={"name": name, "system_prompt": "Review it twice.",
                                                  "temperature": ""}).status_code == 303
    assert client.get(f"/api/roles/{role_id}").json()["system_prompt"] == "Review it twice."
    # the role selector offers it, and choosing it applies
    page = BeautifulSoup(client.get(f"/c/{sid}").text, "html.parser")
    assert page.select_one(f"#role-{role_id}") is not None
    assert client.post(f"/c/{sid}/role", data={"role": role_id}).status_code == 303
    assert whoami(client, sid)["system"] == "Review it twice."
    assert client.post(f"/roles/{role_id}/delete", data={}).status_code == 303
    assert client.get(f"/api/roles/{role_id}").status_code == 404
