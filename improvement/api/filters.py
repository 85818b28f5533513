"""Query filters of runs (``/api/runs``, ``/api/history``, ``/api/export``)."""

from __future__ import annotations

import django_filters

from improvement.choices import RunOrigin, RunStatus
from improvement.models import ImprovementRun
from improvement.strategies.registry import strategy_choices
from project.api.fields import IdFilter


class RunFilter(django_filters.FilterSet):
    model = IdFilter(field_name="model_id", help_text="Model id.")
    task = django_filters.CharFilter(field_name="model__task__slug", help_text="Task slug.")
    strategy = django_filters.ChoiceFilter(choices=strategy_choices)
    status = django_filters.ChoiceFilter(choices=RunStatus.choices)
    origin = django_filters.ChoiceFilter(choices=RunOrigin.choices)
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte",
                                                     help_text="Created at or after (ISO 8601).")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lte",
                                                      help_text="Created at or before (ISO 8601).")
    finished_after = django_filters.IsoDateTimeFilter(field_name="finished_at", lookup_expr="gte",
                                                      help_text="Finished at or after (ISO 8601).")
    finished_before = django_filters.IsoDateTimeFilter(field_name="finished_at", lookup_expr="lte",
                                                       help_text="Finished at or before (ISO 8601).")

    class Meta:
        model = ImprovementRun
        fields = ["model", "task", "strategy", "status", "origin"]


class HistoryFilter(RunFilter):
    """The seed's history filters: ``since``/``until`` bound the creation time."""

    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte",
                                             help_text="Created at or after (ISO 8601).")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lte",
                                             help_text="Created at or before (ISO 8601).")
