"""Finding (issue #11, the worst input for the send path): `template.variables` was typed `dict[str, Any]`
and decoded with the body, so 9 MB of `[[],[],...]` became three million lists on the event loop
(seconds). Variables now stay raw until the render checks their size (64 KiB) and decodes them."""

from __future__ import annotations

from schemas.send import MAX_TEMPLATE_VARIABLES_BYTES

MESSAGE = {"from": "Acme <hello@acme.com>", "to": "ana@example.com"}


async def _template(client, headers) -> str:
    sandbox = {"name": "sandbox", "provider": "sandbox"}
    assert (await client.post("/v1/sending-servers", json=sandbox, headers=headers)).status == 201
    body = {"name": "Welcome", "subject": "Hi {{ name }}", "html": "<p>Hi {{ name }}</p>"}
    response = await client.post("/v1/templates", json=body, headers=headers)
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


def _many_lists(size: int) -> dict:
    return {"name": "Ana", "junk": [[] for _ in range(size // 3)]}


async def test_oversized_template_variables_are_refused_before_they_are_decoded(client, admin):
    template = await _template(client, admin)
    big = {"id": template, "variables": _many_lists(MAX_TEMPLATE_VARIABLES_BYTES + 3)}
    response = await client.post("/v1/send", json={**MESSAGE, "template": big}, headers=admin)
    assert response.status == 422, await response.text()
    [error] = (await response.json())["errors"]
    assert (error["pointer"], error["code"]) == ("#/template/variables", "variables_too_large")

    bulk = {"messages": [{**MESSAGE, "template": {"id": template}}, {**MESSAGE, "template": big}]}
    response = await client.post("/v1/send/bulk", json={**bulk, "validation": "permissive"}, headers=admin)
    assert response.status == 202, await response.text()
    first, second = (await response.json())["data"]
    assert "id" in first and second["error"]["errors"][0]["pointer"] == "#/messages/1/template/variables"

    preview = await client.post(
        f"/v1/templates/{template}/render", json={"variables": big["variables"]}, headers=admin
    )
    assert preview.status == 422 and (await preview.json())["errors"][0]["code"] == "variables_too_large"


async def test_template_variables_within_the_bound_render_as_before(client, admin):
    template = await _template(client, admin)
    ref = {"id": template, "variables": _many_lists(MAX_TEMPLATE_VARIABLES_BYTES // 2)}
    response = await client.post("/v1/send", json={**MESSAGE, "template": ref}, headers=admin)
    assert response.status == 202, await response.text()
    preview = await client.post(
        f"/v1/templates/{template}/render", json={"variables": {"name": "Bo"}}, headers=admin
    )
    assert (await preview.json())["subject"] == "Hi Bo"
    wrong = await client.post(f"/v1/templates/{template}/render", json={"variables": [1]}, headers=admin)
    assert wrong.status == 422 and (await wrong.json())["errors"][0]["pointer"] == "#/variables"
