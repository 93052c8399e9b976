"""`targets:` and `notify:` in rule files: compiled, and refused at file:line with what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ascrm.core.rules import RulesError, load_rules

RULES = """\
targets:
  crm:
    url: "https://crm.example.com/hooks/ascrm"
    headers: {Authorization: "Bearer ${NOTIFY_TOKEN:-none}"}
    secret: "${NOTIFY_SECRET:-0123456789abcdef0123}"
notify:
  - id: missed
    on: missed
    if: {UN: "74951234567"}
    target: crm
    body: {phone: "{caller}", talk: "{talk_seconds}", text: "Missed call from {caller}"}
  - id: all-ended
    on: [ended, connected, DTMF]
    target: crm
rules:
  - id: hello
    on: CallAccepted
    do: {TransferEXT: "1001"}
"""


def rules_of(tmp_path: Path, text: str) -> Any:
    (tmp_path / "rules.yaml").write_text(text)
    return load_rules(tmp_path / "rules.yaml", "Europe/Moscow")


def test_targets_and_notify_entries_are_compiled(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, RULES)
    assert list(rules.targets) == ["crm"]
    assert rules.targets["crm"].kind == "http"
    assert [(entry.id, entry.kinds, entry.target) for entry in rules.notify] == [
        ("missed", ("missed",), "crm"),
        ("all-ended", ("ended", "connected", "DTMF"), "crm"),
    ]
    assert rules.notify[0].where.endswith("rules.yaml:7:9")
    body = rules.notify[0].body
    assert body is not None
    assert body({"caller": "79161234567", "talk_seconds": 42}) == {
        "phone": "79161234567",
        "talk": 42,  # one placeholder alone keeps the value's JSON type
        "text": "Missed call from 79161234567",
    }
    assert rules.notify[1].body is None  # the summary itself is sent


def test_a_rule_set_without_notifications_pays_nothing(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, "rules:\n  - {id: a, on: CallAccepted, do: Hangup}\n")
    assert rules.notify == ()
    assert rules.targets == {}


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("target: crm\n    body", "target: crn\n    body"), 10, "unknown target 'crn' (the rule files define: crm)"),
        (("on: missed", "on: misssed"), 8, "unknown outcome or event 'misssed' (known: missed, ended, connected,"),
        (("on: [ended, connected, DTMF]", "on: [ended, 99]"), 13, "unknown outcome or event 99"),
        (('"{caller}", talk', '"{callr}", talk'), 11, "unknown placeholder {callr} (known: kind, notify, key"),
        (("Missed call from {caller}", "Missed {call"), 11, "a stray '{' in 'Missed {call'"),
        (("if: {UN: ", "if: {UNN: "), 9, "unknown condition 'UNN'"),
        (("https://crm.example.com", "ftp://crm.example.com"), 3, "not an http:// or https:// URL"),
        (("url:", "uri:"), 3, "unknown key 'uri'"),
        (("crm:\n    url", "crm:\n    kind: telegram\n    url"), 3, "unknown kind 'telegram' (known: http, bitrix24"),
        (('secret: "${NOTIFY_SECRET:-0123456789abcdef0123}"', 'secret: "short"'), 5, "at least 16 characters"),
        (("${NOTIFY_TOKEN:-none}", "${NOTIFY_UNSET_VARIABLE}"), 4, "NOTIFY_UNSET_VARIABLE is not set"),
        (("  - id: all-ended", "  - id: missed"), 12, "notify id 'missed' is used twice (first at"),
        (("    target: crm\nrules", "    target: crm\n    targt: crm\nrules"), 15, "unknown key 'targt'"),
        (("on: missed", "on: {missed: 1}"), 8, "'on' takes an outcome (missed, ended, connected), an event name"),
    ],
    ids=[
        "target",
        "outcome",
        "event-code",
        "placeholder",
        "stray-brace",
        "condition",
        "scheme",
        "target-key",
        "kind",
        "short-secret",
        "unset-variable",
        "id-twice",
        "entry-key",
        "on-shape",
    ],
)
def test_a_bad_entry_is_refused_at_its_line(tmp_path: Path, change: tuple[str, str], line: int, message: str) -> None:
    assert change[0] in RULES
    with pytest.raises(RulesError) as caught:
        rules_of(tmp_path, RULES.replace(*change))
    [problem] = caught.value.problems
    assert message in problem.message, problem.message
    assert problem.location.line == line, problem


def test_a_condition_cannot_read_a_source(tmp_path: Path) -> None:
    text = RULES.replace(
        "targets:", 'sources:\n  owner: {url: "https://crm.example.com/o?p={AN}", value: ext}\ntargets:'
    ).replace('if: {UN: "74951234567"}', 'if: {owner: "1001"}')
    with pytest.raises(RulesError) as caught:
        rules_of(tmp_path, text)
    [problem] = caught.value.problems
    assert "a notification's condition cannot read a source" in problem.message


def test_a_secret_is_never_shown_in_an_error(tmp_path: Path) -> None:
    text = RULES.replace('{Authorization: "Bearer ${NOTIFY_TOKEN:-none}"}', "{Authorization: [topsecret]}")
    text = text.replace('secret: "${NOTIFY_SECRET:-0123456789abcdef0123}"', "secret: [hmacsecretvalue]")
    text = text.replace("https://crm.example.com/hooks/ascrm", "https://crm.example.com/hook/sekritpath")
    with pytest.raises(RulesError) as caught:
        rules_of(tmp_path, text)
    shown = " ".join(str(problem) for problem in caught.value.problems)
    assert "topsecret" not in shown
    assert "hmacsecretvalue" not in shown
    assert "sekritpath" not in shown
    assert "secret" in shown


def test_entries_are_bounded(tmp_path: Path) -> None:
    entries = "".join(f"  - {{id: n{index}, on: ended, target: crm}}\n" for index in range(101))
    text = RULES.partition("notify:\n")[0] + "notify:\n" + entries
    with pytest.raises(RulesError) as caught:
        rules_of(tmp_path, text)
    assert [problem.message for problem in caught.value.problems] == ["more than 100 notify entries"]


def test_a_body_is_bounded_in_strings(tmp_path: Path) -> None:
    body = "[" + ", ".join(f'"s{index}"' for index in range(1001)) + "]"
    with pytest.raises(RulesError) as caught:
        rules_of(
            tmp_path,
            RULES.replace('{phone: "{caller}", talk: "{talk_seconds}", text: "Missed call from {caller}"}', body),
        )
    [problem] = caught.value.problems
    assert "a body has at most 1000 strings" in problem.message


def test_targets_are_bounded(tmp_path: Path) -> None:
    targets = "".join(f'  t{index}: {{url: "https://crm.example.com/{index}"}}\n' for index in range(51))
    text = "targets:\n" + targets + "rules:\n  - {id: a, on: CallAccepted, do: Hangup}\n"
    with pytest.raises(RulesError) as caught:
        rules_of(tmp_path, text)
    assert [problem.message for problem in caught.value.problems] == ["target 't50': more than 50 targets"]


@pytest.mark.parametrize(
    ("template", "values", "rendered"),
    [
        ("{caller}", {"caller": None}, None),
        ("to {caller}", {"caller": None}, "to "),
        ("{{literal}} {caller}", {"caller": "1"}, "{literal} 1"),
        ("{missed}", {"missed": True}, True),
        ("missed: {missed}", {"missed": False}, "missed: false"),
        ("rules: {rules}", {"rules": ["a", "b"]}, "rules: a,b"),
        ("{AN}/{DTMF}", {"AN": "79161234567", "DTMF": "12"}, "79161234567/12"),
        ("plain", {}, "plain"),
    ],
)
def test_body_strings_render(tmp_path: Path, template: str, values: dict[str, Any], rendered: Any) -> None:
    text = RULES.replace(
        '{phone: "{caller}", talk: "{talk_seconds}", text: "Missed call from {caller}"}', f"{{v: {template!r}}}"
    )
    body = rules_of(tmp_path, text.replace("'", '"')).notify[0].body
    assert body(values) == {"v": rendered}
