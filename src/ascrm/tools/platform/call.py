"""One scripted call played as the platform plays it: its events POSTed in order, polls every few seconds while
connected, and the platform's reactions to a bad answer (a POST not 200 ends the call, a bad poll answer ends polling).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import orjson

from ascrm.core.protocol import CRMDDATA_FIELDS, RESULT_CONNECTED, EventType, ServiceType, code_name
from ascrm.tools.platform.client import PlatformClient, Reply, TransportError
from ascrm.tools.platform.conformance import Verdict, check_answer
from ascrm.tools.platform.scenarios import RenderedStep, Scenario

_CONNECTING = frozenset({EventType.Transfer, EventType.ShortTransfer})
_DISCONNECTING = frozenset({EventType.EndCall, EventType.BDropped})


@dataclass(frozen=True, slots=True)
class Pacing:
    """How fast calls run: pauses are scaled by pause_scale (0: none); polls come every poll_interval seconds.

    talk, when set, replaces the pause after a call is connected (so a quick run still sees its polls).
    """

    pause_scale: float = 1.0
    poll_interval: float = 3.0
    talk: float | None = None


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request of a call and what came of it: an answer with its verdict, or a transport failure."""

    kind: Literal["event", "poll"]
    label: str  # the event's name, or "poll"
    call_id: int
    reply: Reply | None
    verdict: Verdict | None
    failure: TransportError | None = None


Observer = Callable[[Exchange], None]
Outcome = Literal["completed", "cut", "dropped"]


def crmddata(call_id: int, event: EventType | int, service: ServiceType | int, fields: dict[str, str]) -> bytes:
    """A CRMDData body as the platform sends it: every field present, empty when it has nothing to say."""
    body: dict[str, object] = dict.fromkeys(CRMDDATA_FIELDS, "")
    body.update(fields)
    body["CallID"] = call_id
    body["EventTime"] = datetime.now().astimezone().isoformat(timespec="seconds")
    body["EventType"] = int(event)
    body["ServiceType"] = int(service)
    return orjson.dumps(body)


async def play_call(
    client: PlatformClient,
    scenario: Scenario,
    call_id: int,
    rng: random.Random,
    observe: Observer,
    *,
    pacing: Pacing = Pacing(),
    deadline: float = math.inf,
    joined: float = 0.0,
) -> Outcome:
    """Play one call: "completed"; "cut" at the deadline (returned then); "dropped" as the platform would drop it.

    joined, from 0 to 1, joins the call that far into its script: what was due before is not sent.
    """
    loop = asyncio.get_running_loop()
    call = scenario.render(rng)
    outgoing = scenario.service == ServiceType.MTSPBX
    schedule = _schedule(call.steps, rng, pacing)
    begin = loop.time()
    origin = begin - joined * schedule[-1]
    next_poll = math.inf  # not connected
    for step, offset in zip(call.steps, schedule, strict=True):
        at = origin + offset
        while next_poll < at:  # connected: poll until the next event is due
            if next_poll >= deadline:
                await _sleep_until(loop, deadline)
                return "cut"
            if next_poll < begin:  # due before the call was joined
                next_poll += pacing.poll_interval
                continue
            await _sleep_until(loop, next_poll)
            if not await _poll(client, call_id, outgoing, observe):
                next_poll = math.inf  # the platform stops polling a call that answered badly
                break
            next_poll = max(next_poll + pacing.poll_interval, loop.time())
        if at >= deadline:
            await _sleep_until(loop, deadline)
            return "cut"
        if at >= begin:
            await _sleep_until(loop, at)
            if not await _post(client, call_id, scenario.service, step, observe):
                return "dropped"  # a POST answered other than 200 (or not at all): the platform stops sending events
        if _connects(step):
            next_poll = (loop.time() if at >= begin else at) + pacing.poll_interval
        elif step.event in _DISCONNECTING:
            next_poll = math.inf
    return "completed"


def _connects(step: RenderedStep) -> bool:
    return step.event in _CONNECTING and step.fields.get("Result") == RESULT_CONNECTED


def _schedule(steps: tuple[RenderedStep, ...], rng: random.Random, pacing: Pacing) -> list[float]:
    """When each step is due, in seconds from the call's start."""
    offsets, at, connected = [], 0.0, False
    for step in steps:
        pause = rng.uniform(*step.pause) * pacing.pause_scale
        at += pacing.talk if connected and pacing.talk is not None else pause
        offsets.append(at)
        connected = _connects(step)
    return offsets


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    delay = when - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _post(
    client: PlatformClient, call_id: int, service: ServiceType | int, step: RenderedStep, observe: Observer
) -> bool:
    label = code_name(step.event) or "event"
    try:
        reply = await client.post_event(crmddata(call_id, step.event, service, step.fields))
    except TransportError as exc:
        observe(Exchange("event", label, call_id, None, None, exc))
        return False
    verdict = check_answer(reply.status, reply.content_type, reply.body, call_id=call_id)
    observe(Exchange("event", label, call_id, reply, verdict))
    return reply.status == 200


async def _poll(client: PlatformClient, call_id: int, outgoing: bool, observe: Observer) -> bool:
    try:
        reply = await client.poll(call_id)
    except TransportError as exc:
        observe(Exchange("poll", "poll", call_id, None, None, exc))
        return False
    verdict = check_answer(reply.status, reply.content_type, reply.body, call_id=call_id, outgoing_poll=outgoing)
    observe(Exchange("poll", "poll", call_id, reply, verdict))
    return not verdict.failed
