"""Warnings for rules the platform will ignore or that can never match (the protocol's rules)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ascrm.core.protocol import (
    OPERATOR_PROMPT_ACTIONS,
    OUTGOING_POLL_ACTIONS,
    OUTGOING_POLL_LIMIT,
    OUTGOING_POST_ACTIONS,
    POLL_ONLY_ACTIONS,
    READ_ON_POST,
    Action,
    EventType,
    ServiceType,
    code_name,
    parse_code,
)
from ascrm.core.rules.excerpt import excerpt
from ascrm.core.rules.load import Problem
from ascrm.core.rules.rule import POLL
from ascrm.core.rules.services import admits, only

if TYPE_CHECKING:
    from ascrm.core.rules.rule import CompiledRule


def lint(rules: Sequence[CompiledRule], raw_rules: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """Every warning for a compiled rule set (raw_rules: the rules as written, same order)."""
    warnings: list[Problem] = []
    for rule, raw in zip(rules, raw_rules, strict=True):
        for message in _platform_semantics(rule, raw):
            warnings.append(Problem(rule.location, f"rule {excerpt(rule.id)}: {message}", "warning"))
    warnings += _unreachable(rules)
    return warnings


def _platform_semantics(rule: CompiledRule, raw: Mapping[str, Any]) -> list[str]:
    messages = []
    action = rule.action.name
    conditions = raw.get("if")
    outgoing = only(conditions, ServiceType.MTSPBX)
    for key in sorted(rule.events, key=str):
        if key == POLL:  # inbound calls' polls take any action; outgoing ones' below
            continue
        event = code_name(parse_code(key, EventType)) or str(key)
        readable = key in READ_ON_POST or (key == EventType.BDropped and rule.action == Action.PlayMenuBlock)
        if not readable:
            messages.append(f"the platform does not read the answer to {event}, so {action} has no effect")
        elif rule.action in OPERATOR_PROMPT_ACTIONS and key != EventType.PrepareToConnect:
            messages.append(f"{action} is honoured only as the answer to PrepareToConnect, not {event}")
        elif rule.action in POLL_ONLY_ACTIONS:
            messages.append(f"{action} is honoured only in answers to polls (on: poll), not to {event}")
        elif outgoing and (key != EventType.CallAccepted or rule.action not in OUTGOING_POST_ACTIONS):
            messages.append(
                "for outgoing calls (MTSPBX) the platform reads only TransferDN on CallAccepted,"
                f" not {action} on {event}"
            )
    if POLL in rule.events and rule.action not in OUTGOING_POLL_ACTIONS and admits(conditions, ServiceType.MTSPBX):
        if outgoing:
            messages.append(f"{action} never answers its polls: {OUTGOING_POLL_LIMIT}")
        else:
            messages.append(
                f"{action} is not sent to a poll of an outgoing call ({OUTGOING_POLL_LIMIT}):"
                " give the rule a `service` condition that leaves MTSPBX out"
            )
    return messages


def _unreachable(rules: Sequence[CompiledRule]) -> list[Problem]:
    warnings = []
    always: list[CompiledRule] = []  # earlier rules with no conditions and a literal param
    for rule in rules:
        for earlier in always:
            shared = rule.events & earlier.events
            if POLL in shared and not earlier.repeat:
                shared = shared - {POLL}  # a one-shot poll rule lets later poll rules answer later polls
            if shared and shared == rule.events:
                message = (
                    f"rule {excerpt(rule.id)} can never match: rule {excerpt(earlier.id)} ({earlier.location}) "
                    "has no conditions and always answers first"
                )
                warnings.append(Problem(rule.location, message, "warning"))
                break
        if rule.condition is None and rule.template.literal is not None:
            always.append(rule)
    return warnings
