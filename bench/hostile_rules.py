"""Hostile rule files, and the time and peak memory `ascrm check` takes to refuse each.

Writes, in a temporary directory: an alias bomb ("billion laughs", under 600 bytes), a deeply nested
flow list, a huge file (a comment block past the rule-file size limit), a huge single scalar (an
unknown time zone of several MB), a mapping with 700,000 keys, 5,000 rules without `do`; and, big but
good for comparison, a 10,000-rule set and a list file of a million lines. Runs `ascrm check` on each
in its own process and reports the exit code, the wall time, the peak RSS (from wait4) and the size
of its standard error.

Run: python bench/hostile_rules.py [--json] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MB = 1024 * 1024


def alias_bomb(path: Path) -> None:
    """Nine levels of nine aliases: 9**9 strings once expanded, from about 450 bytes."""
    lines = ["maps:", "  m0:", '    a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"    a{n}: &a{n} [{','.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)]
    lines += ["  m1: {k: *a8}", "rules: []"]
    path.write_text("\n".join(lines) + "\n")


def deep_nesting(path: Path, depth: int = 100_000) -> None:
    """A flow list nested depth times, as a map's value."""
    path.write_text("maps:\n  m: {k: " + "[" * depth + "]" * depth + "}\nrules: []\n")


def huge_file(path: Path, size: int = 100 * MB) -> None:
    """A valid, empty rule set behind size bytes of comments."""
    line = "# " + "x" * 97 + "\n"
    block = line * 10_000  # written a block at a time: this process stays small (its RSS is not measured)
    with path.open("w") as out:
        for _ in range(size // len(block)):
            out.write(block)
        out.write("rules: []\n")


def huge_scalar(path: Path, size: int = 6 * MB) -> None:
    """One time zone name of size characters: an error that would quote it whole."""
    path.write_text(f"timezone: {'A' * size}\nrules: []\n")


def many_keys(path: Path, keys: int = 700_000) -> None:
    """A map with 700,000 keys in flow style (no aliases: every node is in the file), under the size limit."""
    with path.open("w") as out:
        out.write("maps:\n  m: {")
        for start in range(0, keys, 10_000):
            out.write("".join(f"{n}: x, " for n in range(start, min(start + 10_000, keys))))
        out.write("}\nrules: []\n")


def many_errors(path: Path, rules: int = 5000) -> None:
    """Rules without `do`: one error each, 5,000 of them."""
    path.write_text("rules:\n" + "".join(f"  - id: r{n}\n    on: CallAccepted\n" for n in range(rules)))


def big_rule_set(path: Path, rules: int = 10_000) -> None:
    """A good set: rules never-matching rules and an answer (as bench/reliability.py writes them)."""
    with path.open("w") as out:
        out.write("rules:\n")
        for n in range(rules):
            out.write(f"  - id: filler_{n}\n    on: CallAccepted\n    if: {{AN: '7000{n:07d}'}}\n    do: Hangup\n")
        out.write("  - id: answer\n    on: CallAccepted\n    do: {PlayPrompt: prompt_big}\n")


def big_list(path: Path, lines: int = 1_000_000) -> None:
    """A good set naming a list file of `lines` numbers (lists/blocked.txt beside it)."""
    folder = path.parent / "lists"
    folder.mkdir(exist_ok=True)
    with (folder / "blocked.txt").open("w") as out:
        for start in range(0, lines, 10_000):
            out.write("".join(f"7916{n:07d}\n" for n in range(start, min(start + 10_000, lines))))
    path.write_text(
        "lists:\n  blocked: {file: lists/blocked.txt}\nrules:\n"
        "  - id: blocked\n    on: CallAccepted\n    if: {AN: {in: blocked}}\n    do: Hangup\n"
        "  - id: answer\n    on: CallAccepted\n    do: {PlayPrompt: prompt_list}\n"
    )


HOSTILE: dict[str, Callable[[Path], None]] = {
    "alias_bomb": alias_bomb,
    "deep_nesting": deep_nesting,
    "huge_file": huge_file,
    "huge_scalar": huge_scalar,
    "many_keys": many_keys,
    "many_errors": many_errors,
}
GOOD: dict[str, Callable[[Path], None]] = {"rules_10000": big_rule_set, "list_1000000": big_list}


def write(name: str, folder: Path) -> Path:
    """The rules file of the named case, written in its own subfolder of folder."""
    case = folder / name
    case.mkdir(parents=True, exist_ok=True)
    path = case / "rules.yaml"
    {**HOSTILE, **GOOD}[name](path)
    return path


def check(path: Path, timeout: float = 40) -> dict[str, object]:
    """Run `ascrm check path`: exit code, seconds, peak RSS in MB, bytes of stderr, its first line."""
    err = path.parent / "check.err"
    started = time.perf_counter()
    with err.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ascrm", "check", str(path)], stdout=subprocess.DEVNULL, stderr=out
        )
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.01)
    seconds = time.perf_counter() - started
    text = err.read_bytes()
    return {
        "exit": os.waitstatus_to_exitcode(status),
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "stderr_bytes": len(text),
        "first_line": text.decode(errors="replace").splitlines()[0][:160] if text else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only these cases (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = args.only or [*HOSTILE, *GOOD]
    results = {}
    with tempfile.TemporaryDirectory(prefix="ascrm-hostile-") as tmp:
        for name in names:
            path = write(name, Path(tmp))
            results[name] = {"file_bytes": path.stat().st_size, **check(path)}
            path.unlink()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, row in results.items():
            print(f"{name:14} " + "  ".join(f"{key}={value}" for key, value in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
