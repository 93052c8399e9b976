"""Rule reloads under load: ascrm keeps answering while its rules are rewritten 100 times, a third broken.

Starts `ascrm serve` on 127.0.0.1 watching a rules folder (the decision log in its own file), loads it
with concurrent platform clients (httpx, keep-alive) POSTing CallAccepted events, and meanwhile saves
the rule file over and over: good versions (each answering with its own prompt, `prompt_v<N>`, behind
filler rules so a load takes a while) and broken ones (a bad param). Saves alternate between writing
in place and writing a temporary file renamed over the rule file, as editors do.

Reported:
- requests sent, and answers other than 200 (goal: 0);
- inconsistent answers (goal: 0): a prompt of a version that was never good; a client seeing an older
  version after a newer one (a swap is one step, so answers never go back); a decision-log line whose
  rule or prompt is not the one of its rules revision;
- reload latency: from the save to the first answer with the new version (goal: median under 1.5 s,
  reload.settle_ms 1000 included);
- rejected saves, as seen in GET /admin/rules (each broken save must be rejected, naming file:line).

Run: python bench/reliability.py [--saves 100] [--clients 8] [--fillers 300] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from throughput import free_port, start, wait_ready

from ascrm.tools.platform.tally import nearest_rank

USER, PASSWORD, ADMIN = "autosecretary", "reliability-pw", ("ops", "reliability-admin")
TIMEOUT = 10.0  # seconds a good save may take to show in the answers before it counts as lost


def rule_set(version: int, fillers: int, *, broken: bool = False) -> str:
    """A rule set answering CallAccepted with prompt_v<version>; broken: with a param ascrm refuses."""
    lines = ["rules:"]
    for n in range(fillers):
        lines += [f"  - id: filler_{n}", "    on: CallAccepted", f"    if: {{AN: '7000{n:07d}'}}", "    do: Hangup"]
    action = "TransferEXT: '12'" if broken else f"PlayPrompt: prompt_v{version}"
    lines += [f"  - id: answer_v{version}", "    on: CallAccepted", f"    do: {{{action}}}"]
    return "\n".join(lines) + "\n"


@dataclass
class Tally:
    """What the load clients saw."""

    sent: int = 0
    non_200: int = 0
    errors: int = 0  # transport errors (no answer at all)
    inconsistent: list[str] = field(default_factory=list)
    first_seen: dict[int, float] = field(default_factory=dict)  # version -> monotonic time first answered


async def client(url: str, stop: asyncio.Event, tally: Tally, good: set[int], worker: int) -> None:
    """POST CallAccepted events with fresh CallIDs until stop; check each answer against the saves."""
    newest = -1
    async with httpx.AsyncClient(base_url=url, auth=(USER, PASSWORD), timeout=5) as http:
        call_id = worker * 10_000_000
        while not stop.is_set():
            call_id += 1
            tally.sent += 1
            try:
                response = await http.post("/CallEvent", json={"CallID": call_id, "EventType": "CallAccepted"})
            except httpx.TransportError as exc:
                tally.errors += 1
                tally.inconsistent.append(f"call {call_id}: no answer: {exc!r}")
                continue
            if response.status_code != 200:
                tally.non_200 += 1
                continue
            param = response.json().get("Param", "")
            version = int(param.removeprefix("prompt_v")) if param.startswith("prompt_v") else -1
            if version not in good:
                tally.inconsistent.append(f"call {call_id}: {param!r} is not the answer of any good save")
            elif version < newest:
                tally.inconsistent.append(f"call {call_id}: version {version} answered after {newest}")
            newest = max(newest, version)
            tally.first_seen.setdefault(version, time.monotonic())


def save(path: Path, text: str, in_place: bool) -> None:
    """Write the rule file as an editor would: in place, or a temporary file renamed over it."""
    if in_place:
        path.write_text(text)
    else:
        staged = path.with_name(f".{path.name}.tmp")
        staged.write_text(text)
        staged.replace(path)


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether predicate came true within timeout seconds (checked every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return False


async def run(url: str, rules: Path, args: argparse.Namespace) -> dict[str, object]:
    tally, good, stop = Tally(), {0}, asyncio.Event()
    workers = [asyncio.create_task(client(url, stop, tally, good, n + 1)) for n in range(args.clients)]
    latencies: list[float] = []
    lost: list[int] = []
    rejected_seen = 0
    async with httpx.AsyncClient(base_url=url, auth=ADMIN, timeout=5) as admin:
        await wait_until(lambda: 0 in tally.first_seen, TIMEOUT)
        for n in range(1, args.saves + 1):
            broken = n % 3 == 0
            await asyncio.sleep(args.pause)  # load keeps running between saves
            if broken:
                before = (await admin.get("/admin/rules")).json()["last_failed_reload"]
                save(rules / "rules.yaml", rule_set(n, args.fillers, broken=True), in_place=n % 2 == 0)
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    failure = (await admin.get("/admin/rules")).json()["last_failed_reload"]
                    if failure != before and failure is not None:
                        rejected_seen += "rules.yaml:" in failure["problems"][0]
                        break
                    await asyncio.sleep(0.02)
                continue
            good.add(n)
            saved = time.monotonic()
            save(rules / "rules.yaml", rule_set(n, args.fillers), in_place=n % 2 == 0)
            if await wait_until(lambda n=n: n in tally.first_seen, TIMEOUT):
                latencies.append(tally.first_seen[n] - saved)
            else:
                lost.append(n)
        await asyncio.sleep(args.pause)
    stop.set()
    await asyncio.gather(*workers)
    latencies.sort()
    return {
        "saves": args.saves,
        "good_saves": len(good) - 1,
        "broken_saves": args.saves - (len(good) - 1),
        "broken_saves_rejected_with_location": rejected_seen,
        "requests_sent": tally.sent,
        "non_200": tally.non_200,
        "transport_errors": tally.errors,
        "inconsistent_answers": len(tally.inconsistent),
        "inconsistent_examples": tally.inconsistent[:5],
        "good_saves_never_seen": lost,
        "reload_latency_ms": {
            "median": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p90": round(nearest_rank(latencies, 90) * 1000, 1) if latencies else None,
            "max": round(latencies[-1] * 1000, 1) if latencies else None,
        },
    }


def check_decision_log(path: Path) -> tuple[int, list[str]]:
    """Lines in the decision log, and those whose rule or prompt is not the one of their revision."""
    by_revision: dict[str, set[tuple[str, str]]] = {}
    count = 0
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        count += 1
        by_revision.setdefault(entry["revision"], set()).add((entry["rule"], entry["param"]))
    mixed = [f"revision {rev}: {sorted(seen)}" for rev, seen in by_revision.items() if len(seen) != 1]
    mixed += [
        f"revision {rev}: rule {rule} answered {param}"
        for rev, seen in by_revision.items()
        for rule, param in seen
        if rule.removeprefix("answer_") != param.removeprefix("prompt_")
    ]
    return count, mixed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--fillers", type=int, default=300, help="never-matching rules before the answer")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds of load between two saves")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ascrm-reliability-") as tmp:
        folder = Path(tmp)
        rules = folder / "rules"
        rules.mkdir()
        (rules / "rules.yaml").write_text(rule_set(0, args.fillers))
        port = free_port()
        (folder / "ascrm.yaml").write_text(
            json.dumps(
                {
                    "listen": {"host": "127.0.0.1", "port": port},
                    "rules": str(rules),
                    "auth": {
                        "platform": [{"user": USER, "password": PASSWORD}],
                        "admin": [{"user": ADMIN[0], "password": ADMIN[1]}],
                    },
                    "log": {"format": "json", "decisions": {"file": str(folder / "decisions.jsonl")}},
                }
            )
        )
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = folder / "server.log"
        server = start([sys.executable, "-m", "ascrm", "serve", "--config", str(folder / "ascrm.yaml")], env, log)
        try:
            auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            wait_ready(server, port, auth, log, timeout=30)
            result = asyncio.run(run(f"http://127.0.0.1:{port}", rules, args))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(15)
        logged, mixed = check_decision_log(folder / "decisions.jsonl")
        result["decision_log_lines"] = logged
        result["decision_log_mixed"] = mixed[:5]
        result["inconsistent_answers"] = int(str(result["inconsistent_answers"])) + len(mixed)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:40} {value}")
    ok = not result["non_200"] and not result["inconsistent_answers"] and not result["good_saves_never_seen"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
