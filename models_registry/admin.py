from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count

from models_registry.data.errors import ImplementationError
from models_registry.errors import RegistryError
from models_registry.evaluation import task_metric_change
from models_registry.loading import load_implementation
from models_registry.models import (
    DatasetVersion,
    ModelVersion,
    NeuralModel,
    PerformanceSample,
    Task,
    TaskCreationJob,
)
from models_registry.selectors import version_active
from models_registry.services import version_activate, version_rollback
from models_registry.serving import admin as _serving_admin  # noqa: F401  (registers the serving admin)


def _digits(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "output_kind", "metric", "source", "n_samples", "n_train", "n_val", "n_gate",
                    "n_test",
                    "latency_budget_ms", "model_count", "created_at")
    list_filter = ("output_kind", "source")
    search_fields = ("slug", "name", "description", "algorithm_path")
    readonly_fields = ("output_kind", "source", "builtin_key", "input_shape", "n_outputs", "class_labels",
                       "feature_names", "target_name", "dataset_file", "dataset_sha256", "n_samples", "n_train",
                       "n_val", "n_gate", "n_test", "split_seed", "sampler_spec", "warnings", "algorithm_evaluation", "algorithm_params",
                       "algorithm_evaluation_at", "algorithm_evaluation_attempts", "created_at")

    def get_readonly_fields(self, request, obj=None):
        # The algorithm path names code the server runs: only superusers may change it.
        if request.user.is_superuser:
            return self.readonly_fields
        return (*self.readonly_fields, "algorithm_path")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)

        def clean_algorithm_path(form_self):
            path = form_self.cleaned_data.get("algorithm_path", "")
            if path:
                try:
                    load_implementation(path)  # the allowlist first: nothing outside it is imported
                except ImplementationError as exc:
                    raise ValidationError(str(exc)) from None
            return path

        form.clean_algorithm_path = clean_algorithm_path  # type: ignore[attr-defined]  # a per-request form class
        return form

    def save_model(self, request, obj: Task, form, change: bool) -> None:
        """A new metric goes through ``task_metric_change``: every version is re-measured with it."""
        metric = obj.metric
        if change and "metric" in form.changed_data:
            obj.metric = Task.objects.values_list("metric", flat=True).get(pk=obj.pk)
        super().save_model(request, obj, form, change)
        if change and "metric" in form.changed_data:
            try:
                task_metric_change(task=obj, metric=metric)
                self.message_user(request, f"{obj}: every version re-measured with {metric}")
            except RegistryError as exc:
                self.message_user(request, f"{obj}: {exc}", level=messages.ERROR)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_models=Count("neural_models"))

    @admin.display(ordering="_models", description="models")
    def model_count(self, obj: Task) -> int:
        return obj._models  # type: ignore[attr-defined]  # django-stubs: an .annotate() field is not on the model type

    def has_add_permission(self, request) -> bool:
        # Tasks are created from data (upload, generator or built-in) through the API/panel,
        # which materialises and splits the dataset; a bare admin form cannot.
        return False


class VersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ("number", "runtime", "is_active", "score_display", "latency_p95_display", "n_parameters", "parent",
              "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-number",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="gate score")
    def score_display(self, obj: ModelVersion) -> str:
        return _digits(obj.score, 4)

    @admin.display(description="p95 ms, batch 1")
    def latency_p95_display(self, obj: ModelVersion) -> str:
        return _digits(obj.latency_p95_ms, 3)


@admin.register(NeuralModel)
class NeuralModelAdmin(admin.ModelAdmin):
    list_display = ("__str__", "task", "active_number", "active_score", "version_count", "created_at")
    list_filter = ("task",)
    search_fields = ("name", "task__slug", "description")
    inlines = [VersionInline]
    actions = ["rollback_selected"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("task").annotate(_versions=Count("versions"))

    @admin.display(description="versions", ordering="_versions")
    def version_count(self, obj: NeuralModel) -> int:
        return obj._versions  # type: ignore[attr-defined]  # django-stubs: an .annotate() field is not on the model type

    @admin.display(description="active")
    def active_number(self, obj: NeuralModel) -> str:
        active = version_active(model=obj)
        return f"v{active.number}" if active else "—"

    @admin.display(description="score")
    def active_score(self, obj: NeuralModel) -> str:
        active = version_active(model=obj)
        return f"{active.score:.4f}" if active and active.score is not None else "—"

    @admin.action(description="Roll back to the previous version")
    def rollback_selected(self, request, queryset) -> None:
        for model in queryset:
            try:
                version = version_rollback(model=model, reason=f"admin rollback by {request.user}")
                self.message_user(request, f"{model}: v{version.number} is active")
            except RegistryError as exc:
                self.message_user(request, f"{model}: {exc}", level=messages.ERROR)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "runtime", "is_active", "score_display", "metric", "latency_p95_display",
                    "latency_p95_batch_display", "n_parameters", "size_bytes", "parent", "created_at")
    list_filter = ("is_active", "runtime", "model__task")
    search_fields = ("model__name", "model__task__slug", "note")
    list_select_related = ("model__task", "parent")
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    actions = ["activate_selected"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # immutable; activation is an action

    # Scores to 4 decimals and latencies to 3 (a float column would show all 16 digits).
    @admin.display(description="gate score", ordering="score")
    def score_display(self, obj: ModelVersion) -> str:
        return _digits(obj.score, 4)

    @admin.display(description="p95 ms, batch 1", ordering="latency_p95_ms")
    def latency_p95_display(self, obj: ModelVersion) -> str:
        return _digits(obj.latency_p95_ms, 3)

    @admin.display(description="p95 ms, batch 256", ordering="latency_p95_ms_batch")
    def latency_p95_batch_display(self, obj: ModelVersion) -> str:
        return _digits(obj.latency_p95_ms_batch, 3)

    @admin.action(description="Activate this version (serve it)")
    def activate_selected(self, request, queryset) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", level=messages.ERROR)
            return
        version = queryset.get()
        version_activate(version=version, reason=f"admin activation by {request.user}")
        self.message_user(request, f"{version} is active")


@admin.register(PerformanceSample)
class PerformanceSampleAdmin(admin.ModelAdmin):
    list_display = ("created_at", "task", "implementation", "version", "source", "score_display", "latency_p50_display",
                    "latency_p95_display", "latency_p99_display", "n_requests", "n_errors")
    list_filter = ("implementation", "source", "task")
    list_select_related = ("task", "version__model")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in PerformanceSample._meta.fields]

    @admin.display(description="score", ordering="score")
    def score_display(self, obj: PerformanceSample) -> str:
        return _digits(obj.score, 4)

    @admin.display(description="p50 ms", ordering="latency_p50_ms")
    def latency_p50_display(self, obj: PerformanceSample) -> str:
        return _digits(obj.latency_p50_ms, 3)

    @admin.display(description="p95 ms", ordering="latency_p95_ms")
    def latency_p95_display(self, obj: PerformanceSample) -> str:
        return _digits(obj.latency_p95_ms, 3)

    @admin.display(description="p99 ms", ordering="latency_p99_ms")
    def latency_p99_display(self, obj: PerformanceSample) -> str:
        return _digits(obj.latency_p99_ms, 3)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(TaskCreationJob)
class TaskCreationJobAdmin(admin.ModelAdmin):
    """Read only: jobs are made by ``POST /api/tasks`` and moved by their worker (``models_registry.task_jobs``)."""

    list_display = ("id", "slug", "status", "progress", "message", "task", "created_by", "attempts", "created_at",
                    "finished_at")
    list_filter = ("status",)
    search_fields = ("slug", "name", "algorithm_path")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    """Read only: versions are made by task creation and appends (``models_registry.dataset_versions``)."""

    list_display = ("__str__", "source", "rows_added", "rows_total", "n_train", "n_val", "n_gate", "n_test",
                    "created_by", "created_at")
    list_filter = ("source", "task")
    search_fields = ("task__slug", "idempotency_key", "content_sha256")
    list_select_related = ("task", "created_by")
    readonly_fields = [f.name for f in DatasetVersion._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
