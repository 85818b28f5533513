"""Reads behind the model and run lists (``/models/``, ``/runs/``): filtered, searched, sorted querysets.

Each list is one query for its page of rows (related rows joined, counts as subqueries) plus one
count, whatever the page size. Sort keys arrive already checked against the forms' whitelists
(``project.panel.forms_lists``); here they only map to fields.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db.models import (
    Count,
    F,
    FilteredRelation,
    IntegerField,
    OrderBy,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce, Substr
from django.utils import timezone

from improvement.choices import IN_FLIGHT
from improvement.models import ImprovementRun
from improvement.selectors import runs_query
from models_registry.models import ModelVersion, NeuralModel, Task
from project.panel.forms_lists import IDLE, IMPROVING, INITIAL

#: The run fields the list shows; the long ones (curve, log, metrics, checkpoint) stay in the database.
RUN_FIELDS = (
    "id", "model_id", "strategy", "status", "origin", "trigger_reason", "gain", "decision", "progress",
    "progress_message", "objective", "created_at", "started_at", "finished_at", "result_version_id",
    "model__id", "model__name", "model__task_id", "model__task__id", "model__task__slug",
)
_RUN_ID = re.compile(r"^#?(\d{1,12})$")


def day_start(day: date) -> datetime:
    """Midnight at the start of ``day`` in the current time zone."""
    return timezone.make_aware(datetime.combine(day, time.min))


def day_range(*, since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """[start of ``since``, start of the day after ``until``): both days included."""
    return (day_start(since) if since else None,
            day_start(until + timedelta(days=1)) if until else None)


def task_choices() -> list[tuple[str, str]]:
    return [(slug, slug) for slug in Task.objects.order_by("slug").values_list("slug", flat=True)]


def model_choices() -> list[tuple[int, str]]:
    rows = NeuralModel.objects.order_by("task__slug", "name").values_list("id", "task__slug", "name")
    return [(pk, f"{slug}/{name}") for pk, slug, name in rows]


def _ordering(sort: str, fields: dict[str, str]) -> OrderBy:
    """``key`` or ``-key`` (a whitelisted key) as an ordering; empty values last either way."""
    descending = sort.startswith("-")
    expression = F(fields[sort.removeprefix("-")])
    return expression.desc(nulls_last=True) if descending else expression.asc(nulls_last=True)


def runs_filtered(
    *, sort: str, sort_fields: dict[str, str], task: str = "", model_id: int | None = None, strategy: str = "",
    status: str = "", origin: str = "", since: date | None = None, until: date | None = None, search: str = "",
) -> QuerySet[ImprovementRun]:
    """Every run matching the filters, sorted by ``sort`` (a key of ``sort_fields``), newest first among ties."""
    qs = (runs_query(model_id=model_id, task=task, strategy=strategy, status=status).only(*RUN_FIELDS)
          .annotate(result_number=F("result_version__number"), error_head=Substr("error", 1, 200)))
    if origin:
        qs = qs.filter(origin=origin)
    start, end = day_range(since=since, until=until)
    if start:
        qs = qs.filter(created_at__gte=start)
    if end:
        qs = qs.filter(created_at__lt=end)
    if search:
        match = (Q(model__name__icontains=search) | Q(model__task__slug__icontains=search)
                 | Q(decision__icontains=search) | Q(trigger_reason__icontains=search))
        run_id = _RUN_ID.match(search)
        if run_id:
            match |= Q(pk=int(run_id.group(1)))
        qs = qs.filter(match)
    return qs.order_by(_ordering(sort, sort_fields), "-id")


def _count(qs: QuerySet) -> Coalesce:
    """A correlated ``COUNT(*)`` of ``qs`` (already filtered on ``OuterRef``), 0 when empty."""
    counted = qs.order_by().values("model_id").annotate(n=Count("id")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def models_filtered(
    *, sort: str, sort_fields: dict[str, str], task: str = "", strategy: str = "", origin: str = "",
    status: str = "", since: date | None = None, until: date | None = None, search: str = "",
) -> QuerySet[NeuralModel]:
    """Every model with its active version's figures and how that version was made, filtered and sorted.

    ``made_by_*`` come from the run that produced the active version; a version no run produced
    (the first one) has none, and its origin is ``initial``. ``since``/``until`` bound the date
    the active version was made.
    """
    made_by = ImprovementRun.objects.filter(result_version_id=OuterRef("active_id")).order_by("id")
    qs = (NeuralModel.objects.select_related("task")
          .annotate(active=FilteredRelation("versions", condition=Q(versions__is_active=True)))
          .annotate(
              active_id=F("active__id"), active_number=F("active__number"), active_score=F("active__score"),
              active_score_split=F("active__score_split"),
              active_test_score=F("active__test_score"), active_metric=F("active__metric"),
              active_p95_ms=F("active__latency_p95_ms"), active_n_parameters=F("active__n_parameters"),
              active_size_bytes=F("active__size_bytes"), active_runtime=F("active__runtime"),
              active_created_at=F("active__created_at"), active_note=F("active__note"),
          )
          .annotate(
              made_by_run=Subquery(made_by.values("id")[:1]),
              made_by_strategy=Subquery(made_by.values("strategy")[:1]),
              made_by_origin=Subquery(made_by.values("origin")[:1]),
              n_versions=_count(ModelVersion.objects.filter(model_id=OuterRef("pk"))),
              n_runs=_count(ImprovementRun.objects.filter(model_id=OuterRef("pk"))),
              n_in_flight=_count(ImprovementRun.objects.filter(model_id=OuterRef("pk"), status__in=IN_FLIGHT)),
          ))
    if task:
        qs = qs.filter(task__slug=task)
    if strategy:
        qs = qs.filter(made_by_strategy=strategy)
    if origin == INITIAL:
        qs = qs.filter(active_id__isnull=False, made_by_run__isnull=True)
    elif origin:
        qs = qs.filter(made_by_origin=origin)
    if status == IMPROVING:
        qs = qs.filter(n_in_flight__gt=0)
    elif status == IDLE:
        qs = qs.filter(n_in_flight=0)
    start, end = day_range(since=since, until=until)
    if start:
        qs = qs.filter(active_created_at__gte=start)
    if end:
        qs = qs.filter(active_created_at__lt=end)
    if search:
        qs = qs.filter(Q(name__icontains=search) | Q(task__slug__icontains=search) | Q(task__name__icontains=search)
                       | Q(description__icontains=search) | Q(active__note__icontains=search))
    return qs.order_by(_ordering(sort, sort_fields), "task__slug", "name", "id")


def page_of(qs: QuerySet, *, number: str | None, per_page: int) -> tuple[Page, str]:
    """The requested page of ``qs``, and a message when ``number`` named no page (then the nearest one)."""
    paginator = Paginator(qs, per_page)
    try:
        return paginator.page(number or 1), ""
    except PageNotAnInteger:
        return paginator.page(1), f"Page {number!r} is not a page number; showing page 1."
    except EmptyPage:
        if int(number or 1) < 1:
            return paginator.page(1), f"There is no page {number}; showing page 1."
        last = paginator.num_pages
        return paginator.page(last), f"There is no page {number}; showing page {last} of {last}."
