"""The control panel's pages and controls. Thin: check access, validate, call one service, render.

Every page needs a login. Controls (POST) need an operator (``is_staff``): templates hide
them from viewers, and ``operator_required`` refuses a forged POST with 403. Every POST
carries Django's CSRF token. A control answers JSON when the page's script sent it
(``Accept: application/json``) and redirects back otherwise, so forms work without script.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from events.publisher import latest_event_id
from improvement.choices import RunOrigin
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.runs.lifecycle import run_cancel, run_create
from improvement.scheduler.loop import cycle_force, loop_start, loop_stop
from models_registry.data.errors import DatasetError
from models_registry.dataset_versions import task_rows_append
from models_registry.errors import RegistryError
from models_registry.models import ModelVersion, NeuralModel, Task
from models_registry.selectors import version_active
from models_registry.services import version_activate, version_rollback
from project.api.uploads import upload_limits
from project.panel import selectors
from project.panel.forms import ConfigForm, DatasetAppendForm, LoopForm, RunNowForm, VersionChoiceForm
from project.panel.selectors_task import task_page


def operator_required(view: Callable) -> Callable:
    """Logged in *and* staff; anyone else gets 403 (a viewer's forged POST included)."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("operators only")
        return view(request, *args, **kwargs)

    return wrapped


def page(request: HttpRequest, template: str, name: str, build: Callable[[], dict]) -> HttpResponse:
    """Render a page with the id of the newest live event *read before the page's data*.

    The browser's WebSocket asks for everything after that id, so an event committed while
    the page was being built is replayed rather than lost (and applying it twice is harmless).
    """
    last_event_id = latest_event_id()
    context = build()
    context.update({"page": name, "last_event_id": last_event_id})
    return render(request, template, context)


def wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def control_done(request: HttpRequest, *, fallback: str, message: str, data: dict | None = None,
          status: int = 200) -> HttpResponse:
    """Answer a control: JSON for the page's script, else a message and a redirect back."""
    if wants_json(request):
        return JsonResponse({"ok": status < 400, "message": message, **(data or {})}, status=status)
    (messages.success if status < 400 else messages.error)(request, message)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = fallback
    return redirect(target)


# --------------------------------------------------------------------------------- pages


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    return page(request, "panel/overview.html", "overview", selectors.overview_page)


@login_required
@require_GET
def tasks(request: HttpRequest) -> HttpResponse:
    return page(request, "panel/tasks.html", "tasks", selectors.tasks_page)


@login_required
@require_GET
def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(NeuralModel.objects.select_related("task"), pk=pk)
    return page(request, "panel/model.html", "model", lambda: selectors.model_page(model))


@login_required
@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(ImprovementRun.objects.select_related("model__task", "requested_by"), pk=pk)
    return page(request, "panel/run.html", "run", lambda: selectors.run_page(run))


@login_required
@require_GET
def hormones(request: HttpRequest) -> HttpResponse:
    try:
        hours = int(request.GET["hours"])
    except (KeyError, ValueError):
        hours = 0
    # No (or an unknown) window asked for: the shortest that shows the whole record, at most 24 h.
    hours = hours if hours in selectors.HORMONE_WINDOWS_H else selectors.hormone_default_hours()
    name = request.GET.get("hormone") or None
    return page(request, "panel/hormones.html", "hormones", lambda: selectors.hormones_page(hours=hours, name=name))


@login_required
@require_http_methods(["GET", "POST"])
def config(request: HttpRequest) -> HttpResponse:
    form = ConfigForm(instance=ImprovementConfig.load())
    if request.method == "POST":
        if not request.user.is_staff:
            raise PermissionDenied("operators only")
        form = ConfigForm(request.POST, instance=ImprovementConfig.load())
        if form.is_valid():
            try:
                form.save()
            except ValidationError:
                pass  # the service's field errors are on the form now
            else:
                messages.success(request, "Configuration saved.")
                return redirect("panel:config")
    return page(request, "panel/config.html", "config",
                lambda: {**selectors.config_page(), "form": form, "run_form": RunNowForm()})


# ------------------------------------------------------------------------------ controls


@require_POST
@operator_required
def loop_control(request: HttpRequest) -> HttpResponse:
    form = LoopForm(request.POST)
    if not form.is_valid():
        return control_done(request, fallback=reverse("panel:config"), message="unknown loop action", status=400)
    state = loop_start() if form.cleaned_data["action"] == "start" else loop_stop()
    verb = "started" if state["running"] else "stopped"
    return control_done(request, fallback=reverse("panel:config"), message=f"Loop {verb}.", data={"loop": state})


@require_POST
@operator_required
def cycle_control(request: HttpRequest) -> HttpResponse:
    record = cycle_force()
    return control_done(request, fallback=reverse("panel:config"),
                 message=f"Cycle forced: {record['enqueued']} run(s) enqueued.", data={"cycle": record})


@require_POST
@operator_required
def run_now(request: HttpRequest) -> HttpResponse:
    form = RunNowForm(request.POST)
    if not form.is_valid():
        return control_done(request, fallback=reverse("panel:config"), message=f"Invalid request: {form.errors.as_text()}",
                     status=400)
    run = run_create(model=form.cleaned_data["model"], strategy=form.cleaned_data["strategy"],
                     origin=RunOrigin.OPERATOR, requested_by=request.user,
                     trigger_reason=f"requested by {request.user.get_username()}")
    url = reverse("panel:run", args=[run.pk])
    if wants_json(request):
        return JsonResponse({"ok": True, "message": f"Run #{run.pk} queued.", "run_id": run.pk, "url": url})
    messages.success(request, f"Run #{run.pk} queued.")
    return redirect(url)


@require_POST
@operator_required
def run_cancel_control(request: HttpRequest, pk: int) -> HttpResponse:
    run = run_cancel(run=get_object_or_404(ImprovementRun, pk=pk))
    message = "Run cancelled." if run.status == "cancelled" else (
        "Cancel requested; the worker stops at its next report." if run.cancel_requested
        else f"Run already {run.status}.")
    return control_done(request, fallback=reverse("panel:run", args=[pk]), message=message, data={"status": run.status})


@require_POST
@operator_required
def version_activate_control(request: HttpRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(NeuralModel, pk=pk)
    back = reverse("panel:model", args=[pk])
    form = VersionChoiceForm(request.POST)
    if not form.is_valid():
        return control_done(request, fallback=back, message="Choose a version.", status=400)
    version = ModelVersion.objects.filter(model=model, pk=form.cleaned_data["version"]).first()
    if version is None:
        return control_done(request, fallback=back, message="That version is not one of this model's.", status=400)
    version_activate(version=version, reason=f"activated by {request.user.get_username()} from the panel")
    return control_done(request, fallback=back, message=f"v{version.number} is active.", data={"version": version.number})


@require_POST
@operator_required
def version_rollback_control(request: HttpRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(NeuralModel, pk=pk)
    back = reverse("panel:model", args=[pk])
    active = version_active(model=model)
    try:
        version = version_rollback(
            model=model, reason=f"rollback from v{active.number if active else '?'} by {request.user.get_username()}")
    except RegistryError as exc:
        return control_done(request, fallback=back, message=str(exc), status=400)
    return control_done(request, fallback=back, message=f"Rolled back to v{version.number}.",
                 data={"version": version.number})


@require_POST
@operator_required
def task_rows_append_control(request: HttpRequest, slug: str) -> HttpResponse:
    """Append an uploaded file's rows to a task's dataset (``task_rows_append``); a refusal is shown
    under the file input: in the JSON for the page's script, in the re-rendered page without it."""
    task = get_object_or_404(Task, slug=slug)
    form = DatasetAppendForm(request.POST, request.FILES)
    if not form.is_valid():
        return _append_refused(request, task, "file: choose a .csv or .npz file to append")
    upload = form.cleaned_data["file"]
    try:
        version, created = task_rows_append(task=task, filename=upload.name or "", content=upload.read(),
                                            created_by=request.user if isinstance(request.user, User) else None,
                                            limits=upload_limits())
    except (DatasetError, RegistryError) as exc:
        return _append_refused(request, task, str(exc))
    message = (f"{task.slug}: dataset v{version.number}, {version.rows_added} rows added ({version.rows_total} in all)."
               if created else f"{task.slug}: this file was already appended as dataset v{version.number}; "
                               "nothing added.")
    return control_done(request, fallback=f"{reverse('panel:tasks')}#task-{task.slug}", message=message,
                 data={"version": version.number, "created": created}, status=201 if created else 200)


def _append_refused(request: HttpRequest, task: Task, message: str) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"ok": False, "message": message, "errors": {"file": [message]}}, status=400)
    if request.POST.get("next") == reverse("panel:task", args=[task.slug]):  # sent from the task page
        response = page(request, "panel/task.html", "task", lambda: task_page(task, append_error=message))
        response.status_code = 400
        return response

    return tasks_page_refused(request, task, key="append_error", message=message)


def tasks_page_refused(request: HttpRequest, task: Task, *, key: str, message: str) -> HttpResponse:
    """The tasks page again, 400, with ``message`` under ``key`` on ``task``'s row (a control refused without JS)."""

    def build() -> dict:
        context = selectors.tasks_page()
        for row in context["rows"]:
            if row["task"].pk == task.pk:
                row[key] = message
        return context

    response = page(request, "panel/tasks.html", "tasks", build)
    response.status_code = 400
    return response
