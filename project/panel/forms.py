"""Forms of the control panel. They validate input; the services do the work."""

from __future__ import annotations

from typing import cast

from django import forms
from django.core.exceptions import ValidationError

from improvement.models import ImprovementConfig
from improvement.services import config_update
from improvement.strategies.registry import all_strategies
from models_registry.choices import Implementation
from models_registry.models import NeuralModel
from models_registry.serving.switching import AUTO

CONFIG_FIELDS = (
    "enabled", "auto_start", "improvement_interval", "max_concurrent_improvements", "performance_threshold",
    "hormone_driven", "genetic_enhanced", "cross_model_distillation", "model_backup_enabled",
    "improvement_history_size", "promotion_alpha", "training_score_below", "architecture_score_low", "architecture_score_high",
    "distillation_teacher_min_score", "optimization_latency_ms", "optimization_score_tolerance",
    "rejection_cooldown_s", "search_patience_trials", "run_time_budget_s",
    "drift_psi_threshold", "drift_min_rows", "drift_window_rows", "drift_cooldown_s",
    "forgetting_tolerance", "rehearsal_min_new_gate_rows",
)
LOOP_FIELDS = CONFIG_FIELDS[:10]


class ConfigForm(forms.ModelForm):
    """ImprovementConfig's fields with the model's validators; ``save`` goes through ``config_update``."""

    class Meta:
        model = ImprovementConfig
        fields = CONFIG_FIELDS

    def save(self, commit: bool = True) -> ImprovementConfig:
        """Store through the one configuration service; its field errors land on the form."""
        try:
            return config_update(**{name: self.cleaned_data[name] for name in self.Meta.fields})
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for field, errors in exc.error_dict.items():
                    self.add_error(field if field in self.fields else None, errors)
            else:
                self.add_error(None, exc)
            raise

    def loop_fields(self):
        return [self[name] for name in LOOP_FIELDS]

    def trigger_fields(self):
        return [self[name] for name in CONFIG_FIELDS[10:]]


class RunNowForm(forms.Form):
    """Run a chosen strategy on a chosen model now."""

    model = forms.ModelChoiceField(queryset=NeuralModel.objects.none(), empty_label=None)
    strategy = forms.ChoiceField(choices=())

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["model"]).queryset = NeuralModel.objects.select_related("task").order_by("task__slug", "name")
        cast(forms.ChoiceField, self.fields["strategy"]).choices = [(name, name) for name in all_strategies()]


class VersionChoiceForm(forms.Form):
    version = forms.IntegerField(min_value=1)


class LoopForm(forms.Form):
    action = forms.ChoiceField(choices=[("start", "start"), ("stop", "stop")])


class DatasetAppendForm(forms.Form):
    """Rows to append to a task's dataset: a CSV with the task's columns, or an NPZ."""

    file = forms.FileField(help_text="A .csv whose header holds the task's column names, or an .npz with X and y.")


class ServingChoiceForm(forms.Form):
    """The tasks page's "Serve" control: ``auto``, ``algorithmic``, ``neural`` (the task's best active
    version) or ``neural:<version id>``, split into ``implementation`` and ``version_id``."""

    CHOICES = (AUTO, *Implementation.values)

    serve = forms.CharField(max_length=40, required=False)

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        if self.has_error("serve"):
            return cleaned
        value = (cleaned.get("serve") or "").strip()
        implementation, colon, version = value.partition(":")
        if implementation not in self.CHOICES or (colon and implementation != Implementation.NEURAL):
            raise ValidationError(f"serve: expected one of {', '.join(self.CHOICES)} or neural:<version id>, "
                                  f"got {value!r}")
        if colon and not version.isdigit():
            raise ValidationError(f"serve: a version id is a whole number, got {version!r}")
        cleaned["implementation"] = implementation
        cleaned["version_id"] = int(version) if colon else None
        return cleaned
