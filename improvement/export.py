"""Export of all improvement data, row by row (constant memory), for JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from improvement.models import ImprovementRun

EXPORT_FIELDS = [
    "id", "model_id", "model__name", "model__task__slug", "strategy", "status", "origin", "trigger_reason",
    "priority", "objective", "gain", "decision", "baseline_version_id", "result_version_id",
    "baseline_metrics", "candidate_metrics", "created_at", "started_at", "finished_at", "cpu_seconds",
    "peak_memory_mb", "attempts", "error",
]
CSV_COLUMNS = [f.replace("model__task__slug", "task").replace("model__name", "model") for f in EXPORT_FIELDS]


def export_rows(*, chunk_size: int = 2000) -> Iterator[dict]:
    qs = ImprovementRun.objects.order_by("id").values(*EXPORT_FIELDS)
    for row in qs.iterator(chunk_size=chunk_size):
        yield {column: row[field] for column, field in zip(CSV_COLUMNS, EXPORT_FIELDS, strict=True)}


def _default(value):
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def export_json_chunks() -> Iterator[str]:
    yield '{"runs": ['
    first = True
    for row in export_rows():
        yield ("" if first else ",") + json.dumps(row, default=_default, separators=(",", ":"))
        first = False
    yield "]}"


def export_csv_chunks() -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for i, row in enumerate(export_rows()):
        writer.writerow([json.dumps(v, default=_default) if isinstance(v, dict | list) else
                         (_default(v) if v is not None and not isinstance(v, str | int | float) else v)
                         for v in row.values()])
        if i % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate(0)
    yield buffer.getvalue()
