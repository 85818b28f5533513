from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from improvement.choices import IN_FLIGHT, RunStatus
from improvement.formatting import signed_percent
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.runs.lifecycle import run_cancel
from improvement.services import config_update


@admin.register(ImprovementConfig)
class ImprovementConfigAdmin(admin.ModelAdmin):
    fieldsets = (
        ("Loop", {"fields": ("enabled", "auto_start", "improvement_interval", "max_concurrent_improvements",
                             "improvement_history_size", "rejection_cooldown_s", "search_patience_trials",
                             "run_time_budget_s")}),
        ("Promotion", {"fields": ("performance_threshold", "promotion_alpha", "model_backup_enabled",
                                  "forgetting_tolerance", "rehearsal_min_new_gate_rows")}),
        ("Signals", {"fields": ("hormone_driven", "genetic_enhanced", "cross_model_distillation", "neural_hormones",
                                "predictor_min_history")}),
        ("Triggers", {"fields": ("training_score_below", "architecture_score_low", "architecture_score_high",
                                 "distillation_teacher_min_score", "optimization_latency_ms",
                                 "optimization_score_tolerance")}),
        ("Input drift", {"fields": ("drift_psi_threshold", "drift_min_rows", "drift_window_rows",
                                    "drift_cooldown_s")}),
    )
    list_display = ("__str__", "enabled", "improvement_interval", "max_concurrent_improvements",
                    "performance_threshold", "hormone_driven", "updated_at")

    def has_add_permission(self, request) -> bool:
        return not ImprovementConfig.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj: ImprovementConfig, form, change: bool) -> None:
        """Save through ``config_update``, the one service for configuration edits (it announces them)."""
        names = list(form.changed_data) or [f for f in form.cleaned_data if hasattr(obj, f)]
        try:
            saved = config_update(**{name: getattr(obj, name) for name in names})
        except ValidationError as exc:  # the form validated already; a race with another edit lands here
            self.message_user(request, f"not saved: {exc}", level=messages.ERROR)
            return
        obj.pk, obj.updated_at = saved.pk, saved.updated_at


@admin.register(ImprovementRun)
class ImprovementRunAdmin(admin.ModelAdmin):
    list_display = ("id", "model", "strategy", "status", "origin", "progress_display", "gain_display", "created_at",
                    "finished_at")
    list_filter = ("status", "strategy", "origin", "model__task")
    search_fields = ("model__name", "model__task__slug", "trigger_reason", "decision", "error")
    list_select_related = ("model__task",)
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in ImprovementRun._meta.fields]
    actions = ["cancel_selected"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="progress", ordering="progress")
    def progress_display(self, obj: ImprovementRun) -> str:
        return f"{obj.progress:.0%}"

    @admin.display(description="gain", ordering="gain")
    def gain_display(self, obj: ImprovementRun) -> str:
        return signed_percent(obj.gain)

    @admin.action(description="Cancel selected runs")
    def cancel_selected(self, request, queryset) -> None:
        """Each run through ``run_cancel``, the service the panel's Cancel button calls: a queued run is
        cancelled at once, a running one is asked to stop, one that has ended is skipped."""
        cancelled = stopping = skipped = 0
        for run in queryset.order_by("pk"):
            if run.status not in IN_FLIGHT:
                skipped += 1
                continue
            run = run_cancel(run=run)
            if run.status == RunStatus.CANCELLED:
                cancelled += 1
            elif run.status == RunStatus.RUNNING and run.cancel_requested:
                stopping += 1
            else:  # it ended on its own meanwhile
                skipped += 1
        self.message_user(request, f"{cancelled} cancelled, {stopping} running asked to stop, "
                                   f"{skipped} skipped (already ended)")
