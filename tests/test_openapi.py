"""The OpenAPI document: valid 3.1, naming every route of the app, and describing what a real server answers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jsonschema
import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_spec_validator import validate as validate_spec
from starlette.routing import Route
from werkzeug.datastructures import Headers, ImmutableMultiDict

from ascrm.service.app import create_app
from ascrm.service.openapi import document
from ascrm.service.settings import Settings
from tests.support.server import USER, Server, ServerFactory, platform_config

PREFIX = "/autosecretary"
ADMIN = ("ops", "ops-pässword")
JSON_TYPE = "application/json; charset=UTF-8"
RULES = """
lists:
  vip: {editable: true}
  fixed: ["79990000000"]
rules:
  - id: sales
    on: CallAccepted
    do: {TransferEXT: "1234"}
"""
BROKEN_RULES = "rules:\n  - id: x\n    on: NoSuchEvent\n    do: Hangup\n"


def test_document_is_valid_openapi_31() -> None:
    spec = document()
    assert spec["openapi"].startswith("3.1.")
    validate_spec(spec)


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_every_route_is_documented_and_nothing_else() -> None:
    """Walks the router of create_app, with and without the root_path prefix (HEAD, which Starlette adds
    to every GET route, is left out of the document)."""
    app = create_app(Settings(root_path=PREFIX))
    served = set()
    for route in app.routes:
        assert isinstance(route, Route)
        path = route.path.removeprefix(PREFIX)
        served |= {(_template(path), method.lower()) for method in route.methods or () if method != "HEAD"}
    documented = {
        (_template(path), method)
        for path, item in document()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    }
    assert served == documented


@dataclass
class _Request:
    """An httpx request in openapi-core's request protocol."""

    request: httpx.Request
    parameters: RequestParameters = field(init=False)

    def __post_init__(self) -> None:
        query = ImmutableMultiDict(list(self.request.url.params.multi_items()))
        self.parameters = RequestParameters(query=query, header=Headers(dict(self.request.headers)))

    @property
    def host_url(self) -> str:
        return f"{self.request.url.scheme}://{self.request.url.netloc.decode()}"

    @property
    def path(self) -> str:
        return self.request.url.path

    @property
    def method(self) -> str:
        return self.request.method.lower()

    @property
    def body(self) -> bytes | None:
        try:
            return self.request.content
        except httpx.RequestNotRead:  # a streamed body, already sent
            return None

    @property
    def content_type(self) -> str:
        return self.request.headers.get("content-type", "").lower()


@dataclass
class _Response:
    """An httpx response in openapi-core's response protocol."""

    response: httpx.Response

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return self.response.headers.get("content-type", "").lower()

    @property
    def headers(self) -> Headers:
        return Headers(dict(self.response.headers))

    @property
    def data(self) -> bytes:
        return self.response.content


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, serve_module: ServerFactory) -> Server:
    folder = tmp_path_factory.mktemp("openapi")
    (folder / "rules").mkdir()
    (folder / "rules" / "rules.yaml").write_text(RULES)
    config = platform_config(
        root_path=PREFIX,
        rules="rules",
        auth={
            "platform": [{"user": USER, "password": "${TEST_PLATFORM_PASSWORD}"}],
            "admin": [{"user": ADMIN[0], "password": ADMIN[1]}],
        },
        limits={"max_body_bytes": 2048},
        reload={"watch": False},
    )
    return serve_module(config, folder=folder, prefix=PREFIX)


def exchanges(server: Server, rules_file: Path) -> list[httpx.Response]:
    """A session touching every operation and its documented errors."""
    platform = server.client()
    admin = server.client(auth=ADMIN)
    anonymous = server.client(auth=None)
    event = {"CallID": 501, "EventType": 1, "ServiceType": 1, "AN": "79161234567", "UN": "74951234567"}
    out = [
        platform.get("/CallEvent"),
        platform.post("/CallEvent/0", content=b""),
        platform.post("/CallEvent", json=event),
        platform.post("/CallEvent/502", json={"EventType": "DTMF", "DTMF": "1"}),
        platform.post("/CallEvent/503", json={"EventType": 15, "Result": "1"}),  # ended at once
        platform.post("/CallEvent", content=b"{not json"),
        platform.post("/CallEvent", content=b"[1, 2]"),
        platform.get("/CallEvent/abc"),
        platform.post("/CallEvent", content=b"{" + b" " * 4096 + b"}"),  # declared length over the limit
        platform.post("/CallEvent", content=iter([b"{", b" " * 4096, b"}"])),  # chunked, refused while read
        anonymous.get("/CallEvent"),
        server.client(auth=(USER, "wrong")).post("/CallEvent", json=event),
        admin.get("/admin/calls"),
        admin.get("/admin/calls", params={"state": "connected", "limit": "1", "an": "79161234567"}),
        admin.get("/admin/calls", params={"state": "bogus"}),
        admin.get("/admin/calls", params={"offset": "-1"}),
        admin.get("/admin/calls/501"),
        admin.get("/admin/calls/999999"),
        admin.get("/admin/calls/x1"),
        admin.post("/admin/calls/501/commands", json={"action": "TransferPBX", "param": "PBX4951234"}),
        admin.post("/admin/calls/501/commands", json={"action": "Hangup"}),
        admin.post("/admin/calls/502/commands", json={"action": "Hangup"}),  # service not known: a warning
        admin.post("/admin/calls/501/commands", json={"action": "Explode"}),
        admin.post("/admin/calls/501/commands", json={"action": "TransferPBX", "extra": 1}),
        admin.post("/admin/calls/501/commands", content=b"[]"),
        admin.post("/admin/calls/503/commands", json={"action": "TransferPBX", "param": "PBX4951234"}),
        admin.post("/admin/calls/999999/commands", json={"action": "Hangup"}),
        platform.get("/CallEvent/501"),  # delivers the TransferPBX command
        admin.delete("/admin/calls/501/commands/2"),
        admin.delete("/admin/calls/501/commands/2"),  # no longer pending
        admin.delete("/admin/calls/501/commands/1"),  # delivered
        admin.get("/admin/calls/501"),
        admin.get("/admin/rules"),
        admin.post("/admin/reload"),
        admin.put("/admin/lists/vip/79161234567"),
        admin.put("/admin/lists/vip/7916*"),
        admin.put("/admin/lists/vip/79x"),
        admin.put("/admin/lists/fixed/79161234567"),
        admin.put("/admin/lists/nosuch/79161234567"),
        admin.post("/admin/lists/vip", json={"entries": ["79161234568", 79161234569]}),
        admin.post("/admin/lists/vip", json={"entries": ["x"]}),
        admin.post("/admin/lists/vip", content=b"{bad"),
        admin.get("/admin/lists/vip", params={"limit": "2"}),
        admin.get("/admin/lists/vip", params={"limit": "x"}),
        admin.delete("/admin/lists/vip/79161234567"),
        admin.delete("/admin/lists/vip/79161234567"),
        anonymous.get("/admin/rules"),
        platform.get("/admin/calls"),  # platform credentials do not open the admin API
        admin.get("/metrics"),
        anonymous.get("/metrics"),
        anonymous.get("/health"),
        anonymous.get("/ready"),
        admin.get("/openapi.json"),
        anonymous.get("/openapi.json"),
    ]
    good = rules_file.read_text()
    rules_file.write_text(BROKEN_RULES)
    try:
        out.append(admin.post("/admin/reload"))  # 422: rejected, the live set keeps serving
        out.append(admin.get("/admin/rules"))  # with last_failed_reload
    finally:
        rules_file.write_text(good)
    return out


def test_real_answers_match_the_document(served: Server) -> None:
    with served.client(auth=ADMIN) as admin:
        spec = admin.get("/openapi.json").json()
    assert spec == {**document(), "servers": [{"url": PREFIX}]}
    openapi = OpenAPI.from_dict(spec)
    responses = exchanges(served, served.log_path.parent / "rules" / "rules.yaml")
    statuses = set()
    for response in responses:
        where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        openapi.validate_response(_Request(response.request), _Response(response))  # raises with the mismatch
        if response.request.url.path != f"{PREFIX}/metrics" or response.status_code != 200:
            assert response.headers["content-type"] == JSON_TYPE, where
        statuses.add(response.status_code)
    assert statuses == {200, 201, 400, 401, 404, 409, 413, 422}
    warned = [r.json() for r in responses if r.status_code == 201 and "warning" in r.json()]
    assert len(warned) == 1


def test_the_document_can_tell(served: Server) -> None:
    """A real answer that the document does not describe is rejected: the check above can fail."""
    spec = document()
    del spec["components"]["schemas"]["ReturnCRMData"]["properties"]["Param"]  # Param becomes unknown
    spec["components"]["schemas"]["ReturnCRMData"]["required"].remove("Param")
    openapi = OpenAPI.from_dict({**spec, "servers": [{"url": PREFIX}]})
    with served.client() as platform:
        response = platform.get("/CallEvent")
    with pytest.raises(Exception, match=r"(?i)invalid|unevaluated|additional"):
        openapi.validate_response(_Request(response.request), _Response(response))


def test_unknown_paths_and_methods_answer_the_error_schema(served: Server) -> None:
    error = {**document()["components"]["schemas"]["Error"], "$schema": "https://json-schema.org/draft/2020-12/schema"}
    with served.client() as platform:
        missing = platform.get("/NoSuchThing")
        wrong_method = platform.put("/CallEvent")
        wrong_admin_method = platform.put("/admin/calls")
    for response, status in ((missing, 404), (wrong_method, 405), (wrong_admin_method, 405)):
        assert response.status_code == status
        assert response.headers["content-type"] == JSON_TYPE
        jsonschema.validate(response.json(), error)


def test_readiness_and_admin_answer_503_when_redis_is_down(tmp_path: Path, serve: ServerFactory) -> None:
    config = platform_config(
        auth={
            "platform": [{"user": USER, "password": "${TEST_PLATFORM_PASSWORD}"}],
            "admin": [{"user": ADMIN[0], "password": ADMIN[1]}],
        },
        state={"backend": "redis", "redis_url": "redis://127.0.0.1:1/0", "timeout_ms": 200},
    )
    server = serve(config, folder=tmp_path)
    try:
        openapi = OpenAPI.from_dict({**document(), "servers": [{"url": "/"}]})
        with server.client(auth=None) as anonymous, server.client(auth=ADMIN) as admin:
            answers = [anonymous.get("/ready"), admin.get("/admin/calls"), admin.get("/admin/calls/5")]
        assert [r.status_code for r in answers] == [503, 503, 503]
        for response in answers:
            openapi.validate_response(_Request(response.request), _Response(response))
    finally:
        server.stop()
