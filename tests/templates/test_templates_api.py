"""/v1/templates on real Redis through the app: versions, preview, errors with pointers, no half-saves."""

from __future__ import annotations

WELCOME = {
    "name": "Welcome",
    "subject": "Welcome, {{ first_name | default: 'friend' }}",
    "html": "<p>Hi {{ first_name }}</p>",
    "variables": {"first_name": {"type": "string", "required": True}},
}


async def create(client, headers, body=WELCOME) -> dict:
    response = await client.post("/v1/templates", json=body, headers=headers)
    assert response.status == 201, await response.text()
    return await response.json()


async def test_create_get_list_and_render(client, admin):
    created = await create(client, admin)
    assert created["id"].startswith("tpl_") and created["version"] == 1 and created["object"] == "template"
    got = await (await client.get(f"/v1/templates/{created['id']}", headers=admin)).json()
    assert got == created
    listed = await (await client.get("/v1/templates", headers=admin)).json()
    assert [t["id"] for t in listed["data"]] == [created["id"]]
    response = await client.post(
        f"/v1/templates/{created['id']}/render", json={"variables": {"first_name": "<Ana>"}}, headers=admin
    )
    assert response.status == 200
    assert await response.json() == {
        "subject": "Welcome, <Ana>",
        "html": "<p>Hi &lt;Ana&gt;</p>",
        "text": "Hi <Ana>\n",
    }


async def test_versions_are_immutable(client, admin):
    created = await create(client, admin)
    path = f"/v1/templates/{created['id']}"
    changed = await (
        await client.patch(path, json={"html": "<p>Hello {{ first_name }}</p>"}, headers=admin)
    ).json()
    assert changed["version"] == 2
    same = await (
        await client.patch(path, json={"html": "<p>Hello {{ first_name }}</p>"}, headers=admin)
    ).json()
    assert same["version"] == 2  # no change, no new version
    versions = await (await client.get(f"{path}/versions", headers=admin)).json()
    assert [(v["version"], v["html"]) for v in versions["data"]] == [
        (2, "<p>Hello {{ first_name }}</p>"),
        (1, "<p>Hi {{ first_name }}</p>"),
    ]
    one = await client.post(
        f"{path}/render", json={"variables": {"first_name": "A"}, "version": 1}, headers=admin
    )
    assert (await one.json())["html"] == "<p>Hi A</p>"
    newest = await client.post(f"{path}/render", json={"variables": {"first_name": "A"}}, headers=admin)
    assert (await newest.json())["html"] == "<p>Hello A</p>"
    page = await (await client.get(f"{path}/versions?limit=1", headers=admin)).json()
    assert page["has_more"] and [v["version"] for v in page["data"]] == [2]
    rest = await (
        await client.get(f"{path}/versions?limit=1&cursor={page['next_cursor']}", headers=admin)
    ).json()
    assert [v["version"] for v in rest["data"]] == [1] and not rest["has_more"]


async def test_a_bad_template_is_refused_with_pointers_and_nothing_is_saved(client, admin):
    body = {**WELCOME, "subject": "{{ x | nosuch }}", "html": "<p>\n{% if %}</p>"}
    response = await client.post("/v1/templates", json=body, headers=admin)
    assert response.status == 422
    problem = await response.json()
    assert problem["code"] == "template_error"
    assert {e["pointer"] for e in problem["errors"]} == {"#/subject", "#/html"}
    assert any("line 2" in e["detail"] for e in problem["errors"])
    assert (await (await client.get("/v1/templates", headers=admin)).json())["data"] == []
    created = await create(client, admin)
    broken = await client.patch(f"/v1/templates/{created['id']}", json={"html": "{% for %}"}, headers=admin)
    assert broken.status == 422 and (await broken.json())["errors"][0]["pointer"] == "#/html"
    assert (await (await client.get(f"/v1/templates/{created['id']}", headers=admin)).json())["version"] == 1


async def test_render_errors_point_at_variables_and_at_caps(client, admin):
    created = await create(client, admin)
    response = await client.post(
        f"/v1/templates/{created['id']}/render", json={"variables": {}}, headers=admin
    )
    assert response.status == 422
    assert [(e["pointer"], e["code"]) for e in (await response.json())["errors"]] == [
        ("#/variables/first_name", "missing_variable")
    ]
    looping = await create(
        client, admin, {"name": "loop", "html": "{% for i in (1..99999999) %}x{% endfor %}"}
    )
    response = await client.post(f"/v1/templates/{looping['id']}/render", json={}, headers=admin)
    assert response.status == 422 and (await response.json())["errors"][0]["pointer"] == "#/html"


async def test_partials_only_from_the_same_workspace_frozen_at_save(client, admin, make_key):
    footer = await create(client, admin, {"name": "footer", "html": "<small>Bye {{ n }}</small>"})
    body = {"name": "main", "html": f"<p>x</p>{{% render '{footer['id']}', n: n %}}"}
    main = await create(client, admin, body)
    await client.patch(f"/v1/templates/{footer['id']}", json={"html": "<b>changed</b>"}, headers=admin)
    rendered = await client.post(
        f"/v1/templates/{main['id']}/render", json={"variables": {"n": "A"}}, headers=admin
    )
    assert (await rendered.json())["html"] == "<p>x</p><small>Bye A</small>"
    other = await make_key(["admin"], workspace="other-ws")
    refused = await client.post("/v1/templates", json=body, headers=other)
    assert refused.status == 422 and (await refused.json())["errors"][0]["code"] == "template_not_found"


async def test_delete_and_scopes(client, admin, make_key):
    created = await create(client, admin)
    reader = await make_key(["read:templates"])
    assert (await client.post("/v1/templates", json=WELCOME, headers=reader)).status == 403
    assert (await client.get(f"/v1/templates/{created['id']}", headers=reader)).status == 200
    assert (await client.delete(f"/v1/templates/{created['id']}", headers=admin)).status == 200
    assert (await client.get(f"/v1/templates/{created['id']}", headers=admin)).status == 404
    assert (await client.delete(f"/v1/templates/{created['id']}", headers=admin)).status == 404
