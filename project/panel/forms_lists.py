"""The GET forms of the model and run lists: every filter, the search, the sort and the page size.

They only validate the query string. A value that does not validate is dropped (its filter is not
applied) and its error is shown above the list, so a hand-edited or stale link still gives a page.
"""

from __future__ import annotations

from django import forms

from improvement.choices import RunOrigin, RunStatus
from improvement.strategies.registry import strategy_choices

PER_PAGE_DEFAULT = 25
PER_PAGE_MIN = 10
PER_PAGE_MAX = 200
PER_PAGE_CHOICES = (10, 25, 50, 100, 200)

#: How the active version of a model came to be: the first version, or a run's origin.
INITIAL = "initial"
MODEL_ORIGIN_CHOICES = [(INITIAL, "First version (no run)"), *RunOrigin.choices]
IMPROVING, IDLE = "improving", "idle"
MODEL_STATUS_CHOICES = [(IMPROVING, "Improving (a run in flight)"), (IDLE, "Idle")]


def _any(choices) -> list[tuple[str, str]]:
    return [("", "any"), *choices]


def _any_strategy() -> list[tuple[str, str]]:
    return _any(strategy_choices())


class ListForm(forms.Form):
    """What both lists share: the free-text search, a date range, the sort key and the page size."""

    q = forms.CharField(required=False, max_length=200, label="Search")
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))
    sort = forms.CharField(required=False, widget=forms.HiddenInput, label="Sort")

    #: sort key (as in ``?sort=key`` or ``?sort=-key``) → ORM field; nothing else reaches ``order_by``.
    SORTS: dict[str, str] = {}
    DEFAULT_SORT = ""

    def __init__(self, *args, task_choices: list[tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["task"] = forms.ChoiceField(required=False, choices=_any(task_choices), label="Task")
        self.order_fields(["q", "task"])

    def clean_sort(self) -> str:
        value = self.cleaned_data.get("sort") or ""
        if value and value.removeprefix("-") not in self.SORTS:
            raise forms.ValidationError(
                f"Cannot sort by {value!r}; choose one of {', '.join(sorted(self.SORTS))}.")
        return value

    def clean(self) -> dict:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", "The end of the date range is before its start.")
        return data


class RunListForm(ListForm):
    """Filters of ``/runs/``: task, model, strategy, status, origin and the creation date."""

    SORTS = {
        "id": "id", "created": "created_at", "finished": "finished_at", "model": "model__name",
        "task": "model__task__slug", "strategy": "strategy", "origin": "origin", "status": "status", "gain": "gain",
    }
    DEFAULT_SORT = "-created"

    strategy = forms.ChoiceField(required=False, choices=_any_strategy, label="Strategy")
    status = forms.ChoiceField(required=False, choices=_any(RunStatus.choices), label="Status")
    origin = forms.ChoiceField(required=False, choices=_any(RunOrigin.choices), label="Origin")

    def __init__(self, *args, model_choices: list[tuple[int, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"] = forms.TypedChoiceField(
            required=False, coerce=int, empty_value=None, choices=[("", "any"), *model_choices], label="Model")
        self.order_fields(["q", "task", "model", "strategy", "status", "origin", "since", "until"])


class ModelListForm(ListForm):
    """Filters of ``/models/``: task, how the active version was made (strategy, origin), status, its date."""

    SORTS = {
        "model": "name", "task": "task__slug", "version": "active_number", "score": "active_score",
        "test": "active_test_score", "latency": "active_p95_ms", "params": "active_n_parameters",
        "versions": "n_versions", "in_flight": "n_in_flight", "since": "active_created_at",
    }
    DEFAULT_SORT = "task"

    strategy = forms.ChoiceField(required=False, choices=_any_strategy, label="Made by strategy")
    origin = forms.ChoiceField(required=False, choices=_any(MODEL_ORIGIN_CHOICES), label="Origin")
    status = forms.ChoiceField(required=False, choices=_any(MODEL_STATUS_CHOICES), label="Status")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["since"].label, self.fields["until"].label = "Active version from", "to"
        self.order_fields(["q", "task", "strategy", "origin", "status", "since", "until"])
