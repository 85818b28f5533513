"""Reads behind the tasks page's serving control: what an operator may pin a task's serving to."""

from __future__ import annotations

from models_registry.choices import Implementation
from models_registry.models import ModelVersion, Task
from models_registry.serving.models import ServingState
from models_registry.serving.switching import AUTO

NEURAL = Implementation.NEURAL.value
ALGORITHMIC = Implementation.ALGORITHMIC.value


def serving_choice_value(*, implementation: str, version_id: int | None = None) -> str:
    """The control's value for one choice: ``auto``, ``algorithmic`` or ``neural:<version id>``."""
    if implementation == NEURAL and version_id is not None:
        return f"{NEURAL}:{version_id}"
    return implementation


def serving_control(*, task: Task, state: ServingState | None) -> dict:
    """The choices of the task's "Serve" control and the one selected now.

    Automatic first; then each active version of the task's models (the neural implementation
    pinned to that version); then the algorithm, when the task has one. Selected: the pinned
    implementation and version when an operator pinned them, else automatic.
    """
    options = [(AUTO, "auto (the measurements decide)")]
    active = (ModelVersion.objects.filter(model__task=task, is_active=True).select_related("model")
              .order_by("model__name", "number"))
    options += [(serving_choice_value(implementation=NEURAL, version_id=v.pk), f"neural: {v.model.name} v{v.number}")
                for v in active]
    if task.algorithm_path:
        options.append((ALGORITHMIC, "algorithmic"))
    current = AUTO
    if state is not None and state.pinned:
        current = serving_choice_value(implementation=state.implementation, version_id=state.version_id)
    return {"options": options, "current": current}
