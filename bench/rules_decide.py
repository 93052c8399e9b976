"""Decision time per event with 10, 1,000 and 10,000 exact-number rules, and with a 1,000,000-entry map.

The rule sets are generated into a temporary folder, loaded with ascrm's own loader (load time is
printed too), and decided with ascrm's own engine, in process: what a POST pays on top of HTTP.
Each rule is `on: CallAccepted, if: {AN: "<number>"}, do: {TransferEXT: …}`, the form the index
serves without scanning; the map set has one rule `if: {AN: {in: managers}}` answering
`{TransferEXT: "{managers[AN]}"}`.

Run: python bench/rules_decide.py [--repeat 20000] [--map-rows 1000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from ascrm.core.calls.state import CallState
from ascrm.core.engine import RuleSet, decide
from ascrm.core.protocol import CallEvent, EventType
from ascrm.core.rules import load_rules

NOW = datetime(2027, 1, 11, 7, 15, tzinfo=UTC)


def number(index: int) -> str:
    """The index-th generated caller number."""
    return f"7916{index:07d}"


def exact_rules(folder: Path, count: int) -> Path:
    """A rule file of count exact-AN rules."""
    lines = ["rules:"]
    for index in range(count):
        lines += [
            f"  - id: r{index}",
            "    on: CallAccepted",
            f'    if: {{AN: "{number(index)}"}}',
            f'    do: {{TransferEXT: "{1000 + index % 9000}"}}',
        ]
    path = folder / f"exact-{count}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def map_rules(folder: Path, rows: int) -> Path:
    """A rule file answering from a map of rows entries."""
    csv = folder / "managers.csv"
    csv.write_text("AN,EXT\n" + "".join(f"{number(i)},{1000 + i % 9000}\n" for i in range(rows)))
    path = folder / "map.yaml"
    path.write_text(
        "maps:\n  managers: {file: managers.csv}\n"
        "rules:\n  - id: manager\n    on: CallAccepted\n"
        '    if: {AN: {in: managers}}\n    do: {TransferEXT: "{managers[AN]}"}\n'
    )
    return path


def per_decision_us(rules: RuleSet, an: str, repeat: int) -> float:
    """Best of five timings of decide() for a CallAccepted from an, in microseconds."""
    event = CallEvent(call_id=1, event_type=EventType.CallAccepted, an=an, un="74951234567")
    call = CallState.begin(1, event, NOW)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            decide(rules, event, call, NOW)
        best = min(best, time.perf_counter() - started)
    return best / repeat * 1e6


def main() -> int:
    """Generate, load, time, print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20000, help="decisions per timing (default 20000)")
    parser.add_argument("--map-rows", type=int, default=1_000_000, help="map entries (default 1000000)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="ascrm-rules-") as tmp:
        folder = Path(tmp)
        cases = [(f"{n} exact rules", exact_rules(folder, n), n) for n in (10, 1000, 10000)]
        cases.append((f"map of {args.map_rows} entries", map_rules(folder, args.map_rows), args.map_rows))
        for name, path, size in cases:
            started = time.perf_counter()
            rules = load_rules(path, "Europe/Moscow")
            load_s = time.perf_counter() - started
            timings = {
                "first": per_decision_us(rules, number(0), args.repeat),
                "last": per_decision_us(rules, number(size - 1), args.repeat),
                "none": per_decision_us(rules, "79990000000", args.repeat),
            }
            results.append({"case": name, "load_s": round(load_s, 3), **{k: round(v, 2) for k, v in timings.items()}})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'rule set':<28}{'load s':>8}{'first us':>10}{'last us':>10}{'none us':>10}")
    for row in results:
        print(f"{row['case']:<28}{row['load_s']:>8}{row['first']:>10}{row['last']:>10}{row['none']:>10}")
    base = max(results[0]["first"], results[0]["last"])
    worst = max(results[2]["first"], results[2]["last"], results[2]["none"])
    print(f"10,000 rules / 10 rules (worst case over base): {worst / base:.2f} (goal <= 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
