"""Hostile label sources on a running server: every metric label keeps a small, closed set of values."""

from __future__ import annotations

from pathlib import Path

from tests.support.metrics import ADMIN, RULES, parse_samples, scrape, serving, value
from tests.support.server import ServerFactory, platform_config

DISTINCT = 2000  # per hostile source: far more than any closed label set


def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every series (name and labels) of one scrape."""
    return set(parse_samples(text))


def test_hostile_label_values_leave_the_series_count_bounded(serve: ServerFactory, tmp_path: Path) -> None:
    server = serving(serve, tmp_path)
    try:
        with server.client() as http, server.client(auth=ADMIN) as admin:
            baseline = len(series(admin.get("/metrics").text))
            for i in range(DISTINCT):
                code = 10_000 + i
                http.post("/CallEvent", json={"CallID": 900_000 + i % 50, "EventType": code, "ServiceType": code})
                http.post("/CallEvent", json={"CallID": 900_000, "EventType": 1, f"Odd{i}": "x", "EventTime": f"t{i}"})
                http.request("PATCH" if i % 2 else "PUT", f"/CallEvent/{i}")
                http.get(f"/no/such/path/{i}")
                http.get(f"/CallEvent/not-a-number-{i}")
            text = admin.get("/metrics").text
        found = series(text)
        assert len(found) < baseline + 40, sorted(found)[:40]
        assert len(text) < 40_000
        samples = scrape(server.client(auth=ADMIN))
        assert value(samples, "ascrm_events_total", event_type="unknown") == DISTINCT
        assert value(samples, "ascrm_parse_warnings_total", field="EventTime") == DISTINCT
        assert not any(str(10_000 + i) in text for i in (0, DISTINCT - 1))
        assert "Odd1" not in text
        assert "not-a-number" not in text
    finally:
        server.stop()


def test_rules_gone_after_a_reload_are_not_exported(serve: ServerFactory, tmp_path: Path) -> None:
    server = serving(serve, tmp_path)
    try:
        with server.client() as http, server.client(auth=ADMIN) as admin:
            http.post("/CallEvent", json={"CallID": 77, "EventType": "CallAccepted"})
            http.post("/CallEvent", json={"CallID": 77, "EventType": "DTMF", "DTMF": "1"})
            http.get("/CallEvent/77")
            before = scrape(admin)
            assert value(before, "ascrm_decisions_total", rule="menu_sales", action="TransferDN") == 1
            assert value(before, "ascrm_decisions_total", rule="long_talk", action="TransferPBX") == 1
            (tmp_path / "rules.yaml").write_text(RULES.replace("id: menu_sales", "id: menu_sales_v2"))
            assert admin.post("/admin/reload").json()["status"] == "reloaded"
            after = scrape(admin)
        rules = {labels for name, labels in after if name == "ascrm_decisions_total"}
        assert rules == {(("action", "TransferPBX"), ("rule", "long_talk"))}
    finally:
        server.stop()


def test_an_unknown_event_type_is_counted_as_unknown(tmp_path: Path, serve: ServerFactory) -> None:
    server = serve(platform_config(metrics={"public": True}), folder=tmp_path)
    try:
        with server.client() as http:
            http.post("/CallEvent", json={"CallID": 5, "EventType": 999})
            text = http.get("/metrics").text
        assert 'ascrm_events_total{event_type="unknown"} 1.0' in text
    finally:
        server.stop()
