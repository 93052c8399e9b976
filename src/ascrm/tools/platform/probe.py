"""`ascrm probe`: act as the platform against a CRM endpoint and report every deviation from the protocol."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Final

from ascrm.tools.platform.call import Exchange, Observer, Pacing, play_call
from ascrm.tools.platform.client import PlatformClient, Reply, Target, TransportError
from ascrm.tools.platform.conformance import Deviation, Verdict, check_answer
from ascrm.tools.platform.scenarios import Scenario

# Exit codes, shared with `ascrm emulate`.
PASSED: Final = 0
DEVIATIONS: Final = 1
USAGE: Final = 2  # also what `ascrm` returns for any error it reports (a bad option or file)
UNREACHABLE: Final = 3
CREDENTIALS: Final = 4


@dataclass(frozen=True, slots=True)
class Check:
    """One request of the probe and its outcome."""

    request: str
    status: int | None
    seconds: float | None
    answer: str | None
    deviations: tuple[Deviation, ...]

    def line(self, strict: bool) -> str:
        """The check as a line of the report, its deviations indented below."""
        bad = any(d.severity == "error" or strict for d in self.deviations)
        mark = "FAIL" if bad else "warn" if self.deviations else "ok"
        outcome = "no answer" if self.status is None else f"{self.status}"
        if self.answer:
            outcome += f" {self.answer}"
        if self.seconds is not None:
            outcome += f" in {self.seconds * 1000:.0f} ms"
        lines = [f"{mark:<4}  {self.request}: {outcome}"]
        lines += [f"        {d}" for d in self.deviations]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """The check as a JSON-ready mapping."""
        return {
            "request": self.request,
            "status": self.status,
            "seconds": self.seconds,
            "answer": self.answer,
            "deviations": [{"check": d.check, "severity": d.severity, "message": d.message} for d in self.deviations],
        }


@dataclass(slots=True)
class ProbeReport:
    """Everything the probe saw, and the verdict as an exit code."""

    url: str
    strict: bool = False
    checks: list[Check] = field(default_factory=list)
    fatal: str | None = None  # why the probe could not go on (unreachable, TLS, credentials)
    fatal_code: int = PASSED

    @property
    def errors(self) -> int:
        """Deviations that fail the probe (warnings too with --strict)."""
        return sum(1 for c in self.checks for d in c.deviations if d.severity == "error" or self.strict)

    @property
    def warnings(self) -> int:
        """Warning deviations."""
        return sum(1 for c in self.checks for d in c.deviations if d.severity == "warning")

    @property
    def exit_code(self) -> int:
        """0 passed, 1 deviations, 3 unreachable or TLS failed, 4 credentials refused."""
        if self.fatal_code != PASSED:
            return self.fatal_code
        return DEVIATIONS if self.errors else PASSED

    def summary(self) -> str:
        """The closing line."""
        if self.fatal is not None:
            return f"probe: FAILED: {self.fatal}"
        counts = f"{len(self.checks)} requests, {self.errors} error(s), {self.warnings} warning(s)"
        return f"probe: {'FAILED' if self.errors else 'passed'}: {counts}"

    def text(self) -> str:
        """The whole report, one check per line."""
        lines = [f"probe {self.url}"] + [check.line(self.strict) for check in self.checks]
        return "\n".join([*lines, self.summary()])

    def as_json(self) -> dict[str, Any]:
        """The report as a JSON-ready mapping."""
        return {
            "url": self.url,
            "passed": self.exit_code == PASSED,
            "exit_code": self.exit_code,
            "fatal": self.fatal,
            "errors": self.errors,
            "warnings": self.warnings,
            "checks": [check.as_json() for check in self.checks],
        }


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """What to probe beyond the connection test."""

    un: str = "74951234567"
    call: Scenario | None = None
    pacing: Pacing = field(default_factory=lambda: Pacing(pause_scale=0.0, talk=6.5))
    strict: bool = False
    seed: int | None = None


async def probe(target: Target, options: ProbeOptions) -> ProbeReport:
    """Run the connection test, the unauthenticated request and (with options.call) one scripted call."""
    report = ProbeReport(target.base_url, options.strict)
    async with PlatformClient(target) as client:
        if not await _connection_test(client, report, options.un):
            return report
    async with PlatformClient(target, authenticate=False) as anonymous:
        await _without_credentials(anonymous, report)
    if options.call is not None:
        rng = random.Random(options.seed)  # noqa: S311 - a made-up call, not a secret
        call_id = rng.randrange(2**32, 2**48)
        async with PlatformClient(target) as client:
            await play_call(client, options.call, call_id, rng, _recorder(report, call_id), pacing=options.pacing)
    return report


async def _connection_test(client: PlatformClient, report: ProbeReport, un: str) -> bool:
    """Both requests of the connection test; False when the probe cannot go on."""
    requests = (
        ("GET /CallEvent (connection test)", client.connection_test_get),
        (f"POST /CallEvent/0 (connection test, UN {un})", lambda: client.connection_test_post(un)),
    )
    for label, send in requests:
        try:
            reply = await send()
        except TransportError as exc:
            if exc.kind in ("unreachable", "tls"):
                report.fatal, report.fatal_code = str(exc), UNREACHABLE
                return False
            report.checks.append(Check(label, None, None, None, (Deviation("transport", str(exc)),)))
            continue
        if reply.status in (401, 403):
            report.checks.append(Check(label, reply.status, reply.seconds, None, _challenge(reply)))
            user = client.target.user
            given = f"the credentials of user {user!r}" if user else "the request: no credentials were given"
            hint = "" if user else " (--user, and --password-env NAME or ASCRM_PROBE_PASSWORD)"
            report.fatal, report.fatal_code = f"{reply.status}: the endpoint refused {given}{hint}", CREDENTIALS
            return False
        verdict = check_answer(reply.status, reply.content_type, reply.body, call_id=0, connection_test=True)
        report.checks.append(_check(label, reply, verdict))
    return True


async def _without_credentials(client: PlatformClient, report: ProbeReport) -> None:
    label = "GET /CallEvent without credentials"
    try:
        reply = await client.connection_test_get()
    except TransportError as exc:
        report.checks.append(Check(label, None, None, None, (Deviation("transport", str(exc)),)))
        return
    deviations: tuple[Deviation, ...]
    if reply.status == 401:
        deviations = _challenge(reply)
    else:
        message = f"status {reply.status} without credentials: the platform always sends Basic auth; expected 401"
        deviations = (Deviation("auth", message, "warning"),)
    report.checks.append(Check(label, reply.status, reply.seconds, None, deviations))


def _challenge(reply: Reply) -> tuple[Deviation, ...]:
    challenge = reply.www_authenticate
    if challenge is None or not challenge.lower().startswith("basic"):
        got = "none" if challenge is None else repr(challenge)
        message = (
            f"{reply.status} without a 'WWW-Authenticate: Basic realm=…' challenge (got {got}):"
            " a client that waits for the challenge never sends its credentials"
        )
        return (Deviation("www_authenticate", message),)
    return ()


def _check(label: str, reply: Reply, verdict: Verdict) -> Check:
    answer = verdict.describe() if reply.status == 200 and not verdict.failed else None
    return Check(label, reply.status, reply.seconds, answer, verdict.deviations)


def _recorder(report: ProbeReport, call_id: int) -> Observer:
    polls = 0

    def record(exchange: Exchange) -> None:
        nonlocal polls
        if exchange.kind == "poll":
            polls += 1
            label = f"GET /CallEvent/{call_id} (poll {polls})"
        else:
            label = f"POST /CallEvent {exchange.label} (call {call_id})"
        if exchange.failure is not None:
            report.checks.append(Check(label, None, None, None, (Deviation("transport", str(exchange.failure)),)))
        elif exchange.reply is not None and exchange.verdict is not None:
            report.checks.append(_check(label, exchange.reply, exchange.verdict))

    return record
