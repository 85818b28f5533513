"""Scale: the panel and the API with 100 models, 10,000 runs and 1,000,000 performance samples.

A scratch SQLite database (in a temporary folder, after ``migrate``) is filled with the three
built-in tasks (their real datasets), ``MODELS`` models with ``VERSIONS`` versions each (one
real version per task made by ``version_create`` with its weights file; the other versions are
bulk rows that share that file and its sha256), ``RUNS`` finished improvement runs spread over
the models and over ``DAYS`` days (curves, logs, metrics as a real run writes them), and
``SAMPLES`` performance samples spread over the versions, the algorithms, the three sources
and the same days. Runs and versions go in with ``bulk_create``; the samples are made by the
database itself (one ``INSERT … SELECT`` over a recursive counter).

Then, over real HTTP: the ASGI server (daphne) is started on the scratch database, and a
session made for an operator (``force_login``) is sent as a cookie. The overview (``/``), the
history endpoint (``/api/history``, first page) and one model page (``/models/<pk>/``, the
model with the most runs) are requested round-robin, ``WARMUP`` untimed then ``REQUESTS``
timed each, one keep-alive connection; p50/p95/max of the whole request (body read). The
queries each page makes are counted in-process (Django test client) for the notes.
Target: p95 < 300 ms each.

The export (``/api/export``, JSON) is measured with the whole history at ``EXPORT_SIZES``
runs (1,000, then 10,000, then 100,000: the 10,000 runs copied by the database): a fresh
daphne for each size, its peak RSS reset (``/proc/<pid>/clear_refs``) after a warm-up
request, the body streamed and its runs counted by the client, then the server's peak RSS
above its RSS before (``VmHWM`` − ``VmRSS``). The same request is also served in this
process through Django's ASGI handler under ``tracemalloc`` (JSON and CSV), for the Python
allocations alone. Target: flat — the peak at 100,000 runs ≤ 1.5 × the peak at 10,000 (both
measures); every run is in every export.

The work runs in a subprocess with Django set up (``python -m bench.bench_scale --driver``),
so this process never configures Django for the other benchmarks. SQLite only (the samples'
``INSERT … SELECT`` and the RSS reset are SQLite- and Linux-specific).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import embedded_env, target

NAME = "scale"
DESCRIPTION = "p95 of overview/history/model page and export peak memory at 100 models, 10k runs, 1M samples"

REPO = Path(__file__).resolve().parent.parent
MODELS = int(os.environ.get("BENCH_SCALE_MODELS", "100"))
VERSIONS = 4  # per model
RUNS = int(os.environ.get("BENCH_SCALE_RUNS", "10000"))
SAMPLES = int(os.environ.get("BENCH_SCALE_SAMPLES", "1000000"))
DAYS = 30
EXPORT_SIZES = (RUNS // 10, RUNS, RUNS * 10)  # whole-history exports; the target compares the last two
REQUESTS = int(os.environ.get("BENCH_SCALE_REQUESTS", "40"))
WARMUP = 5
P95_TARGET_MS = 300.0
FLAT_RATIO = 1.5
DRIVER_TIMEOUT_S = 900
PAGES = ("overview", "history", "model page")


# ------------------------------------------------------------------------------ the harness


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        var_dir = Path(tmp)
        env = embedded_env(var_dir)
        done = subprocess.run([sys.executable, "-m", "bench.bench_scale", "--driver"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
        data = json.loads(done.stdout.strip().splitlines()[-1])
    return _report(data)


def _report(data: dict[str, Any]) -> dict[str, Any]:
    pages, exports, gen = data["pages"], data["exports"], data["generation"]
    targets = [target(f"{p['page']} p95 (ms)", f"< {P95_TARGET_MS:g}", p["p95_ms"], p["p95_ms"] < P95_TARGET_MS)
               for p in pages]
    by_size = {e["runs"]: e for e in exports}
    small, big = by_size[EXPORT_SIZES[1]], by_size[EXPORT_SIZES[2]]
    for key, label in (("rss_peak_mb", "server peak RSS"), ("py_peak_mb_json", "tracemalloc peak (JSON)"),
                       ("py_peak_mb_csv", "tracemalloc peak (CSV)")):
        ratio = big[key] / small[key] if small[key] else None
        targets.append(target(
            f"export {label}, {EXPORT_SIZES[2]:,} vs {EXPORT_SIZES[1]:,} runs (ratio)", f"<= {FLAT_RATIO:g}",
            None if ratio is None else round(ratio, 2), ratio is not None and ratio <= FLAT_RATIO))
    complete = all(e["complete"] for e in exports)
    targets.append(target("every run in every export", "all", sum(e["complete"] for e in exports), complete))
    return {
        "tables": {
            "data generated": [{"what": k, **v} for k, v in gen["steps"].items()],
            "export (JSON over HTTP; tracemalloc in-process through the ASGI handler)": exports,
        },
        "table": pages,
        "targets": targets,
        "generation": gen,
        "notes": [
            f"SQLite scratch database: {gen['counts']['models']} models, {gen['counts']['versions']} versions, "
            f"{gen['counts']['runs']:,} runs, {gen['counts']['samples']:,} performance samples over {DAYS} days "
            f"({gen['db_mb']} MB), generated in {gen['seconds']} s",
            f"pages over real HTTP: daphne (ASGI) on 127.0.0.1, one keep-alive connection, a logged-in operator's "
            f"session cookie (force_login); {WARMUP} warm-up + {REQUESTS} timed requests per page, round-robin; "
            f"queries = SQL queries of one request, counted in-process with the test client",
            "export: rss_peak_mb = daphne's peak RSS during the streamed export above its RSS before (peak reset "
            "through /proc/<pid>/clear_refs after a warm-up request, a fresh server per size); py_peak_mb = "
            "tracemalloc peak of the same request through Django's ASGI handler in the driver; the body is "
            "counted as it arrives and dropped",
            f"export targets compare {EXPORT_SIZES[2]:,} with {EXPORT_SIZES[1]:,} runs; the {EXPORT_SIZES[0]:,}-run "
            "row is for reference only: it is below the 2,000 rows the export reads from its cursor at a time, "
            "so its peak is smaller by construction",
            "no ANALYZE is run on the scratch database (the project never runs it): SQLite plans without "
            "statistics, as it does in a deployment",
            f"{os.cpu_count()} logical cores; the client, the server and SQLite share them",
        ],
    }


# ------------------------------------------------------------------------- the driver (Django)


def _driver() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    started = time.perf_counter()
    steps: dict[str, dict] = {}

    def step(name: str, since: float, **extra) -> float:
        steps[name] = {"seconds": round(time.perf_counter() - since, 2), **extra}
        return time.perf_counter()

    t = time.perf_counter()
    call_command("migrate", verbosity=0)
    t = step("migrate", t)
    fleet = _fleet()
    t = step("tasks, models, versions", t, rows=len(fleet["versions"]))
    _samples(fleet)
    t = step("performance samples", t, rows=SAMPLES)
    runs = _run_rows(fleet)
    first = EXPORT_SIZES[0]
    _runs_insert(runs[:first])
    t = step(f"runs (first {first:,})", t, rows=first)

    exports = [_export_measure(first)]
    t = time.perf_counter()
    _runs_insert(runs[first:])
    t = step(f"runs (the other {RUNS - first:,})", t, rows=RUNS - first)
    counts = _counts()
    gen_seconds = round(time.perf_counter() - started, 1)

    pages = _pages_measure()
    exports.append(_export_measure(RUNS))
    t = time.perf_counter()
    _runs_copy(EXPORT_SIZES[2])
    step(f"runs copied to {EXPORT_SIZES[2]:,}", t, rows=EXPORT_SIZES[2] - RUNS)
    exports.append(_export_measure(EXPORT_SIZES[2]))

    from django.db import connection

    db_mb = round(Path(connection.settings_dict["NAME"]).stat().st_size / 2**20, 1)
    print(json.dumps({"generation": {"steps": steps, "counts": counts, "seconds": gen_seconds, "db_mb": db_mb},
                      "pages": pages, "exports": exports}))


def _counts() -> dict[str, int]:
    from improvement.models import ImprovementRun
    from models_registry.models import ModelVersion, NeuralModel, PerformanceSample, Task

    return {"tasks": Task.objects.count(), "models": NeuralModel.objects.count(),
            "versions": ModelVersion.objects.count(), "runs": ImprovementRun.objects.count(),
            "samples": PerformanceSample.objects.count()}


def _base_time():
    import datetime as dt

    from django.utils import timezone

    return timezone.now().replace(microsecond=0) - dt.timedelta(days=DAYS)


# ------------------------------------------------------------------------------- generation


def _fleet() -> dict[str, Any]:
    """Tasks, models and versions; the first model of each task has a real version (weights file)."""
    import datetime as dt
    import random

    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from improvement.models import ImprovementConfig, LoopState
    from models_registry.data.builtin import BUILTIN_DATASETS
    from models_registry.models import ModelVersion, NeuralModel
    from models_registry.nn.evaluation import EvaluationResult
    from models_registry.nn.genome import build_module
    from models_registry.services import model_create, task_create_builtin, version_create

    ImprovementConfig.objects.update_or_create(pk=1, defaults={"enabled": False, "auto_start": False})
    LoopState.objects.update_or_create(pk=1, defaults={"running": False})
    get_user_model().objects.create_superuser(username="bench", password="bench-scale-password", email="")
    rng = random.Random(0)
    base = _base_time()

    metric = {"classes": "accuracy", "values": "r2", "reconstruction": "reconstruction_r2"}
    latency = {"p50_ms_b1": 0.08, "p95_ms_b1": 0.12, "p99_ms_b1": 0.2, "p50_ms_b256": 0.4, "p95_ms_b256": 0.6,
               "p99_ms_b256": 0.7}
    tasks, models, templates = [], [], {}  # templates: task pk -> its real version
    for key, spec in BUILTIN_DATASETS.items():
        task = task_create_builtin(key=key)
        model = model_create(task=task, name=f"model-{len(tasks):03d}")
        evaluation = EvaluationResult(score=0.5, metric=metric[spec.output_kind], latency=latency,
                                      n_parameters=1000, size_bytes=4000, n_rows=task.n_gate)
        templates[task.pk] = version_create(
            model=model, genome=spec.weak_genome, state_dict=build_module(spec.weak_genome, seed=0).state_dict(),
            evaluation=evaluation, note="bench: real weights")
        tasks.append(task)
        models.append(model)

    with transaction.atomic():
        models += NeuralModel.objects.bulk_create(
            [NeuralModel(task=tasks[i % len(tasks)], name=f"model-{i:03d}") for i in range(len(tasks), MODELS)],
            batch_size=500)
        chains: dict[int, list] = {m.pk: [] for m in models}  # model pk -> its versions, v1 first
        for version in templates.values():
            chains[version.model_id].append(version)
        for number in range(1, VERSIONS + 1):
            rows = []
            for model in models:
                if len(chains[model.pk]) >= number:
                    continue
                template = templates[model.task_id]
                parent = chains[model.pk][-1] if chains[model.pk] else None
                score = min(0.99, 0.45 + 0.1 * number + rng.uniform(-0.05, 0.05))
                p95 = rng.uniform(0.05, 2.0)
                rows.append(ModelVersion(
                    model=model, number=number, genome=template.genome, runtime=template.runtime,
                    weights_file=template.weights_file, weights_sha256=template.weights_sha256, parent=parent,
                    score=score, metric=template.metric, latency_p50_ms=p95 * 0.7, latency_p95_ms=p95,
                    latency_p95_ms_batch=p95 * 6, n_parameters=template.n_parameters, size_bytes=template.size_bytes,
                    metrics={**template.metrics, "score": score}, note=f"bench v{number}",
                ))
            for version in ModelVersion.objects.bulk_create(rows, batch_size=500):
                chains[version.model_id].append(version)
        ModelVersion.objects.filter(pk__in=[c[-1].pk for c in chains.values()]).update(is_active=True)
        # Versions over the days: v1 near the start, the active one near the end.
        spread = []
        for i, chain in enumerate(chains.values()):
            for version in chain:
                at = base + dt.timedelta(days=DAYS * (version.number - 1) / VERSIONS, minutes=i)
                spread.append((at, version.pk))
        with connection.cursor() as cursor:
            cursor.executemany(f"UPDATE {ModelVersion._meta.db_table} SET created_at = %s WHERE id = %s", spread)
    return {"tasks": tasks, "models": models, "versions": [v for c in chains.values() for v in c],
            "chains": chains, "base": base}


def _samples(fleet: dict[str, Any]) -> None:
    """``SAMPLES`` performance samples, made by the database: neural ones over every version, one in ten
    of the task's algorithm; a twentieth held-out evaluations, a twentieth shadow checks, the rest live."""
    from django.db import connection, transaction

    from models_registry.models import PerformanceSample

    task_of = {m.pk: m.task_id for m in fleet["models"]}
    slots = [(v.pk, task_of[v.model_id], "neural") for v in fleet["versions"]]
    n_algo = max(1, len(slots) // 9)
    slots += [(None, fleet["tasks"][i % len(fleet["tasks"])].pk, "algorithmic") for i in range(n_algo)]
    columns = {
        "task_id": "s.task_id", "version_id": "s.version_id", "implementation": "s.implementation",
        "source": "CASE q.n % 20 WHEN 0 THEN 'evaluation' WHEN 1 THEN 'shadow' ELSE 'live' END",
        "score": "0.5 + (ABS(RANDOM()) % 500) / 1000.0", "metric": "'accuracy'",
        "latency_p50_ms": "(ABS(RANDOM()) % 1000) / 1000.0", "latency_p95_ms": "(ABS(RANDOM()) % 3000) / 1000.0",
        "latency_p99_ms": "(ABS(RANDOM()) % 5000) / 1000.0", "latency_p50_ms_batch": "(ABS(RANDOM()) % 8000) / 1000.0",
        "latency_p95_ms_batch": "(ABS(RANDOM()) % 9000) / 1000.0", "throughput_per_s": "ABS(RANDOM()) % 5000",
        "n_requests": "ABS(RANDOM()) % 2000", "n_errors": "CASE WHEN q.n % 97 = 0 THEN 1 ELSE 0 END",
        "n_parameters": "1000", "size_bytes": "4000", "cpu_percent": "(ABS(RANDOM()) % 1000) / 10.0",
        "memory_mb": "150.0 + (ABS(RANDOM()) % 100)", "extra": "'{}'",
        "created_at": "DATETIME(%s + q.n * %s)",
    }
    fields = {f.column for f in PerformanceSample._meta.concrete_fields if not f.primary_key}
    assert fields == set(columns), f"PerformanceSample columns changed: {fields ^ set(columns)}"
    table = PerformanceSample._meta.db_table
    base_jd = fleet["base"].timestamp() / 86400.0 + 2440587.5  # Julian day of the first sample
    step_days = DAYS / max(1, SAMPLES)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE bench_slot (slot INTEGER PRIMARY KEY, version_id INTEGER, "
                       "task_id INTEGER, implementation TEXT)")
        cursor.executemany("INSERT INTO bench_slot VALUES (%s, %s, %s, %s)",
                           [(i, *slot) for i, slot in enumerate(slots)])
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"WITH RECURSIVE q(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM q WHERE n < %s) "
            f"SELECT {', '.join(columns.values())} FROM q JOIN bench_slot s ON s.slot = q.n % {len(slots)}",
            [SAMPLES - 1, base_jd, step_days],  # in the order of the placeholders
        )
        cursor.execute("DROP TABLE bench_slot")


def _run_rows(fleet: dict[str, Any]) -> list[tuple]:
    """``RUNS`` finished runs (unsaved) with their creation times, oldest first, round-robin over the models."""
    import datetime as dt
    import random

    from improvement.models import ImprovementRun

    rng = random.Random(1)
    base, models, chains = fleet["base"], fleet["models"], fleet["chains"]
    strategies = ("training", "optimization", "architecture", "distillation")
    rows = []
    for i in range(RUNS):
        model = models[i % len(models)]
        chain = chains[model.pk]
        created = base + dt.timedelta(seconds=DAYS * 86400 * i / RUNS)
        started = created + dt.timedelta(seconds=rng.uniform(0.5, 30))
        finished = started + dt.timedelta(seconds=rng.uniform(5, 240))
        baseline = chain[min(len(chain) - 1, i * VERSIONS // RUNS)]
        roll = rng.random()
        status = "promoted" if roll < 0.2 else "rejected" if roll < 0.75 else "failed" if roll < 0.95 else "cancelled"
        strategy = strategies[(i // len(models)) % len(strategies)]
        base_score = baseline.score or 0.5
        cand_score = base_score + rng.uniform(-0.05, 0.1)
        gain = (cand_score - base_score) / max(1e-9, 1 - base_score) if status in ("promoted", "rejected") else None
        epochs = 30
        curve = [{"t": round(e * 2.5, 2), "phase": strategy, "epoch": e, "train_loss": round(2.3 / (e + 1), 5),
                  "val_score": round(base_score + (cand_score - base_score) * e / epochs, 5), "lr": 0.001}
                 for e in range(1, epochs + 1)]
        metrics = {"score": base_score, "metric": "accuracy", "n_test": 270, "n_parameters": 1000,
                   "size_bytes": 4000, "latency": {"p50_ms_b1": 0.08, "p95_ms_b1": 0.12, "p50_ms_b256": 0.4,
                                                   "p95_ms_b256": 0.6}}
        rows.append((ImprovementRun(
            model=model, strategy=strategy, status=status, origin="loop",
            trigger_reason=f"score {base_score:.3f} below 0.75", priority=rng.random(),
            params={"epochs": epochs, "seed": i, "time_budget_s": 240},
            features={"score": base_score, "strategy": strategy, "n_versions": len(chain)},
            baseline_version=baseline, result_version=chain[-1] if status == "promoted" else None,
            objective="score", baseline_metrics=metrics,
            candidate_metrics={} if status in ("failed", "cancelled") else {**metrics, "score": cand_score},
            gain=gain, decision=f"{status}: gain {gain or 0:+.3f} vs threshold 0.1", progress=1.0,
            progress_message="done", curve=curve,
            log="".join(f"epoch {e}/{epochs} loss {2.3 / (e + 1):.4f}\n" for e in range(1, epochs + 1)),
            error="RuntimeError: non-finite loss" if status == "failed" else "", worker=f"bench-worker-{i % 2}",
            attempts=1, cpu_seconds=rng.uniform(3, 200), peak_memory_mb=rng.uniform(150, 400),
            started_at=started, finished_at=finished, heartbeat_at=finished,
        ), created))
    return rows


def _runs_insert(rows: list[tuple]) -> None:
    from django.db import connection, transaction

    from improvement.models import ImprovementRun

    with transaction.atomic():
        made = ImprovementRun.objects.bulk_create([run for run, _ in rows], batch_size=500)
        with connection.cursor() as cursor:  # created_at is auto_now_add: spread it over the days
            cursor.executemany(f"UPDATE {ImprovementRun._meta.db_table} SET created_at = %s WHERE id = %s",
                               [(created, run.pk) for run, (_, created) in zip(made, rows, strict=True)])


def _runs_copy(total: int) -> None:
    """Grow the history to ``total`` runs by copying the existing ones (the database does it)."""
    from django.db import connection, transaction

    from improvement.models import ImprovementRun

    table = connection.ops.quote_name(ImprovementRun._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in ImprovementRun._meta.concrete_fields
                        if not f.primary_key)
    with transaction.atomic(), connection.cursor() as cursor:
        have = ImprovementRun.objects.count()
        last = ImprovementRun.objects.order_by("-id").values_list("id", flat=True).first()
        while have < total:
            n = min(have, total - have, RUNS)
            cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} "
                           f"WHERE id <= %s ORDER BY id LIMIT %s", [last, n])
            have += n


# ----------------------------------------------------------------------------- measurement


def _session_cookie() -> str:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def _page_paths() -> dict[str, str]:
    from django.db.models import Count

    from models_registry.models import NeuralModel

    busiest = NeuralModel.objects.annotate(n=Count("improvement_runs")).order_by("-n", "pk").first()
    return {"overview": "/", "history": "/api/history", "model page": f"/models/{busiest.pk}/"}


def _check_page(name: str, status: int, body: bytes) -> None:
    from improvement.models import ImprovementRun
    from models_registry.models import NeuralModel

    if status != 200:
        raise RuntimeError(f"{name}: HTTP {status}: {body[:300]!r}")
    if name == "overview":
        links = body.count(b'href="/models/')
        if links < NeuralModel.objects.count():
            raise RuntimeError(f"overview lists {links} model links, fewer than the models")
    elif name == "history":
        data = json.loads(body)
        if data["count"] != ImprovementRun.objects.count() or len(data["results"]) != 50:
            raise RuntimeError(f"history: count {data['count']}, {len(data['results'])} results")
    elif b"active v" not in body:
        raise RuntimeError("model page has no active version")


def _query_counts(paths: dict[str, str]) -> dict[str, int]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    counts = {}
    for name, path in paths.items():
        client.get(path)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path)
        assert response.status_code == 200, (name, response.status_code)
        counts[name] = len(queries)
    return counts


def _pages_measure() -> list[dict[str, Any]]:
    import http.client
    import statistics

    paths = _page_paths()
    queries = _query_counts(paths)
    cookie = _session_cookie()
    times: dict[str, list[float]] = {name: [] for name in paths}
    sizes: dict[str, int] = {}
    with _daphne("pages") as (port, _):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(WARMUP + REQUESTS):
            for name, path in paths.items():
                t0 = time.perf_counter()
                conn.request("GET", path, headers={"Cookie": cookie, "Accept": "text/html,application/json"})
                response = conn.getresponse()
                body = response.read()
                elapsed = (time.perf_counter() - t0) * 1000.0
                if i == 0:
                    _check_page(name, response.status, body)
                    sizes[name] = len(body)
                elif response.status != 200:
                    raise RuntimeError(f"{name}: HTTP {response.status}")
                if i >= WARMUP:
                    times[name].append(elapsed)
        conn.close()
    rows = []
    for name, path in paths.items():
        ts = sorted(times[name])
        rows.append({
            "page": name, "path": path, "requests": len(ts), "p50_ms": round(statistics.median(ts), 1),
            "p95_ms": round(ts[min(len(ts) - 1, round(0.95 * (len(ts) - 1)))], 1), "max_ms": round(ts[-1], 1),
            "queries": queries[name], "body_kb": round(sizes[name] / 1024, 1),
        })
    return rows


def _status_kb(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


class _RowCounter:
    """Counts the runs of a JSON export as it streams (each run is one object starting ``{"id":``)."""

    MARK = b'{"id":'

    def __init__(self) -> None:
        self.rows, self.bytes, self.tail, self.last_id = 0, 0, b"", None

    def feed(self, chunk: bytes) -> None:
        joined = self.tail + chunk
        self.rows += joined.count(self.MARK)
        self.bytes += len(chunk)
        at = joined.rfind(self.MARK)
        if at >= 0:
            digits = joined[at + len(self.MARK):at + len(self.MARK) + 20].split(b",")[0]
            if digits.isdigit():
                self.last_id = int(digits)
        self.tail = joined[-(len(self.MARK) - 1):]


def _export_http(port: int, cookie: str) -> tuple[_RowCounter, float, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    conn.request("GET", "/api/export?format=json", headers={"Cookie": cookie})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"export: HTTP {response.status}: {response.read()[:300]!r}")
    counter, end = _RowCounter(), b""
    while chunk := response.read(1 << 20):
        counter.feed(chunk)
        end = (end + chunk)[-8:]
    conn.close()
    return counter, time.perf_counter() - t0, end


def _export_asgi(cookie: str, fmt: str) -> tuple[float, int, int]:
    """Serve the export in this process through Django's ASGI handler; (tracemalloc peak MB, bytes, rows)."""
    import asyncio
    import gc
    import tracemalloc

    from django.core.asgi import get_asgi_application

    app = get_asgi_application()

    async def request(query: str) -> tuple[int, int, int]:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": "/api/export", "raw_path": b"/api/export", "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"cookie", cookie.encode())],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
        }
        finished, asked = asyncio.Event(), False
        state = {"status": 0, "bytes": 0, "newlines": 0}
        counter = _RowCounter()

        async def receive():
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                state["bytes"] += len(body)
                state["newlines"] += body.count(b"\n")
                counter.feed(body)
                if not message.get("more_body"):
                    finished.set()

        await app(scope, receive, send)
        rows = counter.rows if fmt == "json" else state["newlines"] - 1  # CSV: a header line, one line a run
        return state["status"], state["bytes"], rows

    asyncio.run(request(f"format={fmt}&status=queued"))  # warm-up: imports, URL resolving, first queries
    gc.collect()
    tracemalloc.start()
    try:
        status, size, rows = asyncio.run(request(f"format={fmt}"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if status != 200:
        raise RuntimeError(f"export ({fmt}) in-process: HTTP {status}")
    return peak / 2**20, size, rows


def _export_measure(size: int) -> dict[str, Any]:
    from improvement.models import ImprovementRun

    have = ImprovementRun.objects.count()
    if have != size:
        raise RuntimeError(f"expected {size} runs, the database has {have}")
    last_id = ImprovementRun.objects.order_by("-id").values_list("id", flat=True).first()
    cookie = _session_cookie()
    with _daphne(f"export-{size}") as (port, process):
        warm_rows = _export_warmup(port, cookie)
        before = _status_kb(process.pid)["VmRSS"]
        with open(f"/proc/{process.pid}/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        counter, seconds, end = _export_http(port, cookie)
        peak = _status_kb(process.pid)["VmHWM"]
    py_json, _, rows_json = _export_asgi(cookie, "json")
    py_csv, _, rows_csv = _export_asgi(cookie, "csv")
    complete = (counter.rows == size and counter.last_id == last_id and end.endswith(b"]\n")
                and rows_json == size and rows_csv == size and warm_rows == 0)
    return {
        "runs": size, "rows_http": counter.rows, "rows_asgi_json": rows_json, "rows_asgi_csv": rows_csv,
        "complete": complete, "body_mb": round(counter.bytes / 2**20, 1), "seconds": round(seconds, 2),
        "rss_before_mb": round(before / 1024, 1), "rss_peak_mb": round(max(0, peak - before) / 1024, 1),
        "py_peak_mb_json": round(py_json, 2), "py_peak_mb_csv": round(py_csv, 2),
    }


def _export_warmup(port: int, cookie: str) -> int:
    """An empty export (no queued runs): loads the views and opens the database connection. Its rows."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/api/export?format=json&status=queued", headers={"Cookie": cookie})
    response = conn.getresponse()
    counter = _RowCounter()
    counter.feed(response.read())
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"export warm-up: HTTP {response.status}")
    return counter.rows


@contextlib.contextmanager
def _daphne(label: str):
    """The ASGI server on a free loopback port against the scratch database; yields (port, process)."""
    import signal
    import socket
    import urllib.request

    from django.conf import settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = Path(settings.VAR_DIR) / f"daphne-{label}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "project.asgi:application"],
            cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{log_path.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"daphne not up in 60 s:\n{log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        yield port, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


if __name__ == "__main__" and "--driver" in sys.argv:
    _driver()
