"""Whatever a client sends, the platform endpoints answer with JSON and the exact content type, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from ascrm import Settings, create_app
from ascrm.service.auth.basic import Credential

FIELDS = ["CallID", "EventTime", "EventType", "ServiceType", "AN", "UN", "DN1", "DTMF", "Result", "callid", "x"]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def http() -> Iterator[TestClient]:
    settings_ = Settings(platform_credentials=(Credential("pbx", password="pw"),))
    with TestClient(create_app(settings_), raise_server_exceptions=False) as client:
        client.auth = ("pbx", "pw")
        yield client


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8), path=st.sampled_from(["", "/0", "/17"]))
def test_any_json_object_is_answered_200(http: TestClient, body: dict[str, Any], path: str) -> None:
    response = http.post(f"/CallEvent{path}", content=json.dumps(body, allow_nan=True))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    answer = response.json()
    assert set(answer) == {"CallID", "EventType", "Param"}
    assert isinstance(answer["EventType"], int)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_answered_without_a_server_error(http: TestClient, raw: bytes) -> None:
    response = http.post("/CallEvent", content=raw)
    assert response.status_code in (200, 400)
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
