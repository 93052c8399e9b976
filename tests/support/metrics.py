"""Reading a Prometheus text exposition: every sample keyed by name and sorted labels."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import Server, ServerFactory, platform_config

ADMIN = ("ops", "metrics-pw")
RULES = """\
rules:
  - id: menu_sales
    on: DTMF
    if: {DTMF: "1"}
    do: {TransferDN: "74951110000"}
  - id: long_talk
    on: poll
    do: {TransferPBX: "PBX1200"}
"""
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: httpx.Client) -> Samples:
    """Every sample of one `GET /metrics` by client, which must be answered 200 in the text format."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse_samples(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample named name with exactly these labels; 0 when there is none."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def serving(serve: ServerFactory, folder: Path, **extra: object) -> Server:
    """A server in folder with RULES (reloaded only when told) and the ADMIN user, plus extra config keys."""
    (folder / "rules.yaml").write_text(RULES)
    config = platform_config(rules=str(folder / "rules.yaml"), reload={"watch": False}, **extra)
    return serve(config, folder=folder, admin=ADMIN)
