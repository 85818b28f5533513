"""Runs completed per minute by django-q2 workers (``qcluster``): 2 workers × 1 thread vs 1 worker × 2 threads.

The same short training run (pattern-recognition, the digits: a weak 4-unit MLP, a fixed seed,
a fixed number of epochs, no time budget cut) is queued ``RUNS`` times on as many identical
models, for a cluster in each of three shapes, for ``ROUNDS`` rounds (the order of the shapes
rotates from round to round, so a busy spell on a shared machine does not land on one only):

* **1 × 2** — one worker process training with two torch threads (``PLASTICITY_TORCH_THREADS=2``);
* **2 × 1** — two worker processes with one torch thread each;
* **1 × 1** — one worker process with one thread (the old baseline, cheap to keep).

1 × 2 and 2 × 1 use the same two cores two ways: that is the headline comparison. Throughput is
runs / (last run finished − first run queued) × 60, from the runs' own timestamps; the workers
are started and warm before the runs are queued. Shapes compare median throughputs. Each
worker process does one untimed warm-up run first.

The database is PostgreSQL when one is configured (``BENCH_DATABASE_URL``, else a PostgreSQL
``DATABASE_URL``) or answers locally on 127.0.0.1:5432; a scratch database is created there and
dropped afterwards. Otherwise an SQLite file in a temporary folder.

Targets (restated so they can fail; a tie is not a win): 2 × 1 ≥ 1.2 × (1 × 2) — two processes
beat one process with as many threads by a margin; and, from issue 9, 2 × 1 ≥ 1.7 × (1 × 1).

The orchestration runs in a subprocess with Django set up (``python -m bench.bench_workers
--driver``), so this process never configures Django for the other benchmarks.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from bench.common import target

NAME = "workers"
DESCRIPTION = "improvement runs completed per minute: 2 qcluster workers x 1 thread vs 1 x 2 threads (and 1 x 1)"

REPO = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("BENCH_WORKERS_RUNS", "6"))
# Rounds of every shape, in an order rotating from round to round, so that a busy spell on a shared
# machine does not land on one shape only; shapes compare medians.
ROUNDS = int(os.environ.get("BENCH_WORKERS_ROUNDS", "3"))
#: (worker processes, torch threads per worker).
SHAPES = ((1, 2), (2, 1), (1, 1))
# Fixed work per run: the epoch count ends training (patience never does; no time budget cut).
RUN_PARAMS = {"epochs": 60, "patience": 1000, "time_budget_s": 900, "seed": 0}
WEAK = {"kind": "mlp", "input_shape": [1, 8, 8], "output_dim": 10, "hidden": [4], "activation": "relu",
        "dropout": 0.0, "norm": "none"}
PROCESSES_VS_THREADS_TARGET = 1.2  # (2 workers x 1 thread) / (1 worker x 2 threads)
SPEEDUP_TARGET = 1.7  # (2 workers x 1 thread) / (1 worker x 1 thread), issue 9
DRIVER_TIMEOUT_S = 1800
PHASE_TIMEOUT_S = 900


# ----------------------------------------------------------------------------- the database


def _postgres_url() -> str | None:
    """A PostgreSQL server to create the scratch database on, if one is configured or local."""
    for name in ("BENCH_DATABASE_URL", "DATABASE_URL"):
        url = os.environ.get(name, "")
        if url.startswith(("postgres://", "postgresql://")):
            return url
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=5432, dbname="postgres", connect_timeout=2):
            return "postgres://127.0.0.1:5432/postgres"
    except Exception:  # noqa: BLE001 - no local server: SQLite it is
        return None


def _with_database(url: str, name: str) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path=f"/{name}"))


def _pg_admin(url: str, sql: str) -> None:
    import psycopg

    parts = urlparse(url)
    with psycopg.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                         user=parts.username or None, password=parts.password or None,
                         dbname="postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


# ------------------------------------------------------------------------------ the harness


def run() -> dict[str, Any]:
    server = _postgres_url()
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        var_dir = Path(tmp)
        scratch = f"plasticity_bench_workers_{os.getpid()}"
        if server:
            _pg_admin(server, f'DROP DATABASE IF EXISTS "{scratch}"')
            _pg_admin(server, f'CREATE DATABASE "{scratch}"')
            database_url, database = _with_database(server, scratch), "PostgreSQL"
        else:
            database_url, database = f"sqlite:///{var_dir / 'bench.sqlite3'}", "SQLite"
        env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "Q_WORKERS"}}
        env.update({
            "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": database_url,
            "PLASTICITY_VAR_DIR": str(var_dir), "PLASTICITY_MEDIA_ROOT": str(var_dir / "media"),
            "Q_POLL": "0.2", "PYTHONUNBUFFERED": "1",
        })
        try:
            done = subprocess.run([sys.executable, "-m", "bench.bench_workers", "--driver"], cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S)
            if done.returncode != 0:
                raise RuntimeError(f"driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
            phases = json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            if server:
                _pg_admin(server, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    return _report(phases, database)


def _shape(workers: int, threads: int) -> str:
    return f"{workers} x {threads}"


def _report(phases: list[dict[str, Any]], database: str) -> dict[str, Any]:
    rate = {_shape(w, t): statistics.median(p["runs_per_min"] for p in phases
                                            if (p["workers"], p["threads"]) == (w, t)) for w, t in SHAPES}
    two_by_one, one_by_two, one_by_one = rate[_shape(2, 1)], rate[_shape(1, 2)], rate[_shape(1, 1)]
    processes_vs_threads = two_by_one / one_by_two if one_by_two else None
    speedup = two_by_one / one_by_one if one_by_one else None
    table = [{
        "round": p["round"], "shape": _shape(p["workers"], p["threads"]), "workers": p["workers"],
        "threads": p["threads"], "runs": p["runs"], "finished_ok": p["finished_ok"], "window_s": p["window_s"],
        "runs_per_min": p["runs_per_min"], "mean_run_s": p["mean_run_s"], "mean_cpu_s": p["mean_cpu_s"],
        "max_running": p["max_running"], "processes_used": p["processes_used"], "load_1m": p["load_1m"],
    } for p in phases]
    table += [{"round": "median", "shape": shape, "runs_per_min": round(value, 2)} for shape, value in rate.items()]
    return {
        "table": table,
        "database": database,
        "runs_per_min": rate,
        "processes_vs_threads": processes_vs_threads,
        "speedup": speedup,
        "targets": [
            target("2 workers x 1 thread vs 1 worker x 2 threads (runs/min, same two cores)",
                   f">= {PROCESSES_VS_THREADS_TARGET}x", processes_vs_threads,
                   processes_vs_threads is not None and processes_vs_threads >= PROCESSES_VS_THREADS_TARGET),
            target("2 workers x 1 thread vs 1 worker x 1 thread (runs/min)", f">= {SPEEDUP_TARGET}x", speedup,
                   speedup is not None and speedup >= SPEEDUP_TARGET),
        ],
        "notes": [
            f"database: {database}; {RUNS} identical training runs per row (digits, 4-unit MLP, "
            f"{RUN_PARAMS['epochs']} epochs, seed 0); shape = worker processes x torch threads per worker "
            f"(PLASTICITY_TORCH_THREADS); {os.cpu_count()} logical cores",
            "window = first run queued to last run finished (workers already warm); load_1m is the machine's "
            f"load average during the phase: above {os.cpu_count()} the cores were shared with other processes",
            "mean_cpu_s above mean_run_s means a run's second thread was doing work",
        ],
    }


# ------------------------------------------------------------------------- the driver (Django)


def _driver() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    from improvement.models import ImprovementConfig
    from models_registry.evaluation import candidate_evaluate
    from models_registry.nn.training import TrainConfig
    from models_registry.services import model_create, task_create_builtin, version_create
    from models_registry.training import neural_fit

    call_command("migrate", verbosity=0)
    ImprovementConfig.objects.update_or_create(pk=1, defaults={
        "max_concurrent_improvements": max(w for w, _ in SHAPES) + 1, "enabled": False, "auto_start": False,
        "cross_model_distillation": False,
    })
    task = task_create_builtin(key="pattern-recognition")
    module, _ = neural_fit(task, WEAK, config=TrainConfig(epochs=1, seed=0, patience=1))
    evaluation = candidate_evaluate(task=task, module=module)
    phases = []
    for round_ in range(1, ROUNDS + 1):
        shift = (round_ - 1) % len(SHAPES)
        for workers, threads in SHAPES[shift:] + SHAPES[:shift]:
            models = []
            for i in range(workers + RUNS):  # a fresh, identical model per run: every run does the same work
                model = model_create(task=task, name=f"r{round_}-w{workers}-t{threads}-{i}")
                version_create(model=model, genome=WEAK, state_dict=module.state_dict(), evaluation=evaluation,
                               activate=True, note="bench start")
                models.append(model)
            phases.append({"round": round_, **_phase(workers, threads, models)})
    print(json.dumps(phases))


def _phase(workers: int, threads: int, models: list) -> dict[str, Any]:
    from django.conf import settings

    from improvement.choices import RunStatus
    from improvement.models import ImprovementRun

    log_path = Path(settings.VAR_DIR) / f"qcluster-{workers}x{threads}-{time.monotonic_ns()}.log"
    env = dict(os.environ, Q_WORKERS=str(workers), PLASTICITY_TORCH_THREADS=str(threads))
    with open(log_path, "wb") as log:
        cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(log_path, workers)
        # One untimed run per worker process first: a fresh process spends seconds on its first
        # run (imports, the task's data, first torch calls) that a long-lived worker pays once.
        _run_all(models[:workers], log_path)
        load_before = os.getloadavg()[0]
        ids, max_running = _run_all(models[workers:], log_path)
    finally:
        _stop(cluster)
    rows = list(ImprovementRun.objects.filter(pk__in=ids))
    window = (max(r.finished_at for r in rows) - min(r.created_at for r in rows)).total_seconds()
    return {
        "workers": workers, "threads": threads, "runs": len(rows), "window_s": round(window, 2),
        "runs_per_min": round(len(rows) / window * 60, 2),
        "finished_ok": sum(r.status in (RunStatus.PROMOTED, RunStatus.REJECTED) for r in rows),
        "mean_run_s": round(sum((r.finished_at - r.started_at).total_seconds() for r in rows) / len(rows), 2),
        "mean_cpu_s": round(sum(r.cpu_seconds or 0.0 for r in rows) / len(rows), 2),
        "max_running": max_running, "processes_used": len({r.worker for r in rows}),
        "load_1m": round((load_before + os.getloadavg()[0]) / 2, 2),
    }


def _run_all(models: list, log_path: Path) -> tuple[list[int], int]:
    """Queue one training run per model and wait for all; (run ids, most running at once)."""
    from improvement.choices import FINISHED, RunStatus
    from improvement.models import ImprovementRun
    from improvement.runs.lifecycle import run_create

    ids = [run_create(model=model, strategy="training", params=dict(RUN_PARAMS)).pk for model in models]
    deadline, max_running = time.monotonic() + PHASE_TIMEOUT_S, 0
    # Finished, and its worker done with it (cpu_seconds is written last): stopping the cluster
    # earlier would cut that write short.
    done = ImprovementRun.objects.filter(pk__in=ids, status__in=FINISHED, cpu_seconds__isnull=False)
    while done.count() < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs not finished in {PHASE_TIMEOUT_S} s\n"
                               f"{log_path.read_text(errors='replace')[-3000:]}")
        max_running = max(max_running, ImprovementRun.objects.filter(status=RunStatus.RUNNING).count())
        time.sleep(0.1)
    return ids, max_running


def _wait_ready(log_path: Path, workers: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if text.count("ready for work") >= workers and "pushing tasks" in text:
            return
        time.sleep(0.2)
    raise RuntimeError(f"qcluster not ready in {timeout_s} s:\n{log_path.read_text(errors='replace')[-2000:]}")


def _stop(process: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


if __name__ == "__main__" and "--driver" in sys.argv:
    _driver()
