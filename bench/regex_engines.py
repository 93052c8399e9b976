"""Per-match cost of a rule's `{regex: …}` condition: Python's `re` against RE2 (google-re2).

For patterns of the kinds rules use (anchored digit counts, prefixes, alternations of codes, a
substring, and the nested quantifier that made `re` stall), on the values rules see (an 11-digit
number, a 4-digit DTMF string), times one match per call of:

- `re`:            `re.compile(p).search(value)`, the engine rules used before;
- `re2 wrapper`:   `re2.compile(p).search(value)`, google-re2's `re`-like API (a generator and a
                   Match object per call);
- `rule pattern`:  `ascrm.core.rules.regex.compile_pattern(p).search(value)`, what the rules run.

Then the pathological pattern `^(\\d+)+$` on a number with a letter at its end, for growing
lengths, with `re` (stopped at --max-re-seconds) and with the rule pattern.

Run: python bench/regex_engines.py [--matches 200000]
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

import re2

from ascrm.core.rules.regex import compile_pattern

PATTERNS = {
    "4 digits": (r"^\d{4}$", "2005"),
    "prefix": (r"^7916", "79161234567"),
    "codes": (r"^7(?:495|499)\d{7}$", "74991234567"),
    "substring": (r"555", "79165551234"),
    "optional +": (r"^\+?7\d{10}$", "79161234567"),
    "nested (safe input)": (r"^(\d+)+$", "79161234567"),
}


def per_match(search: Callable[[str], object], value: str, matches: int) -> float:
    """The best of 3 runs of `matches` searches, in microseconds per search."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(matches):
            search(value)
        best = min(best, time.perf_counter() - start)
    return best / matches * 1e6


def main() -> None:
    """Print the table of per-match costs, then the pathological pattern's times."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matches", type=int, default=200_000)
    parser.add_argument("--max-re-seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(f"{'pattern':<22} {'value':<13} {'re µs':>7} {'re2 wrapper µs':>15} {'rule pattern µs':>16}")
    for name, (pattern, value) in PATTERNS.items():
        engines = (re.compile(pattern).search, re2.compile(pattern).search, compile_pattern(pattern).search)
        costs = [per_match(search, value, args.matches) for search in engines]
        print(f"{name:<22} {value:<13} {costs[0]:>7.3f} {costs[1]:>15.3f} {costs[2]:>16.3f}")
    print()
    print("^(\\d+)+$ on N digits and a letter (no match):")
    slow = re.compile(r"^(\d+)+$")
    fast = compile_pattern(r"^(\d+)+$")
    stopped = False
    for digits in (16, 18, 20, 22, 24, 27, 1000):
        value = "7" * digits + "x"
        shown = "skipped"
        if not stopped:
            start = time.perf_counter()
            slow.search(value)
            took = time.perf_counter() - start
            shown = f"{took:.3f} s"
            stopped = took > args.max_re_seconds / 4  # the next length takes about 4x as long
        start = time.perf_counter()
        fast.search(value)
        took = time.perf_counter() - start
        print(f"  N={digits:<5} re: {shown:>9}   rule pattern: {took * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
