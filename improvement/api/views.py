"""REST views of the improvement loop: runs, strategies, configuration, loop control and reports.

Thin: validate, call one service or selector, serialize.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from improvement.api.export import ExportResponse
from improvement.api.filters import HistoryFilter, RunFilter
from improvement.api.serializers import (
    ConfigSerializer,
    ExportRunSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunSerializer,
    StrategySerializer,
)
from improvement.choices import IN_FLIGHT, RunOrigin
from improvement.export import csv_chunks, json_chunks
from improvement.health import system_health_report
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.runs.lifecycle import run_cancel, run_create
from improvement.scheduler.loop import cycle_force, loop_start, loop_stop
from improvement.selectors import improvement_status
from improvement.services import config_update
from improvement.strategies.registry import all_strategies
from project.api.errors import Conflict
from project.api.fields import id_path_parameter
from project.api.pagination import Pagination
from project.api.permissions import IsOperator, IsOperatorOrReadOnly
from project.api.schema import EXTRA_ERRORS

_REPORT = OpenApiResponse(OpenApiTypes.OBJECT, description="A JSON object (see the description).")


def _runs():
    return ImprovementRun.objects.select_related(
        "model__task", "baseline_version", "result_version", "requested_by"
    ).order_by("-created_at", "-id")


# ------------------------------------------------------------------------------------- runs

_RUN_EXAMPLE = OpenApiExample(
    "Train now", request_only=True,
    value={"model": 1, "strategy": "training", "params": {"time_budget_s": 60, "epochs": 100},
           "reason": "new data arrived"},
)


@extend_schema_view(
    list=extend_schema(summary="List improvement runs", tags=["runs"],
                       description="Newest first; filter by model, task, strategy, status, origin and "
                                   "creation/finish time."),
    retrieve=extend_schema(summary="An improvement run (with metrics, curve and log)", tags=["runs"],
                           parameters=[id_path_parameter("Run id.")]),
)
class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Improvement runs: one strategy applied to one model."""

    permission_classes = [IsOperatorOrReadOnly]
    parser_classes = [JSONParser]
    pagination_class = Pagination
    filterset_class = RunFilter
    lookup_value_regex = "[0-9]{1,18}"  # ids; anything else is the JSON 404 of the catch-all

    def get_queryset(self):
        return _runs()

    def get_serializer_class(self):
        return RunDetailSerializer if self.action == "retrieve" else RunSerializer

    @extend_schema(
        summary="Run a strategy on a model now",
        tags=["runs"],
        description="Queues the run at once (outside the loop's schedule and slots); a worker picks it up. "
                    "Poll the run until its status is promoted, rejected, failed or cancelled.",
        request=RunCreateSerializer,
        responses={201: RunDetailSerializer},
        examples=[_RUN_EXAMPLE],
    )
    def create(self, request: Request) -> Response:
        serializer = RunCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        run = run_create(
            model=data["model"], strategy=data["strategy"], origin=RunOrigin.OPERATOR,
            trigger_reason=data.get("reason") or f"requested by {request.user.get_username()} (API)",
            params=data.get("params") or {}, requested_by=request.user,
        )
        return Response(RunDetailSerializer(_runs().get(pk=run.pk)).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="runs_cancel",
        summary="Cancel a run",
        tags=["runs"],
        description="A queued run is cancelled at once; a running one stops at its next progress report "
                    "(`cancel_requested` is true until then). A finished run answers 409.",
        request=None,
        parameters=[id_path_parameter("Run id.")],
        responses={200: RunDetailSerializer},
        extensions={EXTRA_ERRORS: ["409"]},
    )
    @action(detail=True, methods=["post"], pagination_class=None, filterset_class=None)
    def cancel(self, request: Request, pk=None) -> Response:
        run = self.get_object()
        if run.status not in IN_FLIGHT:
            raise Conflict(f"run #{run.pk} has already finished ({run.status}); only queued or running runs "
                           "can be cancelled")
        run_cancel(run=run)
        return Response(RunDetailSerializer(_runs().get(pk=run.pk)).data)


@extend_schema(
    summary="Improvement history (the seed's get_improvement_history)",
    tags=["reports"],
    description="Runs, newest first, `limit` per page (50 by default, as in the seed's "
                "`get_improvement_history(limit=50)`), filterable by model, task, strategy, status and "
                "`since`/`until` (creation time).",
)
class HistoryView(generics.ListAPIView):
    serializer_class = RunSerializer
    pagination_class = Pagination
    filterset_class = HistoryFilter

    def get_queryset(self):
        return _runs()


# ------------------------------------------------------------------------------- strategies


class StrategyListView(APIView):
    @extend_schema(summary="List strategies", tags=["runs"], responses={200: StrategySerializer(many=True)})
    def get(self, request: Request) -> Response:
        strategies = [
            {"name": name, "objective": s.objective, "description": s.description}
            for name, s in all_strategies().items()
        ]
        return Response(StrategySerializer(strategies, many=True).data)


# ---------------------------------------------------------------------------- configuration

_CONFIG_EXAMPLE = OpenApiExample(
    "Faster cycles", request_only=True,
    value={"improvement_interval": 120, "max_concurrent_improvements": 2, "performance_threshold": 0.05},
)


class ConfigView(APIView):
    """The loop's configuration (the seed's SelfImprovementConfig). Operators may change it."""

    permission_classes = [IsOperatorOrReadOnly]
    parser_classes = [JSONParser]

    @extend_schema(summary="The configuration", tags=["configuration"], responses={200: ConfigSerializer})
    def get(self, request: Request) -> Response:
        return Response(ConfigSerializer(ImprovementConfig.load()).data)

    def _update(self, request: Request, *, partial: bool) -> Response:
        serializer = ConfigSerializer(ImprovementConfig.load(), data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        config = config_update(**serializer.validated_data)  # full_clean(): cross-field errors are a 400
        return Response(ConfigSerializer(config).data)

    @extend_schema(
        summary="Change the configuration", tags=["configuration"], request=ConfigSerializer,
        responses={200: ConfigSerializer}, examples=[_CONFIG_EXAMPLE],
        description="Validated as a whole: an interval under 1 s, a concurrency of 0, a negative threshold "
                    "or architecture_score_low above architecture_score_high get a 400 naming the field. "
                    "Every process reads the change at its next cycle or run, without a restart.",
    )
    def patch(self, request: Request) -> Response:
        return self._update(request, partial=True)

    @extend_schema(
        summary="Replace the configuration", tags=["configuration"], request=ConfigSerializer,
        responses={200: ConfigSerializer}, examples=[_CONFIG_EXAMPLE],
        description="Fields left out keep their current values; validated as for PATCH.",
    )
    def put(self, request: Request) -> Response:
        return self._update(request, partial=False)


# ------------------------------------------------------------------------------ loop control


class _LoopAction(APIView):
    permission_classes = [IsOperator]
    parser_classes = [JSONParser]


class LoopStartView(_LoopAction):
    @extend_schema(operation_id="loop_start", summary="Start the loop", tags=["loop"], request=None, responses={200: _REPORT},
                   description="Schedules a cycle every improvement_interval seconds (the seed's "
                               "start_self_improvement_loop). Answers the loop's state.")
    def post(self, request: Request) -> Response:
        return Response(loop_start())


class LoopStopView(_LoopAction):
    @extend_schema(operation_id="loop_stop", summary="Stop the loop", tags=["loop"], request=None, responses={200: _REPORT},
                   description="No further cycles are scheduled; runs already in flight finish. Answers the "
                               "loop's state.")
    def post(self, request: Request) -> Response:
        return Response(loop_stop())


class LoopCycleView(_LoopAction):
    @extend_schema(operation_id="loop_cycle", summary="Force a cycle now", tags=["loop"], request=None, responses={200: _REPORT},
                   description="Measure, trigger, prioritise and enqueue once, now (the seed's "
                               "force_improvement_cycle). Answers the cycle's decisions.")
    def post(self, request: Request) -> Response:
        return Response(cycle_force())


# ---------------------------------------------------------------------------------- reports


class StatusView(APIView):
    @extend_schema(operation_id="status", summary="Improvement status (the seed's get_improvement_status)", tags=["reports"],
                   responses={200: _REPORT},
                   description="What runs now (with progress), what is queued, when the next cycle is, "
                               "and the last cycle's decisions.")
    def get(self, request: Request) -> Response:
        return Response(improvement_status())


class HealthView(APIView):
    @extend_schema(operation_id="health", summary="Health report (the seed's get_system_health_report)", tags=["reports"],
                   responses={200: _REPORT},
                   description="Overall health, improvement efficiency, stability, learning rate and resource "
                               "usage, per model and for the fleet.")
    def get(self, request: Request) -> Response:
        return Response(system_health_report())


class _FixedJSONNegotiation:
    """``?format=`` names the export format here, not a DRF renderer: errors are always JSON."""

    def perform_content_negotiation(self, request, force=False):
        return JSONRenderer(), JSONRenderer.media_type


class ExportFormatSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=["json", "csv"], default="json", required=False)


class ExportView(_FixedJSONNegotiation, generics.GenericAPIView):
    """All improvement runs, streamed (the seed's export_improvement_data)."""

    filterset_class = RunFilter
    pagination_class = None

    def get_queryset(self):
        return ImprovementRun.objects.all()

    @extend_schema(
        operation_id="export",
        summary="Export every improvement run (JSON or CSV, streamed)",
        tags=["reports"],
        description="Every run with its model, task, strategy, status, gain, metrics, timings and versions, "
                    "oldest first, streamed in constant memory whatever the size. The run filters apply. "
                    "In CSV, `params`, `baseline_metrics` and `candidate_metrics` hold JSON text.",
        parameters=[OpenApiParameter("format", str, enum=["json", "csv"], default="json",
                                     description="json: an array of objects; csv: a header row, then runs.")],
        responses={
            (200, "application/json"): OpenApiResponse(
                ExportRunSerializer(many=True), description="A JSON array of runs."),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV with a header row."),
        },
        filters=True,
    )
    def get(self, request: Request) -> ExportResponse:
        choice = ExportFormatSerializer(data=request.query_params)
        choice.is_valid(raise_exception=True)
        fmt = choice.validated_data.get("format", "json")
        runs = self.filter_queryset(self.get_queryset())
        if fmt == "csv":
            response = ExportResponse(csv_chunks(runs), content_type="text/csv; charset=utf-8")
        else:
            response = ExportResponse(json_chunks(runs), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="improvement-runs.{fmt}"'
        return response
