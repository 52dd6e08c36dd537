"""A path the API serves, asked with a method it does not take, answers 405 naming every method
the path takes (RFC 9110, 15.5.6), in the API's error shape."""

import pytest

from tests.e2e.conftest import World


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        # Two routes share this path (list and create): both methods are named.
        ("DELETE", "/v1/orders", "GET, HEAD, POST"),
        ("OPTIONS", "/v1/orders", "GET, HEAD, POST"),
        ("PUT", "/v1/orders/1/pay", "POST"),
        ("DELETE", "/v1/admin/switches", "GET, HEAD, PUT"),
    ],
)
def test_a_method_the_path_does_not_take_is_405_with_every_allowed_method(
    sqlite_world: World, method: str, path: str, allowed: str
) -> None:
    response = sqlite_world.client.request(method, path, headers=sqlite_world.admin)
    assert response.status_code == 405
    assert response.headers["Allow"] == allowed
    assert response.json()["error"]["code"] == "method_not_allowed"
    for listed in allowed.split(", "):
        if listed != "HEAD":
            answered = sqlite_world.client.request(listed, path, headers=sqlite_world.admin)
            assert answered.status_code != 405, (listed, path)


def test_a_path_the_api_does_not_serve_is_404(sqlite_world: World) -> None:
    response = sqlite_world.client.request("DELETE", "/v1/nowhere", headers=sqlite_world.admin)
    assert response.status_code == 404
    assert "Allow" not in response.headers
