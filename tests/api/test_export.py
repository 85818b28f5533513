"""The export streams every run as JSON or CSV, in constant memory (measured on 100,000 runs)."""

from __future__ import annotations

import asyncio
import csv
import gc
import io
import json
import time
import tracemalloc
import warnings
from datetime import datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token

from improvement.api.export import ExportResponse
from improvement.choices import RunStatus
from improvement.export import COLUMNS
from improvement.models import ImprovementRun
from models_registry.services import model_create
from tests.factories import csv_task, model_with_versions

pytestmark = pytest.mark.django_db


def _body(response) -> bytes:
    assert response.streaming, "the export must be a streaming response"
    return b"".join(response.streaming_content)


def _history(n: int, model, *, distinct: int = 2000) -> None:
    """``n`` finished runs: ``distinct`` made with bulk_create, the rest copied by the database."""
    now = timezone.now()
    version = model.versions.first()
    statuses = [RunStatus.PROMOTED, RunStatus.REJECTED, RunStatus.FAILED]
    rows = [
        ImprovementRun(
            model=model, strategy=("training", "optimization", "architecture", "distillation")[i % 4],
            status=statuses[i % 3], origin="loop", trigger_reason=f"score {i % 100} below 0.75",
            priority=0.5, params={"epochs": 40, "seed": i}, baseline_version=version, result_version=version,
            objective="score", gain=(i % 17) / 100, decision="promoted: +10.0% > 10% threshold",
            baseline_metrics={"score": 0.61, "metric": "accuracy", "latency": {"p50_ms_b1": 0.1, "p95_ms_b1": 0.2}},
            candidate_metrics={"score": 0.71, "metric": "accuracy", "latency": {"p50_ms_b1": 0.1, "p95_ms_b1": 0.2}},
            progress=1.0, cpu_seconds=3.5, peak_memory_mb=210.0, attempts=1,
            started_at=now - timedelta(seconds=30), finished_at=now,
        )
        for i in range(min(n, distinct))
    ]
    ImprovementRun.objects.bulk_create(rows, batch_size=1000)
    table = connection.ops.quote_name(ImprovementRun._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in ImprovementRun._meta.concrete_fields
                        if not f.primary_key)
    first = ImprovementRun.objects.order_by("id").values_list("id", flat=True).first()
    with connection.cursor() as cursor:
        for start in range(distinct, n, distinct):
            cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} "
                           "WHERE id >= %s AND id < %s ORDER BY id", [first, first + min(distinct, n - start)])


def test_json_export_has_every_run_with_its_details(bob):
    model, _ = model_with_versions(1)
    _history(5, model)
    ImprovementRun.objects.filter(pk=ImprovementRun.objects.order_by("id").first().pk).update(gain=None)
    response = bob.get("/api/export", {"format": "json"})
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="improvement-runs.json"'
    rows = json.loads(_body(response))
    assert len(rows) == 5 and set(rows[0]) == set(COLUMNS)
    first, second = rows[0], rows[1]
    assert first["gain"] is None and second["gain"] == pytest.approx(0.01)
    assert second["task"] == model.task.slug and second["model"] == "m" and second["strategy"] == "optimization"
    assert second["candidate_metrics"]["score"] == 0.71 and second["params"] == {"epochs": 40, "seed": 1}
    assert second["result_version_number"] == 1 and second["duration_s"] == pytest.approx(30.0)
    run = ImprovementRun.objects.get(pk=second["id"])
    assert datetime.fromisoformat(second["created_at"]) == run.created_at and second["error"] == ""


def test_the_seeds_export_carries_the_same_runs_as_the_rest_export(bob):
    from improvement.integration import export_improvement_data

    model, _ = model_with_versions(1)
    _history(4, model)
    ImprovementRun.objects.filter(pk=ImprovementRun.objects.order_by("id").last().pk).update(gain=float("nan"))
    rows = json.loads(_body(bob.get("/api/export")))
    data = export_improvement_data()
    assert data["runs"] == rows and len(rows) == 4 and rows[-1]["gain"] is None
    json.dumps(data, allow_nan=False)  # plain, valid JSON throughout


def test_csv_export_and_filters(bob):
    model, _ = model_with_versions(1)
    other = model_create(task=csv_task("other", n=80, seed=5), name="other")
    _history(6, model)
    ImprovementRun.objects.create(model=other, strategy="training", status=RunStatus.QUEUED)
    response = bob.get("/api/export", {"format": "csv"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(_body(response).decode())))
    assert len(rows) == 7 and list(rows[0]) == COLUMNS
    assert json.loads(rows[0]["baseline_metrics"])["score"] == 0.61 and rows[-1]["finished_at"] == ""
    assert json.loads(rows[1]["params"]) == {"epochs": 40, "seed": 1}
    filtered = json.loads(_body(bob.get("/api/export", {"model": other.pk})))
    assert [r["model"] for r in filtered] == ["other"]
    assert len(json.loads(_body(bob.get("/api/export", {"strategy": "training"})))) == 3
    response = bob.get("/api/export", {"format": "xml"})
    assert response.status_code == 400 and response.json()["error"]["details"]["format"]


def test_csv_export_neutralises_formula_cells(bob):
    """Free text (decisions, trigger reasons) that a spreadsheet would run as a formula is written as text."""
    model, _ = model_with_versions(1)
    names = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "plain"]
    for name in names:
        ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.QUEUED, decision=name,
                                      trigger_reason=name, gain=-0.5)
    rows = list(csv.DictReader(io.StringIO(_body(bob.get("/api/export", {"format": "csv"})).decode())))
    assert [r["decision"] for r in rows] == ["'" + n for n in names[:-1]] + ["plain"]
    assert [r["trigger_reason"] for r in rows] == ["'" + n for n in names[:-1]] + ["plain"]
    assert all(r["id"].isdigit() and r["gain"] == "-0.5" for r in rows)  # numbers are left as numbers
    json_decisions = [r["decision"] for r in json.loads(_body(bob.get("/api/export")))]
    assert json_decisions == names  # JSON is not a spreadsheet format: left as written


def test_empty_export_is_valid(bob):
    assert json.loads(_body(bob.get("/api/export"))) == []
    assert _body(bob.get("/api/export", {"format": "csv"})).decode().strip() == ",".join(COLUMNS)


@pytest.mark.slow
def test_export_of_100000_runs_streams_in_constant_memory(bob):
    model, _ = model_with_versions(1)
    started = time.perf_counter()
    _history(100_000, model)
    assert ImprovementRun.objects.count() == 100_000
    created_s = time.perf_counter() - started

    gc.collect()
    tracemalloc.start()
    try:
        response = bob.get("/api/export", {"format": "json"})
        assert response.status_code == 200
        total, chunks, tail = 0, 0, b""
        for chunk in response.streaming_content:  # consumed and dropped, as a client would
            total += len(chunk)
            chunks += 1
            tail = (tail + chunk)[-64:]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    streamed_s = time.perf_counter() - started - created_s
    print(f"\n100,000 runs: created in {created_s:.1f} s, exported {total / 2**20:.1f} MiB in {chunks} chunks "
          f"in {streamed_s:.1f} s, peak traced memory {peak / 2**20:.2f} MiB")
    assert tail.rstrip().endswith(b"]") and chunks > 100
    assert total > 50 * 2**20
    assert peak < total / 5, f"peak {peak} bytes for {total} streamed: the export is not streaming"
    assert peak < 16 * 2**20


def test_non_finite_floats_are_exported_as_null(bob):
    """PostgreSQL keeps NaN and infinity in float columns; JSON has neither."""
    model, _ = model_with_versions(1)
    ImprovementRun.objects.create(model=model, strategy="training", gain=float("nan"), cpu_seconds=float("inf"),
                                  priority=1.5)
    (row,) = json.loads(_body(bob.get("/api/export")))
    assert row["gain"] is None and row["cpu_seconds"] is None and row["priority"] == 1.5


# What Django warns when it reads a synchronous iterator whole before an ASGI server sends any of it.
CONSUMES_WHOLE = "StreamingHttpResponse must consume synchronous iterators"


def test_export_response_hands_an_asgi_server_one_chunk_at_a_time():
    """Django's StreamingHttpResponse reads a sync iterator whole before an ASGI server sends any of it."""
    pulled = []

    def chunks():
        for i in range(3):
            pulled.append(i)
            yield f"part {i};"

    response = ExportResponse(chunks(), content_type="text/plain")

    async def consume():
        return [(part, len(pulled)) async for part in response]

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=CONSUMES_WHOLE)
        seen = async_to_sync(consume)()
    assert seen == [(b"part 0;", 1), (b"part 1;", 2), (b"part 2;", 3)]
    assert b"".join(ExportResponse(iter([b"a", "b"])).streaming_content) == b"ab"  # WSGI: unchanged


async def _asgi_get(path: str, query: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, list[bytes]]:
    """GET ``path`` through Django's ASGI handler, as daphne serves it; (status, body messages)."""
    from django.core.asgi import get_asgi_application

    app, done, asked, status, parts = get_asgi_application(), asyncio.Event(), False, [0], []

    async def receive():
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        elif message["type"] == "http.response.body":
            if message.get("body"):
                parts.append(message["body"])
            if not message.get("more_body"):
                done.set()

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
             "root_path": "", "headers": [(b"host", b"testserver"), *headers], "client": ("127.0.0.1", 5000),
             "server": ("testserver", 80)}
    await app(scope, receive, send)
    return status[0], parts


@pytest.mark.django_db(transaction=True)  # the ASGI handler reads in its own thread, with its own connection
def test_export_streams_every_run_through_the_asgi_handler(viewer):
    model, _ = model_with_versions(1)
    _history(1200, model, distinct=600)
    token = Token.objects.create(user=viewer).key
    headers = [(b"authorization", f"Token {token}".encode())]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=CONSUMES_WHOLE)
        status, parts = async_to_sync(_asgi_get)("/api/export", "format=json", headers)
        csv_status, csv_parts = async_to_sync(_asgi_get)("/api/export", "format=csv", headers)
    assert status == 200 and csv_status == 200 and len(parts) > 2  # sent in several chunks, not one
    rows = json.loads(b"".join(parts))
    assert [r["id"] for r in rows] == list(ImprovementRun.objects.order_by("id").values_list("id", flat=True))
    assert len(list(csv.DictReader(io.StringIO(b"".join(csv_parts).decode())))) == 1200
