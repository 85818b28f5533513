"""REST views of the registry: tasks, models, versions. Thin: validate, call one service, serialize.

This package is the top layer (DESIGN.md: "DRF api/"), so model creation may call the
improvement app's seeding service to train the initial version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import django_filters
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Prefetch
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import BasePagination
from rest_framework.parsers import BaseParser, JSONParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from improvement.services import task_job_queue, task_upload_create
from models_registry.api.serializers import (
    ActivateSerializer,
    DatasetAppendResultSerializer,
    DatasetAppendSerializer,
    DatasetVersionSerializer,
    ModelVersionSerializer,
    NeuralModelCreateSerializer,
    NeuralModelSerializer,
    RollbackSerializer,
    TaskCreationJobSerializer,
    TaskGeneratorSerializer,
    TaskSerializer,
    TaskUploadSerializer,
)
from models_registry.choices import DataSource, OutputKind, Runtime
from models_registry.dataset_versions import AppendConflict, task_rows_append
from models_registry.errors import RegistryError
from models_registry.implementations import version_module
from models_registry.models import ModelVersion, NeuralModel, Task, TaskCreationJob
from models_registry.nn.runtimes import export_onnx
from models_registry.selectors import dataset_versions
from models_registry.services import (
    model_create,
    version_activate,
    version_rollback,
)
from models_registry.training import version_seed
from models_registry.weights import blob_load, sha256_bytes
from project.api.errors import Conflict
from project.api.fields import IdFilter, id_path_parameter
from project.api.pagination import Pagination
from project.api.permissions import IsOperatorOrReadOnly
from project.api.schema import EXTRA_ERRORS
from project.api.throttles import UploadRateThrottle, UserRateThrottle
from project.api.uploads import UploadLimitMixin, upload_limits

if TYPE_CHECKING:
    from rest_framework.permissions import _PermissionClass

# ---------------------------------------------------------------------------------- filters


class TaskFilter(django_filters.FilterSet):
    source = django_filters.ChoiceFilter(choices=DataSource.choices)
    output_kind = django_filters.ChoiceFilter(choices=OutputKind.choices)

    class Meta:
        model = Task
        fields = ["source", "output_kind"]


class NeuralModelFilter(django_filters.FilterSet):
    task = django_filters.CharFilter(field_name="task__slug", help_text="Task slug.")

    class Meta:
        model = NeuralModel
        fields = ["task"]


class ModelVersionFilter(django_filters.FilterSet):
    model = IdFilter(field_name="model_id", help_text="Model id.")
    task = django_filters.CharFilter(field_name="model__task__slug", help_text="Task slug.")
    runtime = django_filters.ChoiceFilter(choices=Runtime.choices)
    is_active = django_filters.BooleanFilter()

    class Meta:
        model = ModelVersion
        fields = ["model", "task", "runtime", "is_active"]


class _Base:
    permission_classes: Sequence[_PermissionClass] = [IsOperatorOrReadOnly]
    pagination_class: type[BasePagination] | None = Pagination
    parser_classes: Sequence[type[BaseParser]] = [JSONParser]


# ------------------------------------------------------------------------------------ tasks

_CSV_EXAMPLE = OpenApiExample(
    "CSV upload", request_only=True, media_type="multipart/form-data",
    value={"name": "Iris", "file": "(iris.csv: sepal_length,sepal_width,petal_length,petal_width,species)",
           "target_column": "species"},
)
_GENERATOR_EXAMPLE = OpenApiExample(
    "Generator task", request_only=True, media_type="application/json",
    value={"name": "Sum of squares", "algorithm_path": "mypackage.functions.sum_of_squares",
           "sampler_spec": {"shape": [3], "distribution": "uniform", "low": -1, "high": 1, "n_samples": 2000}},
)


@extend_schema_view(
    list=extend_schema(summary="List tasks", tags=["tasks"]),
    retrieve=extend_schema(summary="A task", tags=["tasks"]),
)
class TaskViewSet(UploadLimitMixin, _Base, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                  viewsets.GenericViewSet):
    """Tasks: an operation with an input/output contract, its data and fixed splits."""

    queryset = Task.objects.all().order_by("slug")
    serializer_class = TaskSerializer
    filterset_class = TaskFilter
    lookup_field = "slug"
    lookup_value_regex = "[^/]+"
    parser_classes = [MultiPartParser, JSONParser]

    #: Actions that read an uploaded dataset: they spend the upload allowance.
    UPLOAD_ACTIONS = ("create", "rows")

    def get_throttles(self):
        if self.action in self.UPLOAD_ACTIONS:
            return [UserRateThrottle(), UploadRateThrottle()]
        return super().get_throttles()

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        # A refused upload (malformed file, bad field, too large) does not count against the
        # upload allowance: a few mistakes must not lock an operator out for an hour.
        if self.action in self.UPLOAD_ACTIONS and 400 <= response.status_code < 500 and response.status_code != 429:
            UploadRateThrottle().refund(self.request, self)
        return response

    @extend_schema(
        summary="Create a task from a dataset upload (multipart) or a generator (JSON)",
        tags=["tasks"],
        description=(
            "**multipart/form-data**: a CSV (a header row, then one example per row; numeric inputs; the "
            "target is `target_column` or the last column) or an NPZ (arrays `X` and `y`). Files above "
            "the upload limit are refused with 413 before they are read whole; rows and columns beyond "
            "the limits, non-UTF-8 text, ragged rows, NaN or a single class get a 400 that says where. "
            "The task is created in the request — **201** with the task, usable at once — and its first "
            "model is queued for training. Its algorithm is fitted on the training "
            "split and scored on the gate and sealed test splits by a worker, not in the request: "
            "`algorithm_evaluation.status` is `pending` (or `running`) until it is `done`, with "
            "`algorithm_evaluation.gate_score`, or `failed`, with a warning in `warnings` saying why (the "
            "task stays usable; serving then has no algorithmic score to compare neural versions with). "
            "Poll `GET /api/tasks/<slug>`.\n\n"
            "**application/json**: a generator task — `sampler_spec` draws inputs and the algorithm at "
            "`algorithm_path` labels them. Labelling thousands of samples takes a while, so a worker does "
            "it: the request checks what is cheap (the fields, the spec and the numbers it would produce, "
            "the algorithm path against the allowlist — imported, not called —, a free slug) and answers "
            "**202 Accepted** with a task creation job and its URL in `Location` "
            "(`GET /api/task-jobs/<id>`). The job goes `pending` → `running` (its `progress` goes from 0 "
            "to 1 as the samples are labelled) → `done`, with `task` the new task's slug and its first "
            "model queued for training, or `failed`, with `error` saying why (the algorithm raised or "
            "gave non-finite labels, the slug was taken meanwhile, ...) and no task left behind. The "
            "train/validation/gate/test splits are fixed at creation.\n\n"
            "`algorithm_path` names code the server runs: only superusers may set it (403 otherwise), and "
            "only inside the modules of `PLASTICITY_ALGORITHM_MODULES` (400 otherwise, before anything "
            "is imported)."
        ),
        request={"multipart/form-data": TaskUploadSerializer, "application/json": TaskGeneratorSerializer},
        responses={
            201: OpenApiResponse(TaskSerializer, description="An upload: the task, created; its algorithm's "
                                                              "evaluation is queued for a worker."),
            202: OpenApiResponse(TaskCreationJobSerializer,
                                 description="A generator: the creation job, queued for a worker."),
        },
        parameters=[OpenApiParameter("Location", str, OpenApiParameter.HEADER, response=[202],
                                     description="The job's URL: /api/task-jobs/<id>")],
        examples=[_CSV_EXAMPLE, _GENERATOR_EXAMPLE],
    )
    def create(self, request: Request) -> Response:
        if not (request.content_type or "").startswith("multipart/"):
            return self._create_from_generator(request)
        serializer = TaskUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data.get("algorithm_path"):
            _superuser_only(request)
        upload = data["file"]
        task = task_upload_create(
            name=data["name"], filename=upload.name or "", content=upload.read(), slug=data.get("slug", ""),
            description=data.get("description", ""), target_column=data.get("target_column") or None,
            output_kind=data.get("output_kind") or None, algorithm_path=data.get("algorithm_path", ""),
            limits=upload_limits(), metric=data.get("metric") or None, seed=data.get("split_seed", 0),
            genome=data.get("genome"),
            created_by=request.user if isinstance(request.user, User) else None,
        )
        return Response(TaskSerializer(task).data, status=status.HTTP_201_CREATED)

    def _create_from_generator(self, request: Request) -> Response:
        serializer = TaskGeneratorSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        _superuser_only(request)  # a generator's labeller is its algorithm
        job = task_job_queue(
            name=data["name"], algorithm_path=data["algorithm_path"], sampler_spec=data["sampler_spec"],
            slug=data.get("slug", ""), description=data.get("description", ""),
            latency_budget_ms=data.get("latency_budget_ms", 200.0), metric=data.get("metric") or None,
            split_seed=data.get("split_seed", 0), genome=data.get("genome"),
            created_by=request.user if isinstance(request.user, User) else None,
            limits=upload_limits(),
        )
        body = TaskCreationJobSerializer(job).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    @extend_schema(
        operation_id="tasks_rows",
        summary="Append rows to the task's dataset",
        tags=["tasks"],
        description=(
            "**multipart/form-data** `file`: a CSV whose header holds the task's column names (the inputs "
            "and the target, by name, in any order, no others) or an NPZ with `X` of the task's input shape "
            "and `y` (optional for reconstruction). Class labels must be the task's: an unknown label is "
            "refused with its row and column. The rows make a new dataset version: they are added after the "
            "existing rows and split in the task's proportions (train/validation/gate/test, stratified by "
            "class, seeded by the task's split seed and the version number); no earlier row changes split, "
            "so the sealed test rows stay sealed, and a new row whose input is already in the dataset goes to "
            "that input's split. **201** with the new version.\n\n"
            "Idempotent per upload: the same file again, or the same `Idempotency-Key` header, answers "
            "**200** with the version it made (`created: false`) and adds nothing; a key that already "
            "appended another file is a **409**. A malformed file is a **400** naming the row and column, "
            "and nothing changes. The upload limits apply per file and to the task's rows in all."
        ),
        request={"multipart/form-data": DatasetAppendSerializer},
        parameters=[OpenApiParameter(
            "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
            description="Any string up to 200 characters; a retried request with the same key adds nothing.")],
        responses={
            201: OpenApiResponse(DatasetAppendResultSerializer, description="The new dataset version."),
            200: OpenApiResponse(DatasetAppendResultSerializer,
                                 description="This file or key had already made this version: nothing added."),
        },
        examples=[OpenApiExample(
            "CSV rows", request_only=True, media_type="multipart/form-data",
            value={"file": "(more-iris.csv: sepal_length,sepal_width,petal_length,petal_width,species)"})],
        extensions={EXTRA_ERRORS: ["409"]},
        filters=False,
    )
    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser], pagination_class=None,
            filterset_class=None)
    def rows(self, request: Request, slug=None) -> Response:
        task = self.get_object()
        serializer = DatasetAppendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        try:
            version, created = task_rows_append(
                task=task, filename=upload.name or "", content=upload.read(),
                idempotency_key=request.headers.get("Idempotency-Key", ""),
                created_by=request.user if isinstance(request.user, User) else None, limits=upload_limits(),
            )
        except AppendConflict as exc:
            raise Conflict(str(exc)) from None
        return Response({**DatasetVersionSerializer(version).data, "created": created},
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        operation_id="tasks_datasets",
        summary="The task's dataset versions",
        tags=["tasks"],
        description="Every version of the task's dataset, newest first: version 1 from the task's creation, "
                    "then one per append (rows added, their row range, the split sizes after it, who and when).",
        responses={200: DatasetVersionSerializer(many=True)},
        filters=False,
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def datasets(self, request: Request, slug=None) -> Response:
        task = self.get_object()
        page = self.paginate_queryset(dataset_versions(task=task))
        return self.get_paginated_response(DatasetVersionSerializer(page, many=True).data)


def _superuser_only(request: Request) -> None:
    """An algorithm path names code the server runs: only superusers may choose one."""
    if not request.user.is_superuser:
        raise exceptions.PermissionDenied(
            "algorithm_path: only superusers may name an algorithm (it is code the server runs); leave it "
            "empty for the classical default, or ask a superuser")


@extend_schema_view(
    retrieve=extend_schema(
        summary="A task creation job", tags=["tasks"], parameters=[id_path_parameter("Job id.")],
        description="The creation of a generator task, as `POST /api/tasks` accepted it (202): `status` "
                    "`pending`, `running` (`progress` 0 to 1, `message` says what it does now), `done` "
                    "(`task` is the new task's slug) or `failed` (`error` says why; no task was left). "
                    "Poll it, or follow the `task_job.progress` live events.",
    ),
)
class TaskCreationJobViewSet(_Base, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Task creation jobs: a generator task's samples are labelled by a worker, not in the request."""

    queryset = TaskCreationJob.objects.select_related("task", "created_by")
    serializer_class = TaskCreationJobSerializer
    pagination_class = None
    lookup_value_regex = "[0-9]{1,18}"  # ids; anything else is the JSON 404 of the catch-all


# ----------------------------------------------------------------------------------- models

_GENOME_EXAMPLE = OpenApiExample(
    "Small MLP", request_only=True,
    value={"task": "iris", "name": "baseline", "description": "first try",
           "genome": {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [8], "activation": "relu",
                      "dropout": 0.0, "norm": "none"}},
)


@extend_schema_view(
    list=extend_schema(summary="List models", tags=["models"]),
    retrieve=extend_schema(summary="A model", tags=["models"], parameters=[id_path_parameter("Model id.")]),
)
class NeuralModelViewSet(_Base, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Models: one lineage of versions for one task, exactly one of them active."""

    queryset = NeuralModel.objects.select_related("task").prefetch_related(
        Prefetch("versions", queryset=ModelVersion.objects.order_by("-number"))
    ).order_by("task__slug", "name")
    serializer_class = NeuralModelSerializer
    filterset_class = NeuralModelFilter
    lookup_value_regex = "[0-9]{1,18}"  # ids; anything else is the JSON 404 of the catch-all

    @extend_schema(
        summary="Create a model and train its initial version",
        tags=["models"],
        description="Registers the model and trains the initial `genome` briefly on the task's training "
                    "split (seconds for small tasks); that version becomes active and the loop improves it.",
        request=NeuralModelCreateSerializer,
        responses={201: NeuralModelSerializer},
        examples=[_GENOME_EXAMPLE],
    )
    def create(self, request: Request) -> Response:
        serializer = NeuralModelCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        model = model_create(task=data["task"], name=data["name"], description=data.get("description", ""))
        try:
            version_seed(model=model, genome=data["genome"])
        except BaseException:
            with transaction.atomic():
                model.delete()  # no model without a version is left behind
            raise
        return Response(NeuralModelSerializer(self.get_queryset().get(pk=model.pk)).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="models_rollback",
        summary="Roll back to an earlier version",
        tags=["models"],
        description="Re-activates `to_version`, or by default the active version's parent (the version "
                    "it was improved from). The rolled-back-from version stays as a backup.",
        request=RollbackSerializer,
        parameters=[id_path_parameter("Model id.")],
        responses={200: ModelVersionSerializer},
        examples=[OpenApiExample("Back to the parent", value={"reason": "live accuracy dropped"},
                                 request_only=True)],
    )
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk=None) -> Response:
        model = self.get_object()
        serializer = RollbackSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        to_id = serializer.validated_data.get("to_version")
        to_version = None
        if to_id is not None:
            to_version = ModelVersion.objects.filter(pk=to_id, model=model).first()
            if to_version is None:
                raise RegistryError(f"to_version: model {model} has no version with id {to_id}")
        version = version_rollback(model=model, to_version=to_version,
                                   reason=serializer.validated_data.get("reason", ""))
        return Response(ModelVersionSerializer(version).data)


# --------------------------------------------------------------------------------- versions


def _download(data: bytes, filename: str, sha256: str) -> HttpResponse:
    response = HttpResponse(data, content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Content-Length"] = str(len(data))
    response["X-Content-SHA256"] = sha256
    return response


_DOWNLOAD_HEADERS = [
    OpenApiParameter("Content-Disposition", str, OpenApiParameter.HEADER, response=[200],
                     description='attachment; filename="<task>-<model>-v<number>.<ext>"'),
    OpenApiParameter("X-Content-SHA256", str, OpenApiParameter.HEADER, response=[200],
                     description="sha256 of the body (hex)"),
]


@extend_schema_view(
    list=extend_schema(summary="List versions (metadata)", tags=["versions"]),
    retrieve=extend_schema(summary="A version (metadata)", tags=["versions"],
                           parameters=[id_path_parameter("Version id.")]),
)
class ModelVersionViewSet(_Base, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Versions: immutable genome + weights + runtime + metrics; filter by `model` or `task`."""

    queryset = ModelVersion.objects.select_related("model__task").prefetch_related("produced_by_runs").order_by(
        "model__task__slug", "model__name", "-number"
    )
    serializer_class = ModelVersionSerializer
    filterset_class = ModelVersionFilter
    lookup_value_regex = "[0-9]{1,18}"  # ids; anything else is the JSON 404 of the catch-all

    def perform_content_negotiation(self, request, force=False):
        if self.action in ("weights", "onnx"):
            # The file itself is a plain HttpResponse whatever the Accept header; errors are JSON.
            return JSONRenderer(), JSONRenderer.media_type
        return super().perform_content_negotiation(request, force)

    def _filename(self, version: ModelVersion, suffix: str) -> str:
        return f"{version.model.task.slug}-{version.model.name}-v{version.number}{suffix}"

    @extend_schema(
        operation_id="versions_weights",
        summary="Download the weights (safetensors)",
        tags=["versions"],
        description="The version's weights as a safetensors file, verified against the recorded sha256 "
                    "before a byte is sent. Rebuild the module with the version's `genome`.",
        responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY,
                                                                      description="safetensors file")},
        parameters=[id_path_parameter("Version id."), *_DOWNLOAD_HEADERS],
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def weights(self, request: Request, pk=None) -> HttpResponse:
        version = self.get_object()
        data = blob_load(version.weights_file, sha256=version.weights_sha256)
        return _download(data, self._filename(version, ".safetensors"), version.weights_sha256)

    @extend_schema(
        operation_id="versions_onnx",
        summary="Download the model as ONNX",
        tags=["versions"],
        description="For ONNX runtimes, the stored (verified) artifact; otherwise the fp32 module exported "
                    "from the verified weights. Input `input` (batch, *input_shape), output `output`.",
        responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY,
                                                                      description="ONNX model")},
        parameters=[id_path_parameter("Version id."), *_DOWNLOAD_HEADERS],
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def onnx(self, request: Request, pk=None) -> HttpResponse:
        version = self.get_object()
        if version.runtime in (Runtime.ONNX_FP32, Runtime.ONNX_INT8) and version.artifact_file:
            data = blob_load(version.artifact_file, sha256=version.artifact_sha256)
        else:
            data = export_onnx(version_module(version), version.genome["input_shape"])
        return _download(data, self._filename(version, ".onnx"), sha256_bytes(data))

    @extend_schema(
        operation_id="versions_activate",
        summary="Activate this version",
        tags=["versions"],
        description="Makes this version the model's only active one (the previous one stays as a backup).",
        request=ActivateSerializer,
        parameters=[id_path_parameter("Version id.")],
        responses={200: ModelVersionSerializer},
        examples=[OpenApiExample("Activate", value={"reason": "operator choice"}, request_only=True)],
        filters=False,
    )
    @action(detail=True, methods=["post"], pagination_class=None, filterset_class=None)
    def activate(self, request: Request, pk=None) -> Response:
        version = self.get_object()
        serializer = ActivateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reason = serializer.validated_data.get("reason") or f"activated by {request.user.get_username()}"
        version_activate(version=version, reason=reason)
        version.refresh_from_db()
        return Response(ModelVersionSerializer(version).data)

