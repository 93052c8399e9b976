"""Every condition, operator and action of the rule language, through the HTTP API of a running server.

One `ascrm serve` per module serves one rules folder written below. Every test's rules are guarded by a
number (usually the UN, the company number called) that only that test's calls use, so the tests never
answer each other's calls; each call gets its own CallID. Answers are compared as whole JSON objects.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.protocol import ACTION_CODES
from tests.support.server import Server, ServerFactory, platform_config

CONTENT_TYPE = "application/json; charset=UTF-8"

# Event codes (the protocol's EventType table), written out so the tests do not borrow them from src.
CALL_ACCEPTED, CALL_ANSWERED, HELLO_MESSAGE, DTMF, T38, FAX_TONE, RUN_IVR = 1, 2, 3, 4, 5, 6, 7
TRANSFER, SHORT_TRANSFER, REC_START, BDROPPED, PREPARE_TO_CONNECT = 9, 11, 13, 17, 16

MSK = timezone(timedelta(hours=3))
T0 = datetime(2027, 1, 11, 10, 15, tzinfo=MSK)  # a Monday, office hours in Moscow
DROP = object()  # a CRMDData key left out of the body


def at(seconds: float) -> str:
    """EventTime `seconds` after T0, as the platform writes it."""
    return (T0 + timedelta(seconds=seconds)).isoformat()


def answer(call_id: int, action: str, param: str = "") -> dict[str, Any]:
    """The ReturnCRMData for an action, with the action's numeric code."""
    return {"CallID": call_id, "EventType": ACTION_CODES[action], "Param": param}


def prompt(call_id: int, name: str) -> dict[str, Any]:
    """PlayPrompt name: what most test rules answer, with their own id as the prompt."""
    return answer(call_id, "PlayPrompt", name)


def noop(call_id: int) -> dict[str, Any]:
    """The "no action" answer."""
    return {"CallID": call_id, "EventType": 0, "Param": ""}


def catch_all(call_id: int) -> dict[str, Any]:
    """What the unconditional `on: CallAccepted` rule at the end of the rules answers."""
    return prompt(call_id, "catch-all-accepted")


def json_answer(response: httpx.Response) -> dict[str, Any]:
    """The body of a 200 answer with the exact content type."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    body: dict[str, Any] = response.json()
    return body


_CALL_IDS = itertools.count(5_000_001)


class Call:
    """One call on the platform: its CallID and the fields every one of its events carries."""

    def __init__(self, http: httpx.Client, **fields: Any) -> None:
        self.http = http
        self.id = next(_CALL_IDS)
        self.fields = {"EventTime": at(0), "ServiceType": 1, **fields}

    def event(self, event_type: int, **fields: Any) -> dict[str, Any]:
        """POST /CallEvent with this event; the answer. A field given as DROP is left out."""
        body = {"CallID": self.id, **self.fields, "EventType": event_type, **fields}
        body = {key: value for key, value in body.items() if value is not DROP}
        return json_answer(self.http.post("/CallEvent", json=body))

    def poll(self) -> dict[str, Any]:
        """GET /CallEvent/{CallID}; the answer."""
        return json_answer(self.http.get(f"/CallEvent/{self.id}"))


# ----------------------------------------------------------------------------------------------------
# The rules folder. 10-main.yaml: compared as written; 15-fields.yaml: generated (every string field x
# every matcher); 20-ru.yaml: `normalize: ru`; 30-last.yaml: no timezone (the service's), catch-alls.

MAIN_RULES = r"""
timezone: Europe/Moscow

schedules:
  office:
    mon-fri: "09:00-18:00"
    except: [2027-01-13]                      # a Wednesday holiday
    include: {"2027-01-16": "10:00-14:00"}    # a working Saturday
  night: {daily: "22:00-06:00"}
  vladivostok: {timezone: Asia/Vladivostok, mon-fri: "09:00-18:00"}
  always: {daily: "00:00-24:00"}
  never: {daily: closed}

lists:
  vip: ["79161234567", "7916555*"]

maps:
  ext_by_an: {file: maps/ext_by_an.csv}
  inline_ext: {"79038100051": "3051"}

rules:
  # ---- time (on CallAnswered) -------------------------------------------------------------------
  - {id: time-office, on: CallAnswered, if: {UN: "74957100001", time: office}, do: {PlayPrompt: time-office}}
  - id: time-not-office
    on: CallAnswered
    if: {UN: "74957100002", time: {not: office}}
    do: {PlayPrompt: time-not-office}
  - id: time-inline
    on: CallAnswered
    if: {UN: "74957100003", time: {sat-sun: "10:00-12:00"}}
    do: {PlayPrompt: time-inline}
  - id: time-inline-zone
    on: CallAnswered
    if: {UN: "74957100004", time: {timezone: Asia/Vladivostok, daily: "09:00-10:00"}}
    do: {PlayPrompt: time-inline-zone}
  - {id: time-night, on: CallAnswered, if: {UN: "74957100005", time: night}, do: {PlayPrompt: time-night}}
  - {id: time-always, on: CallAnswered, if: {UN: "74957100006", time: always}, do: {PlayPrompt: time-always}}
  - {id: time-never, on: CallAnswered, if: {UN: "74957100007", time: never}, do: {PlayPrompt: time-never}}
  - id: time-not-always
    on: CallAnswered
    if: {UN: "74957100008", time: {not: always}}
    do: {PlayPrompt: time-not-always}
  - id: time-not-never
    on: CallAnswered
    if: {UN: "74957100009", time: {not: never}}
    do: {PlayPrompt: time-not-never}
  - id: time-named-zone
    on: CallAnswered
    if: {UN: "74957100010", time: vladivostok}
    do: {PlayPrompt: time-named-zone}
  - id: time-not-inline
    on: CallAnswered
    if: {UN: "74957100011", time: {not: {sat-sun: "00:00-24:00"}}}
    do: {PlayPrompt: time-not-inline}

  # ---- service (on CallAnswered) ----------------------------------------------------------------
  - {id: service-name, on: CallAnswered, if: {UN: "74957200001", service: MTSQuality}, do: {PlayPrompt: service-name}}
  - {id: service-code, on: CallAnswered, if: {UN: "74957200002", service: 4}, do: {PlayPrompt: service-code}}
  - id: service-list
    on: CallAnswered
    if: {UN: "74957200003", service: [MTSSecretary, 2]}
    do: {PlayPrompt: service-list}

  # ---- talk_seconds (on RecStart), call_seconds (on CallAnswered) -------------------------------
  - {id: talk-gt, on: RecStart, if: {UN: "74957300001", talk_seconds: {gt: 600}}, do: {PlayPrompt: talk-gt}}
  - id: talk-range
    on: RecStart
    if: {UN: "74957300002", talk_seconds: {ge: 600, lt: 900}}
    do: {PlayPrompt: talk-range}
  - {id: talk-eq, on: RecStart, if: {UN: "74957300003", talk_seconds: 30}, do: {PlayPrompt: talk-eq}}
  - id: call-ge
    on: CallAnswered
    if: {UN: "74957300004", call_seconds: {ge: 120}}
    do: {PlayPrompt: call-ge}
  - id: call-range
    on: CallAnswered
    if: {UN: "74957300005", call_seconds: {gt: 10, le: 20}}
    do: {PlayPrompt: call-range}
  - id: call-ne-lt
    on: CallAnswered
    if: {UN: "74957300006", call_seconds: {ne: 5, lt: 10}}
    do: {PlayPrompt: call-ne-lt}

  # ---- last_transfer_result (on PrepareToConnect) -----------------------------------------------
  - id: ltr-busy
    on: PrepareToConnect
    if: {UN: "74957400001", last_transfer_result: busy}
    do: {PlayPrompt: ltr-busy}
  - id: ltr-no-answer
    on: PrepareToConnect
    if: {UN: "74957400002", last_transfer_result: no_answer}
    do: {PlayPrompt: ltr-no-answer}
  - id: ltr-code
    on: PrepareToConnect
    if: {UN: "74957400003", last_transfer_result: [486, "603"]}
    do: {PlayPrompt: ltr-code}
  - id: ltr-connected
    on: PrepareToConnect
    if: {UN: "74957400004", last_transfer_result: connected}
    do: {PlayPrompt: ltr-connected}
  - id: ltr-list
    on: PrepareToConnect
    if: {UN: "74957400005", last_transfer_result: [busy, no_answer]}
    do: {PlayPrompt: ltr-list}

  # ---- seen (on CallAnswered) -------------------------------------------------------------------
  - {id: seen-list, on: CallAnswered, if: {UN: "74957500001", seen: [HelloMessage, 7]}, do: {PlayPrompt: seen-list}}
  - {id: seen-one, on: CallAnswered, if: {UN: "74957500002", seen: DTMF}, do: {PlayPrompt: seen-one}}
  - {id: seen-future, on: CallAnswered, if: {UN: "74957500003", seen: 42}, do: {PlayPrompt: seen-future}}

  # ---- any / all / not (on CallAnswered) --------------------------------------------------------
  - id: logic-any
    on: CallAnswered
    if: {UN: "74957600001", any: [{AN: "79036000001"}, {Generic: {prefix: "7800"}}]}
    do: {PlayPrompt: logic-any}
  - id: logic-all
    on: CallAnswered
    if: {UN: "74957600002", all: [{AN: {prefix: "7903"}}, {time: office}]}
    do: {PlayPrompt: logic-all}
  - id: logic-not
    on: CallAnswered
    if: {UN: "74957600003", not: {AN: {in: vip}, time: office}}
    do: {PlayPrompt: logic-not}
  - id: logic-nested
    on: CallAnswered
    if:
      UN: "74957600004"
      any:
        - {not: {AN: {prefix: "7"}}}
        - {all: [{Generic: "74951110000"}, {service: MTSQuality}]}
    do: {PlayPrompt: logic-nested}

  # ---- first match wins; the index keeps rule order (on CallAnswered) ---------------------------
  - id: order-scan-first                           # no exact condition: always scanned
    on: CallAnswered
    if: {UN: {regex: '^74957700001$'}, AN: {prefix: "790312"}}
    do: {PlayPrompt: order-scan-first}
  - id: order-exact-second                         # looked up by its exact AN
    on: CallAnswered
    if: {AN: "79031234567", UN: "74957700001"}
    do: {PlayPrompt: order-exact-second}
  - {id: order-fallback, on: CallAnswered, if: {UN: "74957700001"}, do: {PlayPrompt: order-fallback}}
  - id: order-exact-first
    on: CallAnswered
    if: {AN: "79041234567", UN: "74957700002"}
    do: {PlayPrompt: order-exact-first}
  - id: order-scan-second
    on: CallAnswered
    if: {UN: {regex: '^74957700002$'}, AN: {prefix: "7904"}}
    do: {PlayPrompt: order-scan-second}

  # ---- on: a list, a code, a future code --------------------------------------------------------
  - {id: on-list, on: [HelloMessage, RunIVR, 6], if: {UN: "74957800001"}, do: {PlayPrompt: on-list}}
  - {id: on-code, on: 13, if: {UN: "74957800002"}, do: {PlayPrompt: on-code}}
  - {id: on-future, on: 42, do: {PlayPrompt: on-future}}

  # ---- every action (UN 74958000001, one AN each) -----------------------------------------------
  - {id: act-TransferDN, on: CallAccepted, if: {UN: "74958000001", AN: "79038000001"}, do: {TransferDN: "74951234567"}}
  - {id: act-TransferEXT, on: CallAccepted, if: {UN: "74958000001", AN: "79038000002"}, do: {TransferEXT: "1234"}}
  - {id: act-PlayPrompt, on: CallAccepted, if: {UN: "74958000001", AN: "79038000003"}, do: {PlayPrompt: greeting}}
  - {id: act-Hangup, on: CallAccepted, if: {UN: "74958000001", AN: "79038000004"}, do: Hangup}
  - {id: act-TransferPBX, on: CallAccepted, if: {UN: "74958000001", AN: "79038000005"}, do: {TransferPBX: PBX4951234}}
  - id: act-PlayMenuBlock
    on: CallAccepted
    if: {UN: "74958000001", AN: "79038000006"}
    do: {PlayMenuBlock: main_menu}
  - id: act-PlayPromptAndBack
    on: CallAccepted
    if: {UN: "74958000001", AN: "79038000007"}
    do: {PlayPromptAndBack: please_wait}
  - id: act-PlayPromptToOperator
    on: PrepareToConnect
    if: {UN: "74958000001", AN: "79038000008"}
    do: {PlayPromptToOperator: vip_client}
  - id: act-TransferDNRec
    on: CallAccepted
    if: {UN: "74958000001", AN: "79038000009"}
    do: {TransferDNRec: "74951234568"}
  - id: act-TransferPBXRec
    on: CallAccepted
    if: {UN: "74958000001", AN: "79038000010"}
    do: {TransferPBXRec: PBX4955678}
  - id: act-IgnorePromptToOperator
    on: PrepareToConnect
    if: {UN: "74958000001", AN: "79038000011"}
    do: IgnorePromptToOperator
  - {id: act-BackFromConsultCall, on: poll, if: {UN: "74958000001", AN: "79038000012"}, do: BackFromConsultCall}

  # ---- templates --------------------------------------------------------------------------------
  - {id: tpl-an, on: CallAnswered, if: {UN: "74958100001"}, do: {TransferDN: "{AN}"}}
  - {id: tpl-dn1, on: CallAnswered, if: {UN: "74958100002"}, do: {TransferDNRec: "{DN1}"}}
  - {id: tpl-dn1-next, on: CallAnswered, if: {UN: "74958100002"}, do: {PlayPrompt: tpl-dn1-next}}
  - id: tpl-digits
    on: DTMF
    if: {UN: "74958100003", digits: {regex: '^\d{4}$'}}
    do: {TransferEXT: "{digits}"}
  - {id: tpl-map, on: CallAnswered, if: {UN: "74958100004"}, do: {TransferEXT: "{ext_by_an[AN]}"}}
  - {id: tpl-map-next, on: CallAnswered, if: {UN: "74958100004"}, do: {PlayPrompt: tpl-map-next}}
  - {id: tpl-inline-map, on: CallAnswered, if: {UN: "74958100005"}, do: {TransferEXT: "{inline_ext[AN]}"}}
  - {id: tpl-inline-map-next, on: CallAnswered, if: {UN: "74958100005"}, do: {PlayPrompt: tpl-inline-map-next}}
  - {id: tpl-mixed, on: CallAnswered, if: {UN: "74958100006"}, do: {PlayPromptAndBack: "hello_{Generic}_{DN2}"}}
  - id: tpl-bad-digits
    on: DTMF
    if: {UN: "74958100007", digits: {regex: '^\d{3}$'}}
    do: {TransferEXT: "{digits}"}
  - {id: tpl-bad-digits-next, on: DTMF, if: {UN: "74958100007"}, do: {PlayPrompt: tpl-bad-digits-next}}
  - {id: tpl-bad-map, on: CallAnswered, if: {UN: "74958100008"}, do: {TransferEXT: "{ext_by_an[AN]}"}}
  - {id: tpl-bad-map-next, on: CallAnswered, if: {UN: "74958100008"}, do: {PlayPrompt: tpl-bad-map-next}}

  # ---- poll rules -------------------------------------------------------------------------------
  - {id: poll-once, on: poll, if: {UN: "74958200001"}, do: {TransferPBX: PBX4951001}}
  - {id: poll-repeat, on: poll, repeat: true, if: {UN: "74958200002"}, do: BackFromConsultCall}
  - {id: poll-first, on: poll, if: {UN: "74958200003"}, do: {TransferPBX: PBX4951003}}
  - {id: poll-then, on: poll, repeat: true, if: {UN: "74958200003"}, do: BackFromConsultCall}
  - {id: poll-talk, on: poll, if: {UN: "74958200004", talk_seconds: {ge: 0}}, do: {TransferPBX: PBX4951004}}
  - id: event-talk
    on: CallAnswered
    if: {UN: "74958200004", talk_seconds: {ge: 0}}
    do: {PlayPrompt: event-talk}
  - {id: poll-outgoing, on: poll, if: {UN: "4958200005"}, do: {TransferPBX: "8000{UN}101"}}
  - {id: poll-outgoing-pbx, on: poll, if: {UN: "4958200006"}, do: {TransferPBX: PBX4951006}}
  - {id: poll-an, on: poll, if: {UN: "74958200007", AN: "79038200007"}, do: {TransferPBX: PBX4951007}}

  # ---- numbers compared as written (this file has no `normalize`) -------------------------------
  - {id: plain-exact, on: CallAnswered, if: {UN: "74958300011", AN: "79161234567"}, do: {PlayPrompt: plain-exact}}

  # ---- digits accumulate over the call; DTMF is the event's own ---------------------------------
  - {id: dtmf-field, on: DTMF, if: {UN: "74958400001", DTMF: "5"}, do: {PlayPrompt: dtmf-field}}
  - {id: digits-sofar, on: [DTMF, CallAnswered], if: {UN: "74958400002", digits: "123"}, do: {PlayPrompt: digits-sofar}}
"""

RU_RULES = r"""
normalize: ru
timezone: Europe/Moscow

lists:
  ru_vip: ["8 916 555-00-00", "+7916777*"]

maps:
  ru_ext: {"8 (916) 123-45-67": "1001"}

rules:
  - {id: ru-exact, on: CallAnswered, if: {UN: "74958300001", AN: 79161234567}, do: {PlayPrompt: ru-exact}}
  - {id: ru-list, on: CallAnswered, if: {UN: "84958300002", AN: {in: ru_vip}}, do: {PlayPrompt: ru-list}}
  - id: ru-map
    on: CallAnswered
    if: {UN: "74958300003", AN: {in: ru_ext}}
    do: {TransferEXT: "{ru_ext[AN]}"}
  - id: ru-map-condition
    on: CallAnswered
    if: {UN: "74958300008", AN: {in: ru_ext}}
    do: {PlayPrompt: ru-map-condition}
  - id: ru-dn1-prefix
    on: CallAnswered
    if: {UN: "74958300004", DN1: {prefix: "+7 495"}}
    do: {PlayPrompt: ru-dn1-prefix}
  - {id: ru-generic, on: CallAnswered, if: {UN: "74958300005", Generic: "9161234567"}, do: {PlayPrompt: ru-generic}}
  - {id: ru-regex, on: CallAnswered, if: {UN: "74958300006", AN: {regex: '^7916'}}, do: {PlayPrompt: ru-regex}}
  - id: ru-ext-as-written
    on: CallAnswered
    if: {UN: "74958300007", EXT1: "89161234567"}
    do: {PlayPrompt: ru-ext-as-written}
"""

LAST_RULES = r"""
# No timezone here: this file's schedules use the service's (ascrm.yaml: Asia/Yekaterinburg, +05:00).
schedules:
  ekb_morning: {daily: "09:00-10:00"}

rules:
  - id: time-default-zone
    on: CallAnswered
    if: {UN: "74958500001", time: ekb_morning}
    do: {PlayPrompt: time-default-zone}
  - id: poll-catch-all                  # every known call whose UN is none of the tests' own
    on: poll
    repeat: true
    if: {not: {UN: {prefix: ["7495", "495"]}}}
    do: BackFromConsultCall
  - id: catch-all-accepted              # unconditional: the connection test must not see it
    on: CallAccepted
    do: {PlayPrompt: catch-all-accepted}
"""

EXT_BY_AN_CSV = """AN,EXT
79038100041,4041
79038100081,12345
"""

# ---- 15-fields.yaml: each string field with each matcher -------------------------------------------

STRING_FIELDS = ("AN", "UN", "DN1", "DN2", "EXT1", "EXT2", "DTMF", "Generic", "Result", "digits")
# (prefix, width): the field's k-th test value is prefix + k zero-padded to width
FIELD_VALUES = {
    "AN": ("790310000", 2),
    "UN": ("749531000", 2),
    "DN1": ("749532000", 2),
    "DN2": ("749533000", 2),
    "EXT1": ("1", 3),
    "EXT2": ("2", 3),
    "DTMF": ("5", 2),
    "Generic": ("749534000", 2),
    "Result": ("12", 2),
    "digits": ("3", 3),
}
FIELD_EVENTS = {"DTMF": DTMF, "digits": DTMF, "Result": TRANSFER}  # the others: CallAnswered
MATCHERS = (
    "exact",
    "list",
    "list-prefix",
    "prefix",
    "regex",
    "in-inline-list",
    "in-file-list",
    "in-map",
    "not",
)


def value(field: str, k: int) -> str:
    base, width = FIELD_VALUES[field]
    return f"{base}{k:0{width}d}"


def other(field: str) -> str:
    """A value of the field that none of its matchers (but `not`) accepts."""
    base, width = FIELD_VALUES[field]
    return base + "9" * width


def matcher(field: str, name: str) -> tuple[Any, str, str]:
    """(the condition, a value it accepts, a value it refuses) for field."""
    specs: dict[str, tuple[Any, str, str]] = {
        "exact": (value(field, 1), value(field, 1), other(field)),
        "list": ([value(field, 2), value(field, 3)], value(field, 3), other(field)),
        "list-prefix": ([value(field, 4), value(field, 5)[:-1] + "*"], value(field, 5), other(field)),
        "prefix": ({"prefix": value(field, 6)[:-1]}, value(field, 6), other(field)),
        "regex": ({"regex": value(field, 7)[-2:] + "$"}, value(field, 7), other(field)),  # searched
        "in-inline-list": ({"in": "field_inline"}, value(field, 8), other(field)),
        "in-file-list": ({"in": "field_file"}, value(field, 9), other(field)),
        "in-map": ({"in": "field_map"}, value(field, 10), other(field)),
        "not": ({"not": value(field, 1)}, other(field), value(field, 1)),
    }
    return specs[name]


def guard(field: str, name: str) -> tuple[str, str]:
    """The (field, value) only this field+matcher's calls carry: the UN, or the AN when UN is tested."""
    code = f"{STRING_FIELDS.index(field):02d}{MATCHERS.index(name):02d}"
    return ("AN", f"79992{code}00") if field == "UN" else ("UN", f"74952{code}00")


def fields_rules() -> dict[str, Any]:
    rules = []
    for field in STRING_FIELDS:
        for name in MATCHERS:
            rule_id = f"f-{field}-{name}"
            key, number = guard(field, name)
            rules.append(
                {
                    "id": rule_id,
                    "on": FIELD_EVENTS.get(field, CALL_ANSWERED),
                    "if": {key: number, field: matcher(field, name)[0]},
                    "do": {"PlayPrompt": rule_id},
                }
            )
    return {
        "lists": {
            "field_inline": [value(field, 8) for field in STRING_FIELDS],
            "field_file": {"file": "lists/field_values.txt"},
        },
        "maps": {"field_map": {"file": "maps/field_map.csv"}},
        "rules": rules,
    }


def write_rules(folder: Path) -> None:
    (folder / "lists").mkdir(parents=True)
    (folder / "maps").mkdir()
    (folder / "10-main.yaml").write_text(MAIN_RULES)
    (folder / "15-fields.yaml").write_text(yaml.safe_dump(fields_rules(), sort_keys=False))
    (folder / "20-ru.yaml").write_text(RU_RULES)
    (folder / "30-last.yaml").write_text(LAST_RULES)
    (folder / "maps" / "ext_by_an.csv").write_text(EXT_BY_AN_CSV)
    listed = "\n".join(f"{value(field, 9)}   # {field}" for field in STRING_FIELDS)
    (folder / "lists" / "field_values.txt").write_text(f"# one value of each field\n{listed}\n")
    mapped = "\n".join(f"{value(field, 10)},x" for field in STRING_FIELDS)
    (folder / "maps" / "field_map.csv").write_text(f"key,value\n{mapped}\n")


@pytest.fixture(scope="module")
def rules_server(tmp_path_factory: pytest.TempPathFactory, serve_module: ServerFactory) -> Server:
    tmp = tmp_path_factory.mktemp("rules-http")
    write_rules(tmp / "rules")
    config = platform_config(rules="rules", timezone="Asia/Yekaterinburg")
    return serve_module(config, folder=tmp)


@pytest.fixture(scope="module")
def http(rules_server: Server) -> Iterator[httpx.Client]:
    with rules_server.client() as client:
        yield client


# ----------------------------------------------------------------------------------------------------
# String fields


@pytest.mark.parametrize("case", ["accepted", "refused", "absent", "empty"])
@pytest.mark.parametrize("name", MATCHERS)
@pytest.mark.parametrize("field", STRING_FIELDS)
def test_string_field_matcher(http: httpx.Client, field: str, name: str, case: str) -> None:
    spec, accepted, refused = matcher(field, name)
    rule = f"f-{field}-{name}"
    key, number = guard(field, name)
    sent = {"accepted": accepted, "refused": refused, "absent": DROP, "empty": ""}[case]
    matches = case == "accepted" or (case in ("absent", "empty") and name == "not")  # missing: only `not`
    call = Call(http, **{key: number})
    got = call.event(FIELD_EVENTS.get(field, CALL_ANSWERED), **{"DTMF" if field == "digits" else field: sent})
    assert got == (prompt(call.id, rule) if matches else noop(call.id)), f"{field} {sent!r} vs {spec!r}"


def test_dtmf_is_the_events_own_and_digits_accumulate(http: httpx.Client) -> None:
    call = Call(http, UN="74958400001")
    assert call.event(DTMF, DTMF="5") == prompt(call.id, "dtmf-field")
    assert call.event(DTMF, DTMF="1") == noop(call.id)
    assert call.event(CALL_ANSWERED) == noop(call.id)

    call = Call(http, UN="74958400002")
    assert call.event(DTMF, DTMF="1") == noop(call.id)
    assert call.event(DTMF, DTMF="2") == noop(call.id)
    assert call.event(DTMF, DTMF="3") == prompt(call.id, "digits-sofar")
    assert call.event(CALL_ANSWERED) == prompt(call.id, "digits-sofar")  # "dialled so far", on any event
    assert call.event(DTMF, DTMF="4") == noop(call.id)  # "1234"


@pytest.mark.parametrize(
    ("an", "rule"),
    [
        ("79161234567", "ru-exact"),
        ("+7 916 123-45-67", "ru-exact"),
        ("89161234567", "ru-exact"),
        ("8 (916) 123-45-67", "ru-exact"),
        ("9161234567", "ru-exact"),
        ("+79161234568", None),
    ],
)
def test_normalize_ru_compares_number_forms_equal(http: httpx.Client, an: str, rule: str | None) -> None:
    call = Call(http, UN="74958300001", AN=an)
    assert call.event(CALL_ANSWERED) == (prompt(call.id, rule) if rule else noop(call.id))


@pytest.mark.parametrize(
    ("an", "rule"), [("79161234567", "plain-exact"), ("+7 916 123-45-67", None), ("89161234567", None)]
)
def test_without_normalize_numbers_compare_as_written(http: httpx.Client, an: str, rule: str | None) -> None:
    call = Call(http, UN="74958300011", AN=an)
    assert call.event(CALL_ANSWERED) == (prompt(call.id, rule) if rule else noop(call.id))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"UN": "74958300002", "AN": "+7 916 555-00-00"}, "ru-list"),  # list entry and UN given as 8…
        ({"UN": "+7 495 830-00-02", "AN": "89167771234"}, "ru-list"),  # a prefix entry '+7916777*'
        ({"UN": "74958300002", "AN": "79165550001"}, None),
        ({"UN": "74958300004", "DN1": "8 495 111-22-33"}, "ru-dn1-prefix"),
        ({"UN": "74958300004", "DN1": "84991112233"}, None),
        ({"UN": "74958300005", "Generic": "8-916-123-45-67"}, "ru-generic"),
        ({"UN": "74958300006", "AN": "8 916 000 00 00"}, "ru-regex"),  # the regex sees 7916…
        ({"UN": "74958300007", "EXT1": "89161234567"}, "ru-ext-as-written"),  # EXT1 is no number field
        ({"UN": "74958300007", "EXT1": "79161234567"}, None),
    ],
)
def test_normalize_ru_lists_prefixes_and_fields(
    http: httpx.Client, fields: dict[str, str], expected: str | None
) -> None:
    call = Call(http, **fields)
    assert call.event(CALL_ANSWERED) == (prompt(call.id, expected) if expected else noop(call.id))


@pytest.mark.parametrize("an", ["79161234567", "+7 916 123-45-67", "8 916 123 45 67"])
def test_normalize_ru_map_condition(http: httpx.Client, an: str) -> None:
    call = Call(http, UN="74958300008", AN=an)
    assert call.event(CALL_ANSWERED) == prompt(call.id, "ru-map-condition")


@pytest.mark.parametrize("an", ["79161234567", "+7 916 123-45-67", "8 916 123 45 67"])
def test_normalize_ru_map_condition_and_template(http: httpx.Client, an: str) -> None:
    """docs/rules.md: with normalize: ru the file's map keys and AN are brought to 7XXXXXXXXXX first."""
    call = Call(http, UN="74958300003", AN=an)
    assert call.event(CALL_ANSWERED) == answer(call.id, "TransferEXT", "1001")


# ----------------------------------------------------------------------------------------------------
# Time


@pytest.mark.parametrize(
    ("un", "event_time", "rule"),
    [
        ("74957100001", "2027-01-11T10:15:00+03:00", "time-office"),  # Monday
        ("74957100001", "2027-01-11T08:59:59+03:00", None),
        ("74957100001", "2027-01-11T09:00:00+03:00", "time-office"),
        ("74957100001", "2027-01-11T17:59:59+03:00", "time-office"),
        ("74957100001", "2027-01-11T18:00:00+03:00", None),  # an interval's end is closed
        ("74957100001", "2027-01-10T12:00:00+03:00", None),  # Sunday
        ("74957100001", "2027-01-13T12:00:00+03:00", None),  # the holiday (except)
        ("74957100001", "2027-01-16T11:00:00+03:00", "time-office"),  # the working Saturday (include)
        ("74957100001", "2027-01-16T15:00:00+03:00", None),
        ("74957100001", "2027-01-23T11:00:00+03:00", None),  # an ordinary Saturday
        ("74957100001", "2027-01-11T08:30:00+02:00", "time-office"),  # 09:30 in Moscow
        ("74957100001", "2027-01-11T06:30:00Z", "time-office"),  # 09:30 in Moscow
        ("74957100001", "2027-01-11T16:30:00Z", None),  # 19:30 in Moscow
        ("74957100001", "2027-01-11T12:15:00", "time-office"),  # no offset: the service's +05:00
        ("74957100001", "2027-01-11T10:15:00", None),  # 08:15 in Moscow
        ("74957100002", "2027-01-11T20:00:00+03:00", "time-not-office"),
        ("74957100002", "2027-01-11T10:15:00+03:00", None),
        ("74957100002", "2027-01-13T12:00:00+03:00", "time-not-office"),
        ("74957100003", "2027-01-16T11:00:00+03:00", "time-inline"),
        ("74957100003", "2027-01-11T11:00:00+03:00", None),
        ("74957100004", "2027-01-11T02:30:00+03:00", "time-inline-zone"),  # 09:30 in Vladivostok
        ("74957100004", "2027-01-11T09:30:00+03:00", None),
        ("74957100010", "2027-01-11T03:00:00+03:00", "time-named-zone"),  # 10:00 in Vladivostok
        ("74957100010", "2027-01-11T12:00:00+03:00", None),  # 19:00 in Vladivostok
        ("74957100011", "2027-01-11T12:00:00+03:00", "time-not-inline"),
        ("74957100011", "2027-01-10T12:00:00+03:00", None),
        ("74957100005", "2027-01-11T23:30:00+03:00", "time-night"),
        ("74957100005", "2027-01-12T05:59:00+03:00", "time-night"),  # across midnight
        ("74957100005", "2027-01-11T00:30:00+03:00", "time-night"),  # Sunday's night runs into Monday
        ("74957100005", "2027-01-12T06:00:00+03:00", None),
        ("74957100005", "2027-01-11T21:59:00+03:00", None),
        ("74958500001", "2027-01-11T09:30:00+05:00", "time-default-zone"),  # a file without timezone
        ("74958500001", "2027-01-11T09:30:00+03:00", None),  # 11:30 in Yekaterinburg
        ("74958500001", "2027-01-11T09:30:00", "time-default-zone"),
    ],
)
def test_time(http: httpx.Client, un: str, event_time: str, rule: str | None) -> None:
    call = Call(http, UN=un, EventTime=event_time)
    assert call.event(CALL_ANSWERED) == (prompt(call.id, rule) if rule else noop(call.id))


@pytest.mark.parametrize("event_time", [DROP, None, ""])
@pytest.mark.parametrize(
    ("un", "rule"),
    [
        ("74957100006", "time-always"),
        ("74957100007", None),
        ("74957100008", None),
        ("74957100009", "time-not-never"),
    ],
)
def test_time_without_event_time_uses_the_server_clock(
    http: httpx.Client, un: str, rule: str | None, event_time: Any
) -> None:
    call = Call(http, UN=un, EventTime=event_time)
    assert call.event(CALL_ANSWERED) == (prompt(call.id, rule) if rule else noop(call.id))


# ----------------------------------------------------------------------------------------------------
# service, durations, transfer results, seen, any/all/not


@pytest.mark.parametrize(
    ("un", "service", "rule"),
    [
        ("74957200001", 3, "service-name"),
        ("74957200001", 1, None),
        ("74957200001", DROP, None),
        ("74957200002", 4, "service-code"),
        ("74957200002", "MTSSubCLID", "service-code"),  # the platform may send a name
        ("74957200002", 2, None),
        ("74957200003", 1, "service-list"),
        ("74957200003", 2, "service-list"),
        ("74957200003", 3, None),
    ],
)
def test_service(http: httpx.Client, un: str, service: Any, rule: str | None) -> None:
    call = Call(http, UN=un, ServiceType=service)
    assert call.event(CALL_ANSWERED) == (prompt(call.id, rule) if rule else noop(call.id))


def test_service_is_the_calls_when_the_event_has_none(http: httpx.Client) -> None:
    call = Call(http, UN="74957200001")
    assert call.event(HELLO_MESSAGE, ServiceType=3) == noop(call.id)
    assert call.event(CALL_ANSWERED, ServiceType=DROP) == prompt(call.id, "service-name")


@pytest.mark.parametrize(
    ("un", "connect", "seconds", "rule"),
    [
        ("74957300001", (TRANSFER, "1280"), 700, "talk-gt"),
        ("74957300001", (TRANSFER, "1280"), 100, None),
        ("74957300001", (TRANSFER, "1280"), 600, None),  # gt, not ge
        ("74957300001", (SHORT_TRANSFER, "1280"), 601, "talk-gt"),
        ("74957300001", (TRANSFER, "1289"), 700, None),  # never connected: no talk time
        ("74957300002", (TRANSFER, "1280"), 600, "talk-range"),
        ("74957300002", (TRANSFER, "1280"), 899, "talk-range"),
        ("74957300002", (TRANSFER, "1280"), 900, None),
        ("74957300003", (TRANSFER, "1280"), 30, "talk-eq"),
        ("74957300003", (TRANSFER, "1280"), 31, None),
    ],
)
def test_talk_seconds_from_the_connecting_transfer(
    http: httpx.Client, un: str, connect: tuple[int, str], seconds: int, rule: str | None
) -> None:
    call = Call(http, UN=un)
    event_type, result = connect
    assert call.event(CALL_ANSWERED, EventTime=at(-60)) == noop(call.id)
    assert call.event(event_type, EventTime=at(0), Result=result) == noop(call.id)
    assert call.event(REC_START, EventTime=at(seconds)) == (prompt(call.id, rule) if rule else noop(call.id))


def test_talk_seconds_runs_from_the_first_connection(http: httpx.Client) -> None:
    call = Call(http, UN="74957300001")
    assert call.event(TRANSFER, EventTime=at(0), Result="1280") == noop(call.id)
    assert call.event(TRANSFER, EventTime=at(500), Result="1280") == noop(call.id)
    assert call.event(REC_START, EventTime=at(700)) == prompt(call.id, "talk-gt")


@pytest.mark.parametrize(
    ("un", "seconds", "rule"),
    [
        ("74957300004", 130, "call-ge"),
        ("74957300004", 120, "call-ge"),
        ("74957300004", 60, None),
        ("74957300005", 20, "call-range"),
        ("74957300005", 15, "call-range"),
        ("74957300005", 10, None),
        ("74957300005", 21, None),
        ("74957300006", 4, "call-ne-lt"),
        ("74957300006", 5, None),
        ("74957300006", 10, None),
    ],
)
def test_call_seconds_from_the_first_event(http: httpx.Client, un: str, seconds: int, rule: str | None) -> None:
    call = Call(http, UN=un)
    assert call.event(CALL_ACCEPTED, EventTime=at(0)) == catch_all(call.id)
    assert call.event(HELLO_MESSAGE, EventTime=at(2)) == noop(call.id)
    assert call.event(CALL_ANSWERED, EventTime=at(seconds)) == (prompt(call.id, rule) if rule else noop(call.id))


@pytest.mark.parametrize(
    ("un", "transfers", "rule"),
    [
        ("74957400001", [(TRANSFER, "1289")], "ltr-busy"),
        ("74957400001", [(SHORT_TRANSFER, "1289")], "ltr-busy"),
        ("74957400001", [(TRANSFER, "1284")], None),
        ("74957400001", [(TRANSFER, "1289"), (TRANSFER, "1280")], None),  # the last one counts
        ("74957400001", [], None),
        ("74957400002", [(TRANSFER, "1284")], "ltr-no-answer"),
        ("74957400002", [(TRANSFER, "1284"), (TRANSFER, "1289")], None),
        ("74957400003", [(TRANSFER, "486")], "ltr-code"),
        ("74957400003", [(TRANSFER, "603")], "ltr-code"),
        ("74957400003", [(TRANSFER, "487")], None),
        ("74957400004", [(TRANSFER, "1289"), (TRANSFER, "1280")], "ltr-connected"),
        ("74957400005", [(TRANSFER, "1289")], "ltr-list"),
        ("74957400005", [(TRANSFER, "1284")], "ltr-list"),
        ("74957400005", [(TRANSFER, "1280")], None),
    ],
)
def test_last_transfer_result(http: httpx.Client, un: str, transfers: list[tuple[int, str]], rule: str | None) -> None:
    call = Call(http, UN=un)
    for event_type, result in transfers:
        assert call.event(event_type, Result=result) == noop(call.id)
    assert call.event(PREPARE_TO_CONNECT) == (prompt(call.id, rule) if rule else noop(call.id))


@pytest.mark.parametrize(
    ("un", "before", "rule"),
    [
        ("74957500001", [RUN_IVR, HELLO_MESSAGE], "seen-list"),
        ("74957500001", [HELLO_MESSAGE], None),
        ("74957500001", [], None),
        ("74957500002", [DTMF], "seen-one"),
        ("74957500002", [HELLO_MESSAGE], None),
        ("74957500003", [42], "seen-future"),
        ("74957500003", [43], None),
    ],
)
def test_seen(http: httpx.Client, un: str, before: list[int], rule: str | None) -> None:
    call = Call(http, UN=un)
    for event_type in before:
        expected = prompt(call.id, "on-future") if event_type == 42 else noop(call.id)
        assert call.event(event_type) == expected
    assert call.event(CALL_ANSWERED) == (prompt(call.id, rule) if rule else noop(call.id))


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({"UN": "74957600001", "AN": "79036000001"}, "logic-any"),
        ({"UN": "74957600001", "AN": "79036000002", "Generic": "78001234567"}, "logic-any"),
        ({"UN": "74957600001", "AN": "79036000002", "Generic": "74951234567"}, None),
        ({"UN": "74957600002", "AN": "79036000003"}, "logic-all"),
        ({"UN": "74957600002", "AN": "79036000003", "EventTime": "2027-01-11T20:00:00+03:00"}, None),
        ({"UN": "74957600002", "AN": "79046000003"}, None),
        ({"UN": "74957600003", "AN": "79161234567"}, None),  # a VIP during office hours
        ({"UN": "74957600003", "AN": "79165550123", "EventTime": "2027-01-11T20:00:00+03:00"}, "logic-not"),
        ({"UN": "74957600003", "AN": "79036000004"}, "logic-not"),
        ({"UN": "74957600004"}, "logic-nested"),  # no AN: not {AN: {prefix}} holds
        ({"UN": "74957600004", "AN": "79036000005"}, None),
        ({"UN": "74957600004", "AN": "79036000005", "Generic": "74951110000", "ServiceType": 3}, "logic-nested"),
        ({"UN": "74957600004", "AN": "79036000005", "Generic": "74951110000"}, None),
    ],
)
def test_any_all_not(http: httpx.Client, fields: dict[str, Any], rule: str | None) -> None:
    call = Call(http, **fields)
    assert call.event(CALL_ANSWERED) == (prompt(call.id, rule) if rule else noop(call.id))


# ----------------------------------------------------------------------------------------------------
# Rule order, `on`


@pytest.mark.parametrize(
    ("un", "an", "rule"),
    [
        ("74957700001", "79031234567", "order-scan-first"),  # the exact rule matches too, but later
        ("74957700001", "79031299999", "order-scan-first"),
        ("74957700001", "79041234567", "order-fallback"),
        ("74957700002", "79041234567", "order-exact-first"),
        ("74957700002", "79041111111", "order-scan-second"),
        ("74957700002", "79051111111", None),
    ],
)
def test_first_matching_rule_wins(http: httpx.Client, un: str, an: str, rule: str | None) -> None:
    call = Call(http, UN=un, AN=an)
    assert call.event(CALL_ANSWERED) == (prompt(call.id, rule) if rule else noop(call.id))


@pytest.mark.parametrize(
    ("un", "event_type", "rule"),
    [
        ("74957800001", HELLO_MESSAGE, "on-list"),
        ("74957800001", RUN_IVR, "on-list"),
        ("74957800001", FAX_TONE, "on-list"),
        ("74957800001", T38, None),
        ("74957800002", REC_START, "on-code"),
        ("74957800002", 14, None),
        ("74957800002", 42, "on-future"),
        ("74957800002", 43, None),
        ("74957800002", "42", "on-future"),
    ],
)
def test_on_lists_codes_and_future_codes(http: httpx.Client, un: str, event_type: Any, rule: str | None) -> None:
    call = Call(http, UN=un)
    assert call.event(event_type) == (prompt(call.id, rule) if rule else noop(call.id))


# ----------------------------------------------------------------------------------------------------
# Actions and templates


@pytest.mark.parametrize(
    ("action", "param", "an", "event_type"),
    [
        ("TransferDN", "74951234567", "79038000001", CALL_ACCEPTED),
        ("TransferEXT", "1234", "79038000002", CALL_ACCEPTED),
        ("PlayPrompt", "greeting", "79038000003", CALL_ACCEPTED),
        ("Hangup", "", "79038000004", CALL_ACCEPTED),
        ("TransferPBX", "PBX4951234", "79038000005", CALL_ACCEPTED),
        ("PlayMenuBlock", "main_menu", "79038000006", CALL_ACCEPTED),
        ("PlayPromptAndBack", "please_wait", "79038000007", CALL_ACCEPTED),
        ("PlayPromptToOperator", "vip_client", "79038000008", PREPARE_TO_CONNECT),
        ("TransferDNRec", "74951234568", "79038000009", CALL_ACCEPTED),
        ("TransferPBXRec", "PBX4955678", "79038000010", CALL_ACCEPTED),
        ("IgnorePromptToOperator", "", "79038000011", PREPARE_TO_CONNECT),
        ("BackFromConsultCall", "", "79038000012", None),  # a poll
    ],
)
def test_every_action_with_its_code(
    http: httpx.Client, action: str, param: str, an: str, event_type: int | None
) -> None:
    call = Call(http, UN="74958000001", AN=an)
    if event_type is None:
        assert call.event(CALL_ANSWERED) == noop(call.id)
        got = call.poll()
    else:
        got = call.event(event_type)
    assert got == {"CallID": call.id, "EventType": ACTION_CODES[action], "Param": param}


def test_template_fields(http: httpx.Client) -> None:
    call = Call(http, UN="74958100001", AN="74957001122")
    assert call.event(CALL_ANSWERED) == answer(call.id, "TransferDN", "74957001122")

    call = Call(http, UN="74958100002", DN1="74951230000")
    assert call.event(CALL_ANSWERED) == answer(call.id, "TransferDNRec", "74951230000")

    call = Call(http, UN="74958100006", Generic="74950001111", DN2="74950002222")
    assert call.event(CALL_ANSWERED) == answer(call.id, "PlayPromptAndBack", "hello_74950001111_74950002222")


def test_template_with_a_missing_field_lets_the_next_rule_answer(http: httpx.Client) -> None:
    call = Call(http, UN="74958100002")
    assert call.event(CALL_ANSWERED) == prompt(call.id, "tpl-dn1-next")
    call = Call(http, UN="74958100006", Generic="74950001111")  # no DN2, and no rule after it
    assert call.event(CALL_ANSWERED) == noop(call.id)


def test_template_digits(http: httpx.Client) -> None:
    call = Call(http, UN="74958100003")
    assert call.event(DTMF, DTMF="12") == noop(call.id)
    assert call.event(DTMF, DTMF="34") == answer(call.id, "TransferEXT", "1234")


@pytest.mark.parametrize(
    ("un", "an", "expected"),
    [
        ("74958100004", "79038100041", ("TransferEXT", "4041")),  # from the CSV file
        ("74958100004", "79038100042", ("PlayPrompt", "tpl-map-next")),  # a map miss: the next rule
        ("74958100004", DROP, ("PlayPrompt", "tpl-map-next")),
        ("74958100005", "79038100051", ("TransferEXT", "3051")),  # an inline map
        ("74958100005", "79038100041", ("PlayPrompt", "tpl-inline-map-next")),
    ],
)
def test_template_map(http: httpx.Client, un: str, an: Any, expected: tuple[str, str]) -> None:
    call = Call(http, UN=un, AN=an)
    assert call.event(CALL_ANSWERED) == answer(call.id, *expected)


def test_rendered_param_invalid_for_the_action_is_no_action_and_logged(
    rules_server: Server, http: httpx.Client
) -> None:
    call = Call(http, UN="74958100007")
    assert call.event(DTMF, DTMF="12") == prompt(call.id, "tpl-bad-digits-next")
    assert call.event(DTMF, DTMF="3") == noop(call.id)  # TransferEXT "123": not sent, not passed on
    assert rules_server.logged("param_rejected", call_id=call.id, rule="tpl-bad-digits")

    call = Call(http, UN="74958100008", AN="79038100081")  # the map's value is 12345
    assert call.event(CALL_ANSWERED) == noop(call.id)
    assert rules_server.logged("param_rejected", call_id=call.id, rule="tpl-bad-map")


# ----------------------------------------------------------------------------------------------------
# Polls


def test_poll_rule_answers_once_per_call(http: httpx.Client) -> None:
    for _ in range(2):  # each call gets it once
        call = Call(http, UN="74958200001")
        assert call.event(CALL_ANSWERED) == noop(call.id)
        assert call.poll() == answer(call.id, "TransferPBX", "PBX4951001")
        assert call.poll() == noop(call.id)
        assert call.poll() == noop(call.id)


def test_poll_rule_with_repeat_answers_every_poll(http: httpx.Client) -> None:
    call = Call(http, UN="74958200002")
    assert call.event(CALL_ANSWERED) == noop(call.id)
    for _ in range(3):
        assert call.poll() == answer(call.id, "BackFromConsultCall")


def test_poll_rule_that_answered_lets_the_next_rule_decide(http: httpx.Client) -> None:
    call = Call(http, UN="74958200003")
    assert call.event(CALL_ANSWERED) == noop(call.id)
    assert call.poll() == answer(call.id, "TransferPBX", "PBX4951003")
    assert call.poll() == answer(call.id, "BackFromConsultCall")
    assert call.poll() == answer(call.id, "BackFromConsultCall")


def test_poll_sees_the_calls_an_and_un(http: httpx.Client) -> None:
    call = Call(http, UN="74958200007", AN="79038200007")
    assert call.event(CALL_ANSWERED) == noop(call.id)
    assert call.poll() == answer(call.id, "TransferPBX", "PBX4951007")
    other_call = Call(http, UN="74958200007", AN="79038200008")
    assert other_call.event(CALL_ANSWERED) == noop(other_call.id)
    assert other_call.poll() == noop(other_call.id)


def test_poll_of_an_unknown_call_is_no_action(http: httpx.Client) -> None:
    unknown = 999_000_001
    assert json_answer(http.get(f"/CallEvent/{unknown}")) == noop(unknown)
    # once the call is known, the catch-all poll rule (any UN but the tests') answers it
    body = {"CallID": unknown, "EventTime": at(0), "EventType": CALL_ANSWERED, "ServiceType": 1}
    assert json_answer(http.post("/CallEvent", json=body)) == noop(unknown)
    assert json_answer(http.get(f"/CallEvent/{unknown}")) == answer(unknown, "BackFromConsultCall")


def test_talk_seconds_on_polls_counts_from_the_first_poll(http: httpx.Client) -> None:
    call = Call(http, UN="74958200004")
    # not connected yet: no talk time, so even {ge: 0} does not hold
    assert call.event(CALL_ANSWERED, EventTime=DROP) == noop(call.id)
    assert call.poll() == answer(call.id, "TransferPBX", "PBX4951004")
    # the first poll connected the call (server clock); an event without EventTime is later still
    assert call.event(CALL_ANSWERED, EventTime=DROP) == prompt(call.id, "event-talk")


def test_outgoing_poll_params_take_the_outgoing_format(rules_server: Server, http: httpx.Client) -> None:
    call = Call(http, UN="4958200005", ServiceType=2)  # outgoing: 8000 + area code + number
    assert call.event(CALL_ACCEPTED) == catch_all(call.id)
    assert call.poll() == answer(call.id, "TransferPBX", "80004958200005101")

    call = Call(http, UN="4958200005", ServiceType=1)  # inbound: that is no PBX… number
    assert call.event(CALL_ACCEPTED) == catch_all(call.id)
    assert call.poll() == noop(call.id)
    assert rules_server.logged("param_rejected", call_id=call.id, rule="poll-outgoing")

    call = Call(http, UN="4958200006", ServiceType=1)
    assert call.event(CALL_ACCEPTED) == catch_all(call.id)
    assert call.poll() == answer(call.id, "TransferPBX", "PBX4951006")

    call = Call(http, UN="4958200006", ServiceType=2)  # outgoing polls do not take PBX…
    assert call.event(CALL_ACCEPTED) == catch_all(call.id)
    assert call.poll() == noop(call.id)
    assert rules_server.logged("param_rejected", call_id=call.id, rule="poll-outgoing-pbx")


# ----------------------------------------------------------------------------------------------------
# The connection test


def test_connection_test_is_no_action_whatever_the_rules(http: httpx.Client) -> None:
    keys = ("CallID", "EventTime", "AN", "UN", "DN1", "DN2", "EXT1", "EXT2", "DTMF", "Generic", "Result")
    empty: dict[str, Any] = {**dict.fromkeys(keys, ""), "UN": "74951234567", "EventType": "", "ServiceType": ""}
    assert json_answer(http.get("/CallEvent")) == noop(0)
    assert json_answer(http.post("/CallEvent/0", json=empty)) == noop(0)
    assert json_answer(http.post("/CallEvent/0", content=b"")) == noop(0)
    accepted = empty | {"EventType": CALL_ACCEPTED, "ServiceType": 1, "AN": "79161234567"}
    assert json_answer(http.post("/CallEvent/0", json=accepted)) == noop(0)
    # the same CallAccepted on a real call is answered by the unconditional rule
    call = Call(http, UN="74951234567", AN="79161234567")
    assert call.event(CALL_ACCEPTED) == catch_all(call.id)


# ----------------------------------------------------------------------------------------------------
# A whole call with the shipped example rules (/work/main/rules)

EXAMPLE_RULES = Path(__file__).resolve().parents[1] / "rules"


@pytest.fixture(scope="module")
def example_http(tmp_path_factory: pytest.TempPathFactory, serve_module: ServerFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("example-rules")
    config = platform_config(rules=str(EXAMPLE_RULES))
    running = serve_module(config, folder=tmp)
    try:
        with running.client() as client:
            yield client
    finally:
        running.stop()


OFFICE = "2027-01-11T10:15:00+03:00"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"AN": "79161234567"}, ("TransferEXT", "1001")),  # maps/managers.csv
        ({"AN": "79031112233"}, ("TransferEXT", "1005")),
        ({"AN": "79031112233", "EventTime": "2027-01-16T11:00:00+03:00"}, ("TransferEXT", "1005")),  # Sat
        ({"AN": "74990000000"}, ("Hangup", "")),  # lists/blocked.txt
        ({"AN": "78005551234"}, ("Hangup", "")),  # its prefix 7800555*
        ({"AN": "74990000000", "EventTime": "2027-01-11T20:00:00+03:00"}, ("Hangup", "")),
        ({"AN": "74951230000", "EventTime": "2027-01-11T20:00:00+03:00"}, ("PlayPrompt", "after_hours")),
        ({"AN": "79161234567", "EventTime": "2027-01-11T20:00:00+03:00"}, ("PlayPrompt", "after_hours")),
        ({"AN": "79161234567", "EventTime": "2027-01-07T11:00:00+03:00"}, ("PlayPrompt", "after_hours")),
        ({"AN": "74951230000"}, None),  # office hours, not a client: the platform's own scenario
        (
            {"AN": "74951234567", "UN": "74951234567", "DN1": "88001234567", "ServiceType": 2},
            ("TransferDN", "78001234567"),  # 20-outgoing.yaml has normalize: ru
        ),
        ({"AN": "74951234567", "DN1": "74991234567", "ServiceType": 2}, None),
    ],
)
def test_example_rules_call_accepted(
    example_http: httpx.Client, fields: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    call = Call(example_http, **{"UN": "74951110000", "EventTime": OFFICE, **fields})
    assert call.event(CALL_ACCEPTED) == (answer(call.id, *expected) if expected else noop(call.id))


def test_example_rules_a_whole_call(example_http: httpx.Client) -> None:
    call = Call(example_http, AN="74951230000", UN="74951110000")
    assert call.event(CALL_ACCEPTED, EventTime=at(0)) == noop(call.id)
    assert call.event(CALL_ANSWERED, EventTime=at(1)) == noop(call.id)
    assert call.event(HELLO_MESSAGE, EventTime=at(5)) == noop(call.id)
    assert call.event(DTMF, EventTime=at(8), DTMF="1") == answer(call.id, "TransferDN", "74951112233")
    assert call.event(8, EventTime=at(9), DN1="74951112233") == noop(call.id)  # GoToTransfer
    assert call.event(TRANSFER, EventTime=at(30), DN1="74951112233", Result="1289") == noop(call.id)
    assert call.event(PREPARE_TO_CONNECT, EventTime=at(31)) == answer(call.id, "TransferDN", "74959990000")
    assert call.event(TRANSFER, EventTime=at(40), DN1="74959990000", Result="1280") == noop(call.id)
    assert call.event(BDROPPED, EventTime=at(300)) == answer(call.id, "PlayMenuBlock", "rating")
    assert call.event(15, EventTime=at(320), Result="1") == noop(call.id)  # EndCall


def test_example_rules_extension_dialled_digit_by_digit(example_http: httpx.Client) -> None:
    call = Call(example_http, AN="74951230001", UN="74951110000")
    assert call.event(CALL_ACCEPTED) == noop(call.id)
    assert call.event(DTMF, DTMF="2") == noop(call.id)
    assert call.event(DTMF, DTMF="0") == noop(call.id)
    assert call.event(DTMF, DTMF="0") == noop(call.id)
    assert call.event(DTMF, DTMF="7") == answer(call.id, "TransferEXT", "2007")


@pytest.mark.parametrize(
    ("an", "result", "expected"),
    [
        ("79165550123", "1289", ("PlayPromptToOperator", "vip_client")),  # whisper-vip comes first
        ("74951230002", "1284", ("TransferDN", "74959990000")),
        ("74951230003", "1280", None),
    ],
)
def test_example_rules_prepare_to_connect(
    example_http: httpx.Client, an: str, result: str, expected: tuple[str, str] | None
) -> None:
    call = Call(example_http, AN=an, UN="74951110000")
    assert call.event(TRANSFER, Result=result) == noop(call.id)
    assert call.event(PREPARE_TO_CONNECT) == (answer(call.id, *expected) if expected else noop(call.id))


@pytest.mark.parametrize(("talking", "expected"), [(700, ("TransferPBX", "PBX4951234")), (100, None)])
def test_example_rules_long_call_escalates_once(
    example_http: httpx.Client, talking: int, expected: tuple[str, str] | None
) -> None:
    connected = datetime.now(UTC) - timedelta(seconds=talking)  # polls run on the server clock
    call = Call(example_http, AN="74951230004", UN="74951110000", EventTime=connected.isoformat())
    assert call.event(TRANSFER, DN1="74951112233", Result="1280") == noop(call.id)
    assert call.poll() == (answer(call.id, *expected) if expected else noop(call.id))
    assert call.poll() == noop(call.id)
