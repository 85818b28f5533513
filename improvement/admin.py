from django.contrib import admin

from improvement.models import ImprovementConfig, ImprovementRun


@admin.register(ImprovementConfig)
class ImprovementConfigAdmin(admin.ModelAdmin):
    fieldsets = (
        ("Loop", {"fields": ("enabled", "auto_start", "improvement_interval", "max_concurrent_improvements",
                             "improvement_history_size", "rejection_cooldown_s", "run_time_budget_s")}),
        ("Promotion", {"fields": ("performance_threshold", "model_backup_enabled")}),
        ("Signals", {"fields": ("hormone_driven", "genetic_enhanced", "cross_model_distillation", "neural_hormones",
                                "predictor_min_history")}),
        ("Triggers", {"fields": ("training_score_below", "architecture_score_low", "architecture_score_high",
                                 "distillation_teacher_min_score", "optimization_latency_ms",
                                 "optimization_score_tolerance")}),
    )
    list_display = ("__str__", "enabled", "improvement_interval", "max_concurrent_improvements",
                    "performance_threshold", "hormone_driven", "updated_at")

    def has_add_permission(self, request) -> bool:
        return not ImprovementConfig.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ImprovementRun)
class ImprovementRunAdmin(admin.ModelAdmin):
    list_display = ("id", "model", "strategy", "status", "origin", "progress", "gain", "created_at", "finished_at")
    list_filter = ("status", "strategy", "origin", "model__task")
    search_fields = ("model__name", "model__task__slug", "trigger_reason", "decision", "error")
    list_select_related = ("model__task",)
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in ImprovementRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
