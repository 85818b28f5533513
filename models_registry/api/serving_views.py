"""REST views of serving: predictions, feedback, the serving state of a task, the switch history, a ping.

Thin: validate, call one service, serialize. ``POST /api/tasks/<slug>/predict`` is the hot
path: the route comes from the process's route table (no database query beyond
authentication), inputs are validated with numpy, and the answer is built directly; its
prediction id is signed, not stored (``serving.prediction_ids``).
"""

from __future__ import annotations

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from models_registry.api.parsers import NPY_MEDIA_TYPE, PredictJSONParser, PredictNPYParser
from models_registry.api.serving_serializers import (
    FeedbackLiveSerializer,
    FeedbackRequestSerializer,
    FeedbackResponseSerializer,
    PredictRequestSerializer,
    PredictResponseSerializer,
    ServingForceSerializer,
    ServingSerializer,
    ServingSwitchSerializer,
)
from models_registry.models import Task
from models_registry.serving.choices import SwitchReason
from models_registry.serving.conf import serving_setting
from models_registry.serving.feedback import FeedbackInvalid, feedback_live, feedback_record, feedback_reports
from models_registry.serving.inputs import InputError, expected_text, inputs_validate
from models_registry.serving.models import ServingSwitch
from models_registry.serving.predict import PredictionFailed, serving_predict
from models_registry.serving.router import ServingUnavailable, TaskNotFound, serving_router
from models_registry.serving.selectors import serving_comparison, serving_state_get, serving_switch_list
from models_registry.serving.switching import serving_force, serving_reevaluate_after_feedback
from project.api.errors import api_exception_handler, error_body
from project.api.negotiation import SingleRendererNegotiation
from project.api.pagination import Pagination
from project.api.permissions import IsOperatorOrReadOnly
from project.api.throttles import ScopedRateThrottle, UserRateThrottle


class PredictRateThrottle(ScopedRateThrottle):
    """The ``predict`` scope, per user (constant time per request whatever the rate)."""


class _ServingAPIView(APIView):
    def get_exception_handler(self):
        return api_exception_handler  # the API's one error shape, whatever the settings say


def _invalid_input(message: str, details: dict | None = None) -> Response:
    return Response(error_body("invalid_input", message, details), status=status.HTTP_400_BAD_REQUEST)


# ------------------------------------------------------------------------------ predict

_PREDICT_EXAMPLES = [
    OpenApiExample("One digit (pattern-recognition)", request_only=True,
                   value={"inputs": [[[0.0, 0.3, 0.8, 0.8, 0.5, 0.0, 0.0, 0.0]] + [[0.0] * 8] * 7]}),
    OpenApiExample("A batch of two (hormone-response)", request_only=True,
                   value={"inputs": [[1.5, 8.0, 1.0, 1.2, 1.0, 4.0, 0.7, 0.3],
                                     [3.0, 12.0, 2.5, 0.8, 1.4, 6.0, 1.0, 0.1]]}),
    OpenApiExample("Answered by the neural version", response_only=True, status_codes=["200"],
                   value={"task": "pattern-recognition", "implementation": "neural", "version": 4,
                          "version_id": 17, "runtime": "onnx_int8", "outputs": [7], "labels": None,
                          "batch_size": 1,
                          "prediction_id": "AQABAwAAABEAAAA8ahVrAQAAAAEAsrzxdC7ttOUHHQoufidqjPbyKHko8ymI_Q"}),
]
_INVALID_INPUT = OpenApiResponse(
    description="The inputs do not meet the task's contract; the message states what was expected.",
    examples=[OpenApiExample("Wrong shape", value={"error": {
        "code": "invalid_input",
        "message": "inputs: expected shape [1, 8, 8] or [N, 1, 8, 8] with 1 ≤ N ≤ 1024, got [3, 8]",
        "details": {"expected_shape": [1, 8, 8], "max_batch": 1024}}})],
)


class TaskPredictView(_ServingAPIView):
    """Predict with whichever implementation serves the task now (neural or algorithmic)."""

    permission_classes = [IsAuthenticated]
    throttle_classes = [PredictRateThrottle]
    throttle_scope = "predict"
    parser_classes = [PredictJSONParser, PredictNPYParser]
    renderer_classes = [JSONRenderer]  # machine clients only: no content negotiation on the hot path
    content_negotiation_class = SingleRendererNegotiation

    @extend_schema(
        operation_id="task_predict",
        summary="Predict",
        description=(
            "Runs one input or a batch on the implementation currently serving the task and says which one "
            "answered. Inputs must be numbers of the task's `input_shape` (one input) or `[N, *input_shape]` "
            "(a batch, 1 ≤ N ≤ `PLASTICITY_MAX_BATCH`), all finite; anything else is a 400 stating the "
            "expected shape. Throttled with the `predict` scope. The inputs may also be sent as one binary "
            "array in NumPy's `.npy` format (`numpy.save`) with `Content-Type: application/x-npy`, which "
            "skips parsing text: the fastest way to send a large batch. Bodies above "
            "`PLASTICITY_PREDICT_MAX_BYTES` (32 MiB by default) are refused with 413. The answer's `prediction_id` "
            "(one per request, with the row index for a batch) is what `POST /api/tasks/{slug}/feedback` takes "
            "with the true answer."
        ),
        tags=["serving"],
        request={"application/json": PredictRequestSerializer, NPY_MEDIA_TYPE: OpenApiTypes.BINARY},
        responses={200: PredictResponseSerializer, 400: _INVALID_INPUT,
                   503: OpenApiResponse(description="Nothing can serve the task (no algorithm, no active version).")},
        examples=_PREDICT_EXAMPLES,
    )
    def post(self, request: Request, slug: str) -> Response:
        try:
            route = serving_router().route(slug)
        except TaskNotFound:
            raise exceptions.NotFound(f"No task {slug!r}.") from None
        except ServingUnavailable as exc:
            return Response(error_body("unavailable", str(exc)), status=status.HTTP_503_SERVICE_UNAVAILABLE)
        task = route.task
        max_batch = serving_setting("PLASTICITY_MAX_BATCH")
        data = request.data
        if not isinstance(data, dict) or "inputs" not in data:
            return _invalid_input(f'inputs: this field is required; send {{"inputs": ...}} with '
                                  f"{expected_text(task.input_shape, max_batch)}",
                                  {"expected_shape": list(task.input_shape), "max_batch": max_batch})
        try:
            X, _single = inputs_validate(data["inputs"], input_shape=task.input_shape, max_batch=max_batch)
        except InputError as exc:
            return _invalid_input(exc.message, exc.details)
        try:
            prediction = serving_predict(route=route, X=X)
        except PredictionFailed as exc:
            return Response(error_body("prediction_failed", str(exc)), status=status.HTTP_500_INTERNAL_SERVER_ERROR)
        return Response(prediction.answer())

    def handle_exception(self, exc: Exception) -> Response:
        # A body that is not JSON: say what a valid one looks like.
        if isinstance(exc, exceptions.ParseError):
            try:
                shape = serving_router().task(self.kwargs.get("slug", "")).input_shape
                hint = f'; send {{"inputs": ...}} with {expected_text(shape, serving_setting("PLASTICITY_MAX_BATCH"))}'
            except Exception:  # noqa: BLE001 - the hint is a courtesy
                hint = ""
            exc = exceptions.ParseError(f"body: not valid JSON ({exc.detail}){hint}")
        return super().handle_exception(exc)


# ------------------------------------------------------------------------------ feedback

_FEEDBACK_EXAMPLES = [
    OpenApiExample("One prediction's truth", request_only=True,
                   value={"items": [{"prediction_id": "AQABAwAAABEAAAA8ahVrAQAAAAEAsrzxdC7ttOUHHQoufidqjPbyKHko8ymI_Q",
                                     "truth": 7}]}),
    OpenApiExample("Rows of a batch", request_only=True,
                   value={"items": [{"prediction_id": "<the batch's prediction_id>", "rows": [0, 3, 4],
                                     "truths": ["c1", "c0", 2]}]}),
]
_INVALID_FEEDBACK = OpenApiResponse(
    description="An item cannot be recorded (nothing is): the message names the first bad item, "
                "`details.errors` each of them (up to 50).",
    examples=[OpenApiExample("A tampered id", value={"error": {
        "code": "invalid_feedback",
        "message": "items[2].prediction_id: the signature does not match: the id was altered or not issued by "
                   "this service",
        "details": {"errors": [{"item": 2, "field": "prediction_id",
                                "message": "the signature does not match: the id was altered or not issued by "
                                           "this service"}]}}})],
)


class TaskFeedbackView(_ServingAPIView):
    """True answers for live predictions (any client that may predict) and the live scores they give."""

    permission_classes = [IsAuthenticated]
    throttle_classes = [UserRateThrottle]
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="task_feedback_live",
        summary="Live scores from feedback",
        description=(
            "The task's metric on reported truths, with its 95 % interval, per implementation and version: "
            "accuracy with Wilson's interval for classification, mean absolute error and R² for regression. "
            "Computed over the newest `PLASTICITY_FEEDBACK_WINDOW_ROWS` reports of predictions made in the last "
            "`PLASTICITY_FEEDBACK_WINDOW_S` seconds; switching and the training trigger use a live score once "
            "it rests on `PLASTICITY_FEEDBACK_MIN_COUNT` reports (`enough`)."
        ),
        tags=["serving"],
        responses={200: FeedbackLiveSerializer},
    )
    def get(self, request: Request, slug: str) -> Response:
        task = get_object_or_404(Task, slug=slug)
        return Response(FeedbackLiveSerializer({"task": task.slug, **feedback_live(task=task)}).data)

    @extend_schema(
        operation_id="task_feedback_report",
        summary="Report true answers",
        description=(
            "Records the true label or value of rows of earlier predictions, each named by the answer's "
            "`prediction_id` and a row index. Ids are verified (signed by this service), must belong to this task "
            "and be at most `PLASTICITY_FEEDBACK_MAX_AGE_S` old; each (id, row) counts once, however often it is "
            "reported, so a request may be retried. Any bad item is a 400 naming it and nothing is recorded. At "
            "most `PLASTICITY_FEEDBACK_MAX_ROWS` rows per request. Serving is re-evaluated afterwards: a neural "
            "version whose live score is conclusively below the floor is switched away from at once."
        ),
        tags=["serving"],
        request=FeedbackRequestSerializer,
        responses={200: FeedbackResponseSerializer, 400: _INVALID_FEEDBACK},
        examples=_FEEDBACK_EXAMPLES,
    )
    def post(self, request: Request, slug: str) -> Response:
        task = get_object_or_404(Task, slug=slug)
        data = request.data
        try:
            reports = feedback_reports(task=task, items=data.get("items") if isinstance(data, dict) else None)
        except FeedbackInvalid as exc:
            return Response(error_body("invalid_feedback", exc.message, {"errors": exc.errors}),
                            status=status.HTTP_400_BAD_REQUEST)
        result = feedback_record(task=task, reports=reports, user=request.user)
        switch = serving_reevaluate_after_feedback(task=task) if result.recorded else None
        return Response(FeedbackResponseSerializer({
            "task": task.slug, "received": result.received, "recorded": result.recorded,
            "duplicates": result.duplicates, "switch": switch,
        }).data)


# ------------------------------------------------------------------------------ serving state


def _route_payload(slug: str) -> dict | None:
    try:
        route = serving_router().route(slug)
    except (TaskNotFound, ServingUnavailable):
        return None
    version = route.version
    return {"implementation": route.implementation, "version_id": route.version_id,
            "version": version.number if version is not None else None,
            "runtime": version.runtime if version is not None else None, "shadow_fraction": route.shadow_fraction}


def _serving_payload(task: Task) -> dict:
    state = serving_state_get(task=task)
    return {
        "task": task.slug,
        "state": state,
        "route": _route_payload(task.slug),
        "comparison": serving_comparison(task=task),
    }


class TaskServingView(_ServingAPIView):
    """The serving state of a task (anyone signed in) and the operator's override."""

    permission_classes = [IsOperatorOrReadOnly]
    throttle_classes = [UserRateThrottle]
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="task_serving_retrieve",
        summary="Serving state and neural-vs-algorithmic comparison",
        tags=["serving"],
        responses={200: ServingSerializer},
    )
    def get(self, request: Request, slug: str) -> Response:
        task = get_object_or_404(Task, slug=slug)
        return Response(ServingSerializer(_serving_payload(task)).data)

    @extend_schema(
        operation_id="task_serving_force",
        summary="Force an implementation (operators)",
        description=(
            "Switches serving at once (reason `operator`) and pins it: automatic decisions leave a pinned task "
            "alone. `auto` removes the pin and re-evaluates from the latest measurements."
        ),
        tags=["serving"],
        request=ServingForceSerializer,
        responses={200: ServingSerializer},
        examples=[OpenApiExample("Force the algorithm", request_only=True,
                                 value={"implementation": "algorithmic", "detail": "investigating drift"}),
                  OpenApiExample("Back to automatic", request_only=True, value={"implementation": "auto"})],
    )
    def post(self, request: Request, slug: str) -> Response:
        task = get_object_or_404(Task, slug=slug)
        serializer = ServingForceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        serving_force(task=task, implementation=data["implementation"], version_id=data.get("version_id"),
                      actor=request.user.get_username(), detail=data.get("detail") or "")
        return Response(ServingSerializer(_serving_payload(task)).data)


class ServingSwitchFilter(django_filters.FilterSet):
    task = django_filters.CharFilter(field_name="task__slug", help_text="Task slug.")
    reason = django_filters.ChoiceFilter(choices=SwitchReason.choices)

    class Meta:
        model = ServingSwitch
        fields = ["task", "reason"]


@extend_schema(summary="Serving switches, newest first", tags=["serving"])
class ServingSwitchListView(generics.ListAPIView):
    """Every switch of a serving implementation or version, with its reason and evidence."""

    serializer_class = ServingSwitchSerializer
    pagination_class = Pagination
    filterset_class = ServingSwitchFilter
    throttle_classes = [UserRateThrottle]

    def get_queryset(self):
        return serving_switch_list()

    def get_exception_handler(self):
        return api_exception_handler


class PingView(_ServingAPIView):
    """The trivial authenticated JSON endpoint (a baseline for the serving benchmark)."""

    permission_classes = [IsAuthenticated]
    throttle_classes = [UserRateThrottle]

    @extend_schema(operation_id="ping", summary="Ping", tags=["serving"],
                   responses={200: OpenApiResponse(description="`{\"status\": \"ok\"}`")})
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})
