"""`sources:` in rule files: compiled at load (errors at file:line, secrets never shown), read like fields
by conditions and templates, asked only once the rest of a rule holds, and missing when a look-up fails.

The look-ups here are answered by a recording resolver (no HTTP): tests/test_lookups*.py test fetching.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from ascrm.core import engine
from ascrm.core.answering import answer_event, answer_poll
from ascrm.core.calls import MemoryCallStore
from ascrm.core.calls.state import CallState
from ascrm.core.lookups.request import Extract, LookupRequest
from ascrm.core.lookups.source import Outcome, SourceSettings
from ascrm.core.protocol import Action, CallEvent, EventType, ServiceType
from ascrm.core.rules import RulesError, load_rules

NOW = datetime(2027, 3, 16, 7, 30, tzinfo=UTC)
HEADER = """
maps:
  managers: {"79161234567": "1001"}
sources:
  owner:
    url: "https://crm.example.com/api/owner?phone={AN}&line={UN}"
    headers: {Authorization: "Bearer ${CRM_TOKEN:-none}"}
    value: result.extension
    timeout: 300ms
    cache: {ttl: 10m, miss_ttl: 1m, stale: 1h}
    rate: 5/s
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Answers:
    """A resolver answering from a table of URL -> JSON answer (absent: a failed look-up), counting asks."""

    def __init__(self, answers: dict[str, Any], delay: float = 0.0) -> None:
        self.answers, self.delay = answers, delay
        self.asked: list[LookupRequest] = []
        self.cache: dict[str, str | None] = {}  # URL -> a value known at once (cached())
        self.settings: list[SourceSettings] = []

    def cached(self, source: SourceSettings, request: LookupRequest) -> Outcome | None:
        value = self.cache.get(request.url, ...)
        return None if value is ... else Outcome(value, "hit", 0.0)

    async def look_up(
        self, source: SourceSettings, request: LookupRequest, extract: Extract, *, deadline: float
    ) -> Outcome:
        self.asked.append(request)
        self.settings.append(source)
        if self.delay:
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.sleep(self.delay)
            except TimeoutError:
                return Outcome(None, "timeout", self.delay)
        answer = self.answers.get(request.url)
        if answer is None:
            return Outcome(None, "error", 0.0)
        value = extract(answer)
        return Outcome(value, "fetched" if value is not None else "miss", 0.0)


def rules_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Any:
    (tmp_path / "rules.yaml").write_text(text)
    if env is not None:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            return load_rules(tmp_path / "rules.yaml", "Europe/Moscow")
    return load_rules(tmp_path / "rules.yaml", "Europe/Moscow")


def accepted(call_id: int = 1, an: str = "79161234567", un: str = "74951234567") -> CallEvent:
    return CallEvent(call_id, NOW, EventType.CallAccepted, ServiceType.MTSSecretary, an, un)


def owner_url(an: str = "79161234567", un: str = "74951234567") -> str:
    return f"https://crm.example.com/api/owner?phone={an.replace('+', '%2B')}&line={un}"


async def answer(rules: Any, resolver: Answers | None, event: CallEvent, budget: float = 0.5) -> Any:
    return await answer_event(MemoryCallStore(max_calls=10), rules, event, NOW, resolver=resolver, budget=budget)


PERSONAL = (
    HEADER
    + """
rules:
  - id: personal-manager
    on: CallAccepted
    if: {owner: {regex: "^\\\\d{4}$"}}
    do: {TransferEXT: "{owner}"}
  - id: fallback
    on: CallAccepted
    do: {TransferEXT: "{managers[AN]}"}
"""
)


@pytest.mark.anyio
async def test_a_source_is_a_condition_field_and_a_template_value(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, PERSONAL)
    resolver = Answers({owner_url("+79161234567"): {"result": {"extension": "1234"}}})
    answered = await answer(rules, resolver, accepted(an="+79161234567"))
    assert (answered.decision.action, answered.decision.param, answered.decision.rule_id) == (
        Action.TransferEXT,
        "1234",
        "personal-manager",
    )
    assert [request.url for request in resolver.asked] == [owner_url("+79161234567")]  # the + percent-encoded
    assert "%2B7916" in resolver.asked[0].url
    assert resolver.asked[0].headers == (("Authorization", "Bearer none"),)
    assert [(used.source, used.outcome) for used in answered.lookups] == [("owner", "fetched")]
    settings = resolver.settings[0]
    assert (settings.timeout, settings.ttl, settings.miss_ttl, settings.stale, settings.rate) == (
        0.3,
        600.0,
        60.0,
        3600.0,
        5.0,
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answers", "outcome"),
    [
        ({}, "error"),  # failed, timed out, rate-limited: the resolver says missing
        ({owner_url(): {"result": {}}}, "miss"),
        ({owner_url(): {"result": {"extension": "not-an-extension"}}}, "fetched"),  # the condition fails
    ],
    ids=["failed", "nothing-found", "no-match"],
)
async def test_a_missing_or_unmatched_value_lets_the_next_rule_decide(
    tmp_path: Path, answers: dict[str, Any], outcome: str
) -> None:
    rules = rules_of(tmp_path, PERSONAL)
    answered = await answer(rules, Answers(answers), accepted())
    assert answered.decision.rule_id == "fallback"
    assert answered.decision.param == "1001"
    assert [used.outcome for used in answered.lookups] == [outcome]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("cached", "rule", "param"), [("1234", "personal-manager", "1234"), (None, "fallback", "1001")]
)
async def test_a_value_known_at_once_is_read_in_one_pass_of_the_rules(
    tmp_path: Path, cached: str | None, rule: str, param: str
) -> None:
    """A value (or a miss) the resolver knows at once is not looked up: the rules are asked once."""
    rules = rules_of(tmp_path, PERSONAL)
    resolver = Answers({})
    resolver.cache[owner_url()] = cached
    passes = 0

    def counting(*args: Any) -> Any:
        nonlocal passes
        passes += 1
        return engine.decide(*args)

    answered = await answer_event(MemoryCallStore(), rules, accepted(), NOW, resolver=resolver, decide=counting)
    assert (answered.decision.rule_id, answered.decision.param, passes, resolver.asked) == (rule, param, 1, [])
    assert [(used.source, used.outcome) for used in answered.lookups] == [("owner", "hit")]


@pytest.mark.anyio
async def test_a_source_is_asked_only_when_the_rest_of_its_rule_holds(tmp_path: Path) -> None:
    text = (
        HEADER
        + """
rules:
  - id: vip-owner
    on: CallAccepted
    if: {owner: "1234", UN: "74950000000"}       # the source written first, asked last
    do: {TransferEXT: "{owner}"}
  - id: dtmf
    on: DTMF
    do: {TransferEXT: "{owner}"}
"""
    )
    rules = rules_of(tmp_path, text)
    resolver = Answers({owner_url(un="74950000000"): {"result": {"extension": "1234"}}})
    assert (await answer(rules, resolver, accepted())).decision.action is None  # UN differs: not asked
    assert resolver.asked == []
    other_line = accepted(un="74950000000")
    answered = await answer(rules, resolver, other_line)
    assert answered.decision.param == "1234"
    assert len(resolver.asked) == 1


@pytest.mark.anyio
async def test_not_holds_for_a_missing_value(tmp_path: Path) -> None:
    text = (
        HEADER
        + """
rules:
  - id: unknown-caller
    on: CallAccepted
    if: {owner: {not: {regex: "."}}}
    do: {PlayPrompt: who_are_you}
"""
    )
    rules = rules_of(tmp_path, text)
    answered = await answer(rules, Answers({}), accepted())
    assert (answered.decision.action, answered.decision.param) == (Action.PlayPrompt, "who_are_you")


@pytest.mark.anyio
async def test_past_the_budget_the_look_up_counts_as_failed(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, PERSONAL)
    resolver = Answers({owner_url(): {"result": {"extension": "1234"}}}, delay=5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    answered = await answer(rules, resolver, accepted(), budget=0.1)
    assert loop.time() - started < 0.1 + 0.05
    assert answered.decision.rule_id == "fallback"
    assert [used.outcome for used in answered.lookups] == ["timeout"]


@pytest.mark.anyio
async def test_without_a_resolver_sources_are_missing(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, PERSONAL)
    answered = await answer(rules, None, accepted())
    assert answered.decision.rule_id == "fallback"


@pytest.mark.anyio
async def test_a_poll_rule_reads_a_source(tmp_path: Path) -> None:
    text = (
        HEADER
        + """
rules:
  - id: escalate
    on: poll
    if: {owner: "1234"}
    do: {TransferPBX: PBX4951234}
"""
    )
    rules = rules_of(tmp_path, text)
    store = MemoryCallStore(max_calls=10)
    resolver = Answers({owner_url(): {"result": {"extension": "1234"}}})
    await answer_event(store, rules, accepted(7), NOW, resolver=resolver)
    first = await answer_poll(store, rules, 7, NOW, resolver=resolver)
    assert (first.decision.action, first.decision.param) == (Action.TransferPBX, "PBX4951234")
    assert [used.source for used in first.lookups] == ["owner"]
    again = await answer_poll(store, rules, 7, NOW, resolver=resolver)
    assert again.decision.action is None  # a poll rule answers once


@pytest.mark.anyio
async def test_a_post_body_is_json_with_the_values_escaped(tmp_path: Path) -> None:
    text = """
sources:
  owner:
    url: https://crm.example.com/find
    method: POST
    body: {phone: "{AN}", tags: ["{UN}", 3, true]}
    value: items.0.id
rules:
  - id: r
    on: CallAccepted
    do: {TransferEXT: "{owner}"}
"""
    rules = rules_of(tmp_path, text)
    resolver = Answers({"https://crm.example.com/find": {"items": [{"id": 1021}]}})
    answered = await answer(rules, resolver, accepted(an='7916"}{'))
    assert answered.decision.param == "1021"  # a number in the answer, as text
    request = resolver.asked[0]
    assert request.method == "POST"
    assert orjson.loads(request.body or b"") == {"phone": '7916"}{', "tags": ["74951234567", 3, True]}
    assert ("Content-Type", "application/json") in request.headers


@pytest.mark.anyio
async def test_a_placeholder_without_a_value_asks_nothing(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, PERSONAL.replace("line={UN}", "line={DTMF}"))
    resolver = Answers({})
    answered = await answer(rules, resolver, accepted())
    assert answered.decision.rule_id == "fallback"
    assert resolver.asked == []
    assert [used.outcome for used in answered.lookups] == ["miss"]


def test_environment_variables_are_read_at_load(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, PERSONAL.replace("${CRM_TOKEN:-none}", "${CRM_TOKEN}"), {"CRM_TOKEN": "s3cret"})
    built = rules.sources["owner"].build(accepted(), CallState.begin(1, accepted(), NOW))
    assert built is not None
    assert built[0].headers == (("Authorization", "Bearer s3cret"),)


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("${CRM_TOKEN:-none}", "${CRM_SECRET_VAR}"), 7, "the environment variable CRM_SECRET_VAR is not set"),
        (("timeout: 300ms", "timeout: 300"), 9, "timeout: 300 is not a duration with its unit (300ms, 2s"),
        (("timeout: 300ms", "timeout: 60s"), 9, "timeout: '60s' is outside 0.001-10 seconds"),
        (("rate: 5/s", "rate: fast"), 11, "rate: 'fast' is not a rate such as 5/s"),
        (("value: result.extension", "valu: result.extension"), 8, "unknown key 'valu'"),
        (("https://crm.example.com", "ftp://crm.example.com"), 6, "not an http:// or https:// URL"),
        (("phone={AN}", "phone={ANN}"), 6, "unknown field {ANN} (known: AN, UN"),
        (("  owner:\n", "  AN:\n"), 5, "source 'AN': a condition has this name"),
        (("  owner:\n", "  managers:\n"), 5, "source 'managers': a map has this name"),
    ],
    ids=["unset-variable", "duration-unit", "duration-bound", "rate", "unknown-key", "scheme", "field", "clash", "map"],
)
def test_a_bad_source_is_refused_at_its_line(tmp_path: Path, change: tuple[str, str], line: int, message: str) -> None:
    text = PERSONAL.replace(*change)
    if change[0] == "  owner:\n":
        text = text.replace("owner: {regex", "AN: {regex").replace('"{owner}"', '"1000"')
    with pytest.raises(RulesError) as caught:
        rules_of(tmp_path, text)
    [problem] = caught.value.problems
    assert message in problem.message
    assert problem.location.line == line


def test_a_secret_is_never_shown_in_an_error(tmp_path: Path) -> None:
    text = PERSONAL.replace('{Authorization: "Bearer ${CRM_TOKEN:-none}"}', "{Authorization: [topsecret]}")
    text = text.replace("https://crm.example.com/api/owner", "https://crm.example.com/hook/sekritpath/owner")
    text = text.replace("value: result.extension", "value: result.extension\n    token: [tokentoken]")
    with pytest.raises(RulesError) as caught:
        rules_of(tmp_path, text)
    shown = " ".join(str(problem) for problem in caught.value.problems)
    assert "topsecret" not in shown
    assert "tokentoken" not in shown
    assert "sekritpath" not in shown
    assert "headers" in shown or "Authorization" in shown


def test_a_rule_set_without_sources_has_none(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, "rules:\n  - {id: r, on: CallAccepted, do: Hangup}\n")
    assert rules.sources == {}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"kind": "bitrix24", "webhook": "https://b24.example.ru/rest/1/topsecret/"}, None),
        ({"kind": "amocrm", "url": "https://acme.amocrm.ru", "token": "${AMO_TOKEN:-tokentoken}"}, None),
        ({"kind": "retailcrm", "url": "https://acme.retailcrm.ru", "api_key": "keykey"}, None),
        ({"kind": "bitrix24"}, "webhook"),
        ({"kind": "amocrm", "url": "https://acme.amocrm.ru", "token": "t", "value": "x"}, "takes no value"),
        ({"kind": "pipedrive", "url": "https://x.example"}, "unknown kind 'pipedrive'"),
    ],
    ids=["bitrix24", "amocrm", "retailcrm", "no-webhook", "no-value", "unknown-kind"],
)
def test_a_preset_source_knows_its_crm(tmp_path: Path, spec: dict[str, str], problem: str | None) -> None:
    lines = "".join(f"    {key}: {json_text(value)}\n" for key, value in spec.items())
    text = f"sources:\n  owner:\n{lines}rules:\n  - {{id: r, on: CallAccepted, do: {{TransferEXT: '{{owner}}'}}}}\n"
    if problem is not None:
        with pytest.raises(RulesError) as caught:
            rules_of(tmp_path, text)
        shown = str(caught.value)
        assert problem in shown
        assert all(secret not in shown for secret in ("topsecret", "tokentoken", "keykey"))
        return
    rules = rules_of(tmp_path, text)
    source = rules.sources["owner"]
    assert source.kind == spec["kind"]
    built = source.build(accepted(), CallState.begin(1, accepted(), NOW))
    assert built is not None
    request, extract = built
    assert request.url.startswith(spec.get("webhook", spec.get("url", "")).rstrip("/"))
    if spec["kind"] == "amocrm":
        assert extract(None) is None  # its 204: nobody
    assert source.settings.rate is not None  # the CRM's documented limit unless the file says


def json_text(value: str) -> str:
    return orjson.dumps(value).decode()
