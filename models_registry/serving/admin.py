"""Admin for serving: tune a task's serving (shadow fraction, tolerance, hysteresis, dwell), read switches,
feedback and input drift alarms.

Not auto-discovered (Django looks at ``models_registry.admin`` only): that module imports
this one. The implementation itself changes only through ``serving_switch`` — here, through
the two actions — so every change is recorded with its reason.
"""

from __future__ import annotations

from django.contrib import admin, messages

from models_registry.errors import RegistryError
from models_registry.serving.choices import SwitchReason
from models_registry.serving.models import Feedback, InputDrift, ServingState, ServingSwitch
from models_registry.serving.switching import (
    ALGORITHMIC,
    serving_pin_clear,
    serving_reevaluate,
    serving_switch,
)


@admin.register(ServingState)
class ServingStateAdmin(admin.ModelAdmin):
    list_display = ("task", "implementation", "version", "pinned", "reason", "since", "shadow_fraction",
                    "tolerance", "hysteresis", "min_dwell_s", "updated_at")
    list_filter = ("implementation", "pinned", "reason")
    search_fields = ("task__slug",)
    readonly_fields = ("task", "implementation", "version", "since", "reason", "detail", "evidence", "updated_at")
    fields = ("task", "implementation", "version", "pinned", "since", "reason", "detail", "evidence",
              "shadow_fraction", "tolerance", "hysteresis", "min_dwell_s", "updated_at")
    actions = ["reevaluate", "serve_algorithm"]

    def has_add_permission(self, request) -> bool:
        return False  # created by the first serving decision of a task

    @admin.action(description="Re-evaluate serving from the latest measurements (removes the pin)")
    def reevaluate(self, request, queryset) -> None:
        for state in queryset.select_related("task"):
            serving_pin_clear(task=state.task)
            result = serving_reevaluate(task=state.task)
            self.message_user(request, f"{state.task.slug}: {result.decision.implementation} "
                                       f"({result.decision.reason}) {result.decision.detail}")

    @admin.action(description="Serve the algorithm (operator, pinned)")
    def serve_algorithm(self, request, queryset) -> None:
        for state in queryset.select_related("task"):
            try:
                serving_switch(task=state.task, implementation=ALGORITHMIC, reason=SwitchReason.OPERATOR,
                               detail=f"forced in the admin by {request.user.get_username()}",
                               actor=request.user.get_username(), pinned=True)
            except RegistryError as exc:
                self.message_user(request, str(exc), level=messages.ERROR)


@admin.register(ServingSwitch)
class ServingSwitchAdmin(admin.ModelAdmin):
    list_display = ("created_at", "task", "from_implementation", "to_implementation", "from_version", "to_version",
                    "reason", "actor")
    list_filter = ("reason", "to_implementation")
    search_fields = ("task__slug", "detail", "actor")
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # the history is never rewritten


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    """Reported truths, read-only: recorded by the feedback endpoint, each (prediction, row) once."""

    list_display = ("predicted_at", "task", "implementation", "version", "row", "predicted", "truth", "correct",
                    "abs_error", "reported_by", "created_at")
    list_filter = ("implementation", "correct", "task")
    search_fields = ("task__slug", "prediction")
    date_hierarchy = "predicted_at"
    list_select_related = ("task", "version__model", "reported_by")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(InputDrift)
class InputDriftAdmin(admin.ModelAdmin):
    """Input drift alarms, read-only: recorded by the scheduler's drift check with their evidence."""

    list_display = ("created_at", "task", "psi_max", "rows")
    list_filter = ("task",)
    search_fields = ("task__slug",)
    date_hierarchy = "created_at"
    list_select_related = ("task",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
