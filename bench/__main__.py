"""``python -m bench [--only NAME]``: run the benchmarks and write their results.

Benchmarks run one at a time in this process, in name order. Each result
carries the machine block (CPU model, git SHA, library versions, load) taken
before the run, and the load average after it (``after``). Targets are
printed as PASS/MISS and never change the exit status; a benchmark that
raises does (exit 1), after the others have still run.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from types import ModuleType

from bench import common

PACKAGE = "bench"
PREFIX = "bench_"


def discover() -> tuple[dict[str, ModuleType], dict[str, str]]:
    """``NAME`` → module for every ``bench/bench_*.py``, and file stem → error for those that fail to import.

    A module that cannot be imported (a missing optional dependency, a syntax
    error) is reported as crashed rather than stopping the other benchmarks.
    """
    import bench

    found: dict[str, ModuleType] = {}
    broken: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda i: i.name):
        if not info.name.startswith(PREFIX):
            continue
        stem = info.name.removeprefix(PREFIX)
        try:
            module = importlib.import_module(f"{PACKAGE}.{info.name}")
        except Exception:
            broken[stem] = traceback.format_exc()
            continue
        name = getattr(module, "NAME", stem)
        if name in found:
            raise RuntimeError(f"two benchmarks are called {name!r}")
        found[name] = module
    return found, broken


def run_one(name: str, module: ModuleType) -> bool:
    """Run one benchmark, print its table and targets, write its JSON. False if it crashed."""
    print(f"\n=== {name}: {getattr(module, 'DESCRIPTION', '')}", flush=True)
    # The machine block is taken before the run: its load average and torch threads describe the
    # conditions the benchmark started in, not what it left behind.
    machine = common.machine_info()
    start = time.perf_counter()
    try:
        result = module.run()
    except Exception:
        traceback.print_exc()
        print(f"=== {name}: CRASHED after {time.perf_counter() - start:.1f} s", flush=True)
        return False
    seconds = time.perf_counter() - start
    result = {**result, "seconds": round(seconds, 1), "after": common.load_snapshot()}
    for title, rows in result.get("tables", {}).items():
        print(f"\n-- {title}")
        print(common.format_table(rows))
    if "table" in result:
        print()
        print(common.format_table(result["table"]))
    for note in result.get("notes", []):
        print(f"note: {note}")
    if result.get("targets"):
        print()
        print(common.format_targets(result["targets"]))
    # A reduced run (e.g. the suite with BENCH_SUITE_REDUCED=1) names its own result file so it
    # never overwrites the full one.
    path = common.write_result(result.pop("result_name", name), result, machine)
    print(f"\n=== {name}: {seconds:.1f} s, wrote {path}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="NAME", help="run just this benchmark")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    benchmarks, broken = discover()
    if args.list:
        for name, module in benchmarks.items():
            print(f"{name}: {getattr(module, 'DESCRIPTION', '')}")
        for stem in broken:
            print(f"{stem}: (fails to import)")
        return 0
    if args.only:
        if args.only in broken and args.only not in benchmarks:
            broken = {args.only: broken[args.only]}
            benchmarks = {}
        elif args.only in benchmarks:
            benchmarks, broken = {args.only: benchmarks[args.only]}, {}
        else:
            known = ", ".join([*benchmarks, *broken])
            print(f"unknown benchmark {args.only!r}; known: {known}", file=sys.stderr)
            return 2

    crashed = []
    for stem, error in broken.items():
        print(f"\n=== {stem}: CRASHED on import\n{error}", file=sys.stderr, flush=True)
        crashed.append(stem)
    crashed += [name for name, module in benchmarks.items() if not run_one(name, module)]
    if crashed:
        print(f"\ncrashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
