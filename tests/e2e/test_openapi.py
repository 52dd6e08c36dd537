"""The OpenAPI document covers every route and error code; the docs page works offline."""

import re

from starlette.routing import Route

from paycell.adapters.http.errors import ALL_ERROR_STATUS, PAYMENT_ERROR_STATUS
from paycell.core.payments.outcomes import PaymentError
from tests.e2e.conftest import World


def test_every_payment_error_has_one_status() -> None:
    assert set(PAYMENT_ERROR_STATUS) == set(PaymentError)
    assert all(400 <= status < 500 for status in PAYMENT_ERROR_STATUS.values())


def test_openapi_documents_every_route_and_code(sqlite_world: World) -> None:
    response = sqlite_world.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    app = sqlite_world.client.app
    served = {
        (method.lower(), route.path)
        for route in app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route) and route.path.startswith("/v1")
        for method in (route.methods or set[str]()) - {"HEAD"}
    }
    documented = {(m, path) for path, item in document["paths"].items() for m in item}
    assert served == documented
    assert set(document["x-error-codes"]) == set(ALL_ERROR_STATUS)
    mentioned = {
        code
        for item in document["paths"].values()
        for operation in item.values()
        for answer in operation["responses"].values()
        for code in ALL_ERROR_STATUS
        if f"`{code}`" in answer["description"]
    }
    assert mentioned == set(ALL_ERROR_STATUS)


def test_docs_page_is_self_contained(sqlite_world: World) -> None:
    page = sqlite_world.client.get("/docs")
    assert page.status_code == 200
    assert "/openapi.json" in page.text
    assert "http://" not in page.text
    assert "https://" not in page.text


def test_every_path_parameter_is_declared(sqlite_world: World) -> None:
    # A path template whose `{name}` is not declared is an invalid OpenAPI document: clients
    # generated from it (and schemathesis) cannot call the route.
    document = sqlite_world.client.get("/openapi.json").json()
    for path, item in document["paths"].items():
        in_template = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == in_template, (method, path)
            assert all(
                p["required"] for p in operation.get("parameters", []) if p["in"] == "path"
            ), (method, path)
