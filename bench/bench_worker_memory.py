"""A task worker's memory over many improvement runs: warm-up, then flat, or a leak.

The soak (``bench_soak``) samples every process's RSS for 30 minutes, but a worker there lives
about ten minutes between kills and runs each (task, strategy) pair once or twice, so its
warm-up — the first training, export, quantisation and architecture search, each loading
libraries and a task's dataset into bounded caches — fills most of its life, and "growth" there
cannot tell warm-up from a leak. Here one process runs ``RUNS`` improvement runs back to back,
exactly as a django-q2 task worker does (``improvement.tasks.run_improvement``: pick, claim,
execute), on the demo's three tasks with the loop choosing every run (``cycle_force``, one run
at a time, ``RUN_BUDGET_S`` each), on a fresh SQLite database. After each run it records the
process's RSS and, with ``tracemalloc`` off (it would cost the runs' speed), Python's own
allocated blocks (``sys.getallocatedblocks``).

Target: RSS growth over the second half of the runs (after run ``RUNS // 2`` to after the last)
at most ``GROWTH_BOUND_MB``. A leak of even 5 MB per run shows as 45 MB over nine runs.

``python -m bench.bench_worker_memory --driver`` is the measured process; ``run()`` prepares its
database (``migrate``, ``seed_demo``) and reads its result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import embedded_env, manage, target

NAME = "worker_memory"
DESCRIPTION = "a task worker's RSS over many improvement runs in one process: warm-up, then flat"

REPO = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("BENCH_WORKER_MEMORY_RUNS", "18"))
RUN_BUDGET_S = float(os.environ.get("BENCH_WORKER_MEMORY_BUDGET_S", "20"))
GROWTH_BOUND_MB = 50.0
DRIVER_TIMEOUT_S = 3600


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-worker-memory-") as tmp:
        env = embedded_env(Path(tmp), LOG_LEVEL="ERROR")
        manage(env, "migrate", "--noinput")
        manage(env, "seed_demo", "--interval", "60")
        done = subprocess.run([sys.executable, "-m", "bench.bench_worker_memory", "--driver"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return _report(rows)


def _report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    half = rows[len(rows) // 2 - 1]
    last = rows[-1]
    growth = round(last["rss_mb"] - half["rss_mb"], 1)
    first_half = round(half["rss_mb"] - rows[0]["rss_before_mb"], 1)
    strategies: dict[str, int] = {}
    for row in rows:
        strategies[row["strategy"]] = strategies.get(row["strategy"], 0) + 1
    return {
        "table": rows,
        "targets": [target(f"task worker RSS growth over runs {half['run_index']}→{last['run_index']} "
                           f"(the second half of {len(rows)} runs in one process)",
                           f"<= {GROWTH_BOUND_MB:g} MB", growth, growth <= GROWTH_BOUND_MB)],
        "runs": len(rows), "run_budget_s": RUN_BUDGET_S, "strategies": strategies,
        "rss_start_mb": rows[0]["rss_before_mb"], "rss_after_half_mb": half["rss_mb"], "rss_last_mb": last["rss_mb"],
        "rss_peak_after_run_mb": max(r["rss_mb"] for r in rows),
        "growth_first_half_mb": first_half, "growth_second_half_mb": growth,
        "python_blocks_half": half["python_blocks"], "python_blocks_last": last["python_blocks"],
        "notes": [
            f"{len(rows)} runs of the demo's loop in one process as a django-q2 task worker runs them "
            f"(run_improvement), {RUN_BUDGET_S:g} s budget each, one at a time; RSS after each run",
            f"warm-up (first half): {rows[0]['rss_before_mb']} → {half['rss_mb']} MB (+{first_half} MB: libraries, "
            f"datasets and sessions loaded into bounded caches); second half: {half['rss_mb']} → {last['rss_mb']} MB",
        ],
    }


def _driver() -> None:
    import django  # noqa: PLC0415 - the driver process configures Django; run() must not

    django.setup()
    import gc  # noqa: PLC0415

    import psutil  # noqa: PLC0415

    from improvement import services  # noqa: PLC0415
    from improvement.models import ImprovementRun  # noqa: PLC0415
    from improvement.scheduler import loop  # noqa: PLC0415
    from improvement.tasks import run_improvement  # noqa: PLC0415

    process = psutil.Process()
    services.config_update(run_time_budget_s=RUN_BUDGET_S, max_concurrent_improvements=1)
    for index in range(1, RUNS + 1):
        queued = None
        for _ in range(10):
            loop.cycle_force()
            queued = ImprovementRun.objects.filter(status="queued").order_by("pk").first()
            if queued is not None:
                break
        if queued is None:
            raise RuntimeError("the loop proposed no run in ten forced cycles")
        before = process.memory_info().rss / 2**20
        result = run_improvement(queued.pk)
        gc.collect()
        after = process.memory_info().rss / 2**20
        ImprovementRun.objects.filter(status="queued").update(status="cancelled")
        print(json.dumps({"run_index": index, "run": queued.pk, "strategy": queued.strategy, "result": result,
                          "rss_before_mb": round(before, 1), "rss_mb": round(after, 1),
                          "python_blocks": sys.getallocatedblocks()}), flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["--driver"]:
    _driver()
