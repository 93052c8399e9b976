"""Load time of a big map file and list file (ascrm.core.rules.lists), and look-ups per second.

Writes, in a temporary directory, a managers.csv of --rows rows (`AN,EXT` header, then
`7916NNNNNNN,1NNN`) and a blocked.txt of --rows lines (a comment header, exact numbers, one prefix
line in a thousand, a trailing comment on some lines). Times load_map_file and load_list_file (best
of 3, also with normalize_ru), then 1,000,000 look-ups, half hits and half misses, in the list
(`number in NumberList`) and in the map (`dict.get`).

Run: python bench/lists_load.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ascrm.core.rules.lists import NumberList, load_list_file, load_map_file, normalize_ru

LOOKUPS = 1_000_000


def best_of(runs: int, work: Callable[[], object]) -> float:
    """The shortest wall time of `runs` calls of work, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def write_files(folder: Path, rows: int) -> tuple[Path, Path]:
    """The managers.csv and blocked.txt of `rows` rows/lines each."""
    rng = random.Random(4711)  # noqa: S311 - benchmark data
    csv_path = folder / "managers.csv"
    lines = ["AN,EXT"] + [f"7916{i:07d},{rng.randrange(1000, 2000)}" for i in range(rows - 1)]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    list_path = folder / "blocked.txt"
    out = ["# blocked numbers"]
    for i in range(rows - 1):
        if i % 1000 == 0:
            out.append(f"7800{i // 1000 % 1000:03d}*")
        elif i % 100 == 0:
            out.append(f"7495{i:07d}  # spam")
        else:
            out.append(f"7495{i:07d}")
    list_path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return csv_path, list_path


def lookups_per_second(container: NumberList | dict[str, str], numbers: list[str]) -> tuple[float, int]:
    """Best-of-3 rate of `number in container` over numbers, and the number of hits."""
    hits = 0

    def run() -> None:
        nonlocal hits
        hits = 0
        for number in numbers:
            if number in container:
                hits += 1

    return len(numbers) / best_of(3, run), hits


def main() -> None:
    """Parse the arguments, write the files, print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the map, lines of the list")
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, list_path = write_files(Path(tmp), rows)
        print(f"rows: {rows:,}  managers.csv {csv_path.stat().st_size / 1e6:.1f} MB, ", end="")
        print(f"blocked.txt {list_path.stat().st_size / 1e6:.1f} MB")
        print(f"load_map_file                  {best_of(3, lambda: load_map_file(csv_path)):6.3f} s")
        seconds = best_of(3, lambda: load_map_file(csv_path, normalize_ru))
        print(f"load_map_file  (normalize_ru)  {seconds:6.3f} s")
        print(f"load_list_file                 {best_of(3, lambda: load_list_file(list_path)):6.3f} s")
        seconds = best_of(3, lambda: load_list_file(list_path, normalize_ru))
        print(f"load_list_file (normalize_ru)  {seconds:6.3f} s")
        managers = load_map_file(csv_path)
        blocked: NumberList = load_list_file(list_path)
    print(f"map: {len(managers):,} keys; list: {len(blocked.exact):,} exact, {len(blocked.prefixes):,} prefixes")
    rng = random.Random(1)  # noqa: S311 - benchmark data
    half = LOOKUPS // 2
    exact, prefixes = sorted(blocked.exact), sorted(blocked.prefixes)
    list_numbers = [rng.choice(exact) for _ in range(half // 2)]
    list_numbers += [f"{rng.choice(prefixes)}{rng.randrange(10_000):04d}" for _ in range(half - half // 2)]
    list_numbers += [f"7903{rng.randrange(10_000_000):07d}" for _ in range(LOOKUPS - half)]
    map_numbers = [f"7916{rng.randrange(rows - 1):07d}" for _ in range(half)]
    map_numbers += [f"7903{rng.randrange(10_000_000):07d}" for _ in range(LOOKUPS - half)]
    rng.shuffle(list_numbers)
    rng.shuffle(map_numbers)
    for name, container, numbers in (
        ("NumberList", blocked, list_numbers),
        ("map dict", managers, map_numbers),
    ):
        rate, hits = lookups_per_second(container, numbers)
        print(f"{name:<10} `in`: {len(numbers):,} look-ups, {hits:,} hits: {rate:,.0f} /s")


if __name__ == "__main__":
    main()
