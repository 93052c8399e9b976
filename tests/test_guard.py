"""The one auth guard: every route of the app but the public ones answers 401 without credentials."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from starlette.routing import Route

from ascrm import Settings, create_app
from ascrm.service.auth.basic import Credential
from ascrm.service.guard import ADMIN, PLATFORM
from tests.support.server import PASSWORD, USER, Server

PREFIX = "/autosecretary"  # the session server's root_path
PUBLIC = {"/health", "/ready"}  # what load balancers ask without credentials


def _every_route() -> Iterator[tuple[str, str]]:
    """(method, path) of every route create_app builds, path parameters filled in, HEAD left out."""
    app = create_app(Settings(root_path=PREFIX, platform_credentials=(Credential(USER, password=PASSWORD),)))
    for route in app.routes:
        assert isinstance(route, Route)
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                yield method, path


ROUTES = sorted(set(_every_route()))


def test_the_walk_finds_every_kind_of_route() -> None:
    paths = {path.removeprefix(PREFIX) for _, path in ROUTES}
    assert {"/CallEvent", "/CallEvent/1", "/admin/calls", "/admin/reload", "/metrics", "/openapi.json"} <= paths
    assert paths >= PUBLIC
    assert any(not path.startswith(PREFIX) for _, path in ROUTES)  # the routes without the prefix too


@pytest.mark.parametrize(("method", "path"), [route for route in ROUTES if route[1].removeprefix(PREFIX) not in PUBLIC])
def test_every_non_public_route_answers_401_without_credentials(server: Server, method: str, path: str) -> None:
    origin = server.base_url.removesuffix(PREFIX)
    with httpx.Client(base_url=origin, timeout=10) as anonymous:
        response = anonymous.request(method, path, json={} if method in ("POST", "PUT") else None)
    assert response.status_code == 401, (method, path, response.text)
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    assert response.json()["error"] == "unauthorized"
    realm = PLATFORM.realm if "/CallEvent" in path else ADMIN.realm
    assert response.headers["www-authenticate"] == f'Basic realm="{realm}", charset="UTF-8"'


@pytest.mark.parametrize("path", sorted(PUBLIC))
def test_public_routes_answer_without_credentials(server: Server, path: str) -> None:
    origin = server.base_url.removesuffix(PREFIX)
    with httpx.Client(base_url=origin, timeout=10) as anonymous:
        assert anonymous.get(PREFIX + path).status_code == 200
