"""/v1/send and /v1/send/bulk with `template`: rendered at accept time, arriving rendered at a real SMTP
sink through the real dispatchers; the message records the template id and version."""

from __future__ import annotations

import re

from tests.pipeline.conftest import dispatch_idle, wait_for

NEWSLETTER_MJML = """<mjml><mj-head><mj-style inline="inline">.lead { color: #123456; }</mj-style></mj-head>
<mj-body><mj-section><mj-column>
<mj-text css-class="lead">Hello {{ name }}</mj-text>
<mj-button href="https://acme.com/offer">See the offer</mj-button>
</mj-column></mj-section></mj-body></mjml>"""


async def create(client, headers, body) -> dict:
    response = await client.post("/v1/templates", json=body, headers=headers)
    assert response.status == 201, await response.text()
    return await response.json()


async def test_a_template_send_arrives_rendered_and_records_the_version(client, admin, sink, smtp_server):
    template = await create(
        client,
        admin,
        {
            "name": "Welcome",
            "subject": "Welcome, {{ first_name }}",
            "html": "<p>Hi {{ first_name }}</p>",
            "variables": {"first_name": {"type": "string", "required": True}},
        },
    )
    body = {
        "from": "Acme <hello@acme.com>",
        "to": "ana@example.com",
        "template": {"id": template["id"], "variables": {"first_name": "Ana <3"}},
    }
    response = await client.post("/v1/send", json=body, headers=admin)
    assert response.status == 202, await response.text()
    message_id = (await response.json())["id"]
    await wait_for(lambda: len(sink.deliveries) == 1)
    parsed = sink.deliveries[0].parsed()
    assert parsed["Subject"] == "Welcome, Ana <3"
    assert parsed.get_body(("html",)).get_content().strip() == "<p>Hi Ana &lt;3</p>"
    assert parsed.get_body(("plain",)).get_content().strip() == "Hi Ana <3"
    view = await (await client.get(f"/v1/messages/{message_id}", headers=admin)).json()
    assert view["metadata"] == {"template_id": template["id"], "template_version": "1"}


async def test_the_mjml_version_arrives_responsive_with_inlined_css_and_text(
    client, admin, sink, smtp_server
):
    template = await create(client, admin, {"name": "News", "subject": "News", "html": "<p>{{ name }}</p>"})
    changed = await client.patch(
        f"/v1/templates/{template['id']}", json={"html": None, "mjml": NEWSLETTER_MJML}, headers=admin
    )
    assert (await changed.json())["version"] == 2
    body = {
        "from": "hello@acme.com",
        "to": "bo@example.com",
        "subject": "Overridden",
        "template": {"id": template["id"], "variables": {"name": "Bo"}},
    }
    assert (await client.post("/v1/send", json=body, headers=admin)).status == 202
    await wait_for(lambda: len(sink.deliveries) == 1)
    parsed = sink.deliveries[0].parsed()
    html = parsed.get_body(("html",)).get_content()
    assert parsed["Subject"] == "Overridden"
    assert "@media" in html and "Hello Bo" in html
    assert re.search(r'style="[^"]*color: ?#123456', html), "the mj-style class is inlined"
    text = parsed.get_body(("plain",)).get_content()
    assert "Hello Bo" in text and "See the offer" in text and "<" not in text


async def test_send_errors_point_into_the_template(client, admin, smtp_server):
    template = await create(
        client,
        admin,
        {"name": "t", "html": "{{ n }}", "variables": {"n": {"type": "string", "required": True}}},
    )
    base = {"from": "hello@acme.com", "to": "ana@example.com"}
    missing = await client.post("/v1/send", json={**base, "template": {"id": template["id"]}}, headers=admin)
    assert missing.status == 422
    problem = await missing.json()
    assert problem["code"] == "template_error"
    assert problem["errors"][0]["pointer"] == "#/template/variables/n"
    unknown = await client.post("/v1/send", json={**base, "template": {"id": "tpl_nope"}}, headers=admin)
    assert (await unknown.json())["errors"][0]["code"] == "template_not_found"
    old = await client.post(
        "/v1/send",
        json={**base, "template": {"id": template["id"], "version": 9, "variables": {"n": "x"}}},
        headers=admin,
    )
    assert (await old.json())["errors"][0]["pointer"] == "#/template/version"


async def test_bulk_with_per_item_templates(client, admin, redis, sink, smtp_server):
    hello = await create(
        client, admin, {"name": "hello", "subject": "Hello {{ n }}", "html": "<p>{{ n }}</p>"}
    )
    bye = await create(client, admin, {"name": "bye", "subject": "Bye {{ n }}", "html": "<p>bye {{ n }}</p>"})
    messages = [
        {
            "from": "hello@acme.com",
            "to": f"r{i}@example.com",
            "template": {"id": t["id"], "variables": {"n": i}},
        }
        for i, t in enumerate([hello, bye] * 15)
    ]
    messages.append({"from": "hello@acme.com", "to": "x@example.com", "template": {"id": "tpl_missing"}})
    response = await client.post(
        "/v1/send/bulk", json={"messages": messages, "validation": "permissive"}, headers=admin
    )
    answer = await response.json()
    assert response.status == 202 and answer["accepted"] == 30 and answer["rejected"] == 1
    assert answer["data"][30]["error"]["errors"][0]["pointer"] == "#/messages/30/template/id"
    await wait_for(lambda: len(sink.deliveries) == 30)
    assert await wait_for(lambda: dispatch_idle(redis))
    subjects = sorted(d.parsed()["Subject"] for d in sink.deliveries)
    assert subjects == sorted([f"Hello {i}" for i in range(0, 30, 2)] + [f"Bye {i}" for i in range(1, 30, 2)])
