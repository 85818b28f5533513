"""The tasks page's "Serve" control: an operator pins a task's serving or hands it back to the measurements.

Thin: the one override service (``serving_force``) that ``POST /api/tasks/<slug>/serving`` calls
does the work. JSON for the page's script, else a message and a redirect back to the task's row;
a refusal changes nothing and is shown next to the control (400).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_POST

from models_registry.errors import RegistryError
from models_registry.models import Task
from models_registry.serving.models import ServingState
from models_registry.serving.switching import AUTO, serving_force
from project.panel.forms import ServingChoiceForm
from project.panel.views import control_done, operator_required, tasks_page_refused, wants_json


@require_POST
@operator_required
def task_serving_control(request: HttpRequest, slug: str) -> HttpResponse:
    task = get_object_or_404(Task, slug=slug)
    form = ServingChoiceForm(request.POST)
    if not form.is_valid():
        errors = form.non_field_errors() or [f"serve: {error}" for error in form.errors["serve"]]
        return _serving_refused(request, task, str(errors[0]))
    implementation = form.cleaned_data["implementation"]
    try:
        serving_force(task=task, implementation=implementation, version_id=form.cleaned_data["version_id"],
                      actor=request.user.get_username(), detail=f"from the panel by {request.user.get_username()}")
    except RegistryError as exc:
        return _serving_refused(request, task, str(exc))
    state = ServingState.objects.select_related("version__model").filter(task=task).first()
    serving = {"implementation": state.implementation if state else None,
               "version_id": state.version_id if state else None,
               "version": state.version.number if state and state.version else None,
               "pinned": bool(state and state.pinned)}
    return control_done(request, fallback=f"{reverse('panel:tasks')}#task-{task.slug}",
                 message=_served_text(task, state, automatic=implementation == AUTO), data={"serving": serving})


def _served_text(task: Task, state: ServingState | None, *, automatic: bool) -> str:
    if state is None:
        return f"{task.slug}: automatic; nothing serves it yet."
    served = state.implementation + (f" ({state.version.model.name} v{state.version.number})" if state.version else "")
    return f"{task.slug}: automatic again, serving {served}." if automatic else f"{task.slug}: pinned to {served}."


def _serving_refused(request: HttpRequest, task: Task, message: str) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"ok": False, "message": message, "errors": {"serve": [message]}}, status=400)
    return tasks_page_refused(request, task, key="serving_error", message=message)
