from openapi_spec_validator import validate

from ingress.context import SERVICES


async def test_openapi_validates_and_covers_every_route(client):
    response = await client.get("/v1/openapi.json")
    assert response.status == 200
    document = await response.json()
    validate(document)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.method not in ("HEAD", "*")
    }
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert served == documented
    create = document["paths"]["/v1/api-keys"]["post"]
    assert create["x-required-scope"] == "admin"
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/CreateApiKey")
    assert "422" in create["responses"] and "401" in create["responses"]


async def test_metrics_count_requests(client, admin):
    await client.get("/v1/api-keys", headers=admin)
    text = await (await client.get("/metrics")).text()
    assert 'mailers_http_requests_total{method="GET",route="/v1/api-keys",status="200"} 1.0' in text
    assert client.app[SERVICES].metrics is not None


async def test_readyz_reports_dependencies(client):
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "checks": {"redis": True, "actors": True}}
