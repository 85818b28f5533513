"""Export of every improvement run, as JSON or CSV, streamed in constant memory.

Used by the REST export (``/api/export``, served by ``improvement.api.export.ExportResponse``)
and by the seed's ``export_improvement_data()``: one set of columns for both.

The database does the row formatting: for JSON each run arrives as one JSON object text
(SQLite ``json_object``, PostgreSQL ``jsonb_build_object``), for CSV as a tuple of plain
values; datetimes are rendered as ISO 8601 in UTC by the database too. Rows are read with
``.values_list()`` over ``.iterator(chunk_size=...)`` — the cursor is read a chunk at a time
and no model instance or per-row dict is built — and leave in batches of text. Memory stays
flat whatever the size, and a large export costs little more than the database read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from django.db.models import F, FloatField, Func, JSONField, QuerySet, TextField
from django.db.models.functions import Cast, JSONObject

CHUNK_SIZE = 2000  # rows fetched from the database cursor at a time
BATCH_ROWS = 500  # rows per chunk of the response body


class IsoDateTime(Func):
    """A datetime column as ISO 8601 text in UTC (``2026-01-31T12:00:00.123456+00:00``), or NULL."""

    output_field = TextField()

    def as_sqlite(self, compiler, connection, **extra):
        # SQLite stores UTC datetimes as 'YYYY-MM-DD HH:MM:SS[.ffffff]': Python's isoformat() minus the
        # 'T' and the offset.
        return self.as_sql(compiler, connection, template="(REPLACE(%(expressions)s, ' ', 'T') || '+00:00')",
                           **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection,
            template="""TO_CHAR(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')""",
            **extra,
        )


class DurationSeconds(Func):
    """Seconds from the second datetime column to the first (NULL if either is NULL).

    SQLite's JULIANDAY is a double of days: good to about a microsecond, rounded to milliseconds.
    """

    output_field = FloatField()

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection, arg_joiner=") - JULIANDAY(",
            template="ROUND((JULIANDAY(%(expressions)s)) * 86400.0, 3)", **extra,
        )

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, arg_joiner=" - ",
                           template="EXTRACT(EPOCH FROM (%(expressions)s))::double precision", **extra)


class FiniteOrNull(Func):
    """A float column with NaN and ±infinity as NULL: JSON has neither (PostgreSQL stores them)."""

    output_field = FloatField()

    def as_sqlite(self, compiler, connection, **extra):
        # SQLite stores NaN as NULL already; 9e999 is its infinity literal.
        return self.as_sql(compiler, connection, template="NULLIF(NULLIF(%(expressions)s, 9e999), -9e999)", **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection,
            template="NULLIF(NULLIF(NULLIF(%(expressions)s, 'NaN'), 'Infinity'), '-Infinity')", **extra,
        )


class JSONValue(Func):
    """A JSON column as a JSON value inside JSON_OBJECT (SQLite would embed its text as a string)."""

    output_field = JSONField()

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="JSON(%(expressions)s)", **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="%(expressions)s", **extra)


# Output column -> expression. The order is the CSV's; JSON objects are unordered.
_PLAIN = {
    "id": F("id"),
    "model_id": F("model_id"),
    "model": F("model__name"),
    "task": F("model__task__slug"),
    "strategy": F("strategy"),
    "status": F("status"),
    "origin": F("origin"),
    "trigger_reason": F("trigger_reason"),
    "priority": FiniteOrNull("priority"),
    "objective": F("objective"),
    "gain": FiniteOrNull("gain"),
    "decision": F("decision"),
    "baseline_version_id": F("baseline_version_id"),
    "baseline_version_number": F("baseline_version__number"),
    "result_version_id": F("result_version_id"),
    "result_version_number": F("result_version__number"),
    "attempts": F("attempts"),
    "cpu_seconds": FiniteOrNull("cpu_seconds"),
    "peak_memory_mb": FiniteOrNull("peak_memory_mb"),
    "error": F("error"),
    "created_at": IsoDateTime("created_at"),
    "started_at": IsoDateTime("started_at"),
    "finished_at": IsoDateTime("finished_at"),
    "duration_s": DurationSeconds("finished_at", "started_at"),
}
JSON_COLUMNS = ("params", "baseline_metrics", "candidate_metrics")
COLUMNS = [*_PLAIN, *JSON_COLUMNS]


def _ordered(queryset: QuerySet) -> QuerySet:
    return queryset.order_by("id")


def json_rows(queryset: QuerySet) -> Iterator[str]:
    """Each run as the text of one JSON object, oldest first, read a chunk at a time."""
    row = JSONObject(**_PLAIN, **{name: JSONValue(name) for name in JSON_COLUMNS})
    qs = _ordered(queryset).annotate(export_row=Cast(row, TextField())).values_list("export_row", flat=True)
    return qs.iterator(chunk_size=CHUNK_SIZE)


def csv_rows(queryset: QuerySet) -> Iterator[tuple]:
    """Each run as a tuple of ``COLUMNS`` (JSON-valued columns as JSON text), oldest first."""
    columns = {f"export_{name}": expression for name, expression in _PLAIN.items()}
    columns.update({f"export_{name}": Cast(name, TextField()) for name in JSON_COLUMNS})
    qs = _ordered(queryset).annotate(**columns).values_list(*columns)
    return qs.iterator(chunk_size=CHUNK_SIZE)


def _batched(items: Iterable, size: int = BATCH_ROWS) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def json_chunks(queryset: QuerySet) -> Iterator[bytes]:
    """A JSON array, one run per element, in chunks of ``BATCH_ROWS`` runs."""
    yield b"["
    separator = "\n"
    for batch in _batched(json_rows(queryset)):
        yield (separator + ",\n".join(batch)).encode()
        separator = ",\n"
    yield b"\n]\n"


#: A spreadsheet treats a cell that starts with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(cell):
    """A text cell a spreadsheet would run as a formula, prefixed with ``'`` so it shows as text
    (OWASP's advice); numbers and other cells are written as they are."""
    if isinstance(cell, str) and cell.startswith(FORMULA_PREFIXES):
        return "'" + cell
    return cell


def csv_chunks(queryset: QuerySet) -> Iterator[bytes]:
    """CSV with a header row, in chunks of ``BATCH_ROWS`` runs; JSON-valued columns hold JSON text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for batch in _batched(csv_rows(queryset)):
        writer.writerows([tuple(csv_safe(cell) for cell in row) for row in batch])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate(0)
    if buffer.tell():
        yield buffer.getvalue().encode()  # the header of an empty export
