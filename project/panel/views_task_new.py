"""New task from the browser (``/tasks/new/``), operators only, in two steps that work without script.

1. ``task_new`` POST: the file streams to disk (``StagingUploadHandler``; past the upload limit the
   form says so, and a body declared above it is refused unread: ``middleware.BODY_TOO_LARGE``), is
   checked and previewed (``models_registry.data.preview``), and kept for its user under a token
   (``staged_uploads``); the browser is sent to ``/tasks/new/?upload=<token>``, which shows the first
   rows, the columns and their types, and the choices. The upload allowance (the REST upload's
   throttle) is spent here, once per file, and given back when the file is refused.
2. ``task_new_create`` POST: the choices and the token. The task is created by the REST upload's
   own service (``task_upload_create``: its parser validates, its first model is queued for a
   worker); a refusal is shown next to the field it concerns and creates nothing.

With script, panel.js sends step 1 with fetch and swaps the step 2 card in without a reload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from improvement.services import task_upload_create
from models_registry.data.errors import DatasetError
from models_registry.data.preview import UploadPreview, csv_preview, npz_preview
from models_registry.errors import RegistryError
from project.api.errors import size_text
from project.api.throttles import UploadRateThrottle
from project.api.uploads import upload_limits
from project.middleware import BODY_TOO_LARGE
from project.panel.forms_task_new import TaskChoicesForm, TaskFileForm, metric_groups
from project.panel.staged_uploads import (
    StagedUpload,
    StagedUploadMissing,
    StagingUploadHandler,
    staged_upload_delete,
    staged_upload_get,
    staged_upload_read,
    staged_upload_save,
)
from project.panel.views import operator_required, page

#: Shown when a token finds nothing: unknown, expired, used, or another user's (which is not said).
UPLOAD_GONE = "That upload is no longer available (uploads are kept for an hour, for the user who sent them): " \
              "upload the file again."


def _render(request: HttpRequest, *, status: int = 200, file_errors: Sequence[str] = (),
            staged: StagedUpload | None = None, form: TaskChoicesForm | None = None) -> HttpResponse:
    def build() -> dict:
        return {"file_errors": list(file_errors), "staged": staged, "form": form,
                "max_bytes": settings.PLASTICITY_UPLOAD_MAX_BYTES, "max_size": size_text(settings.PLASTICITY_UPLOAD_MAX_BYTES),
                "metric_groups": metric_groups()}

    response = page(request, "panel/task_new.html", "task-new", build)
    response.status_code = status
    return response


def _file_refused(request: HttpRequest, message: str, *, status: int = 400) -> HttpResponse:
    return _render(request, status=status, file_errors=[message])


def _too_large(size: int | None) -> str:
    got = f"is {size_text(size)}" if size is not None else "is larger than allowed"
    return (f"The file {got}; the limit is {size_text(settings.PLASTICITY_UPLOAD_MAX_BYTES)}. Upload fewer rows "
            "(more can be appended to the task later) or compress the arrays (numpy.savez_compressed).")


@csrf_exempt  # checked by csrf_protect below, once the body may be read (see ``_upload``)
@require_http_methods(["GET", "POST"])
@operator_required
def task_new(request: HttpRequest) -> HttpResponse:
    """Step 1: the form (GET), or the file (POST); ``?upload=<token>`` shows step 2 for a kept file."""
    if request.method == "GET":
        token = request.GET.get("upload", "")
        if not token:
            return _render(request)
        try:
            staged = staged_upload_get(user=request.user, token=token)
        except StagedUploadMissing:
            return _file_refused(request, UPLOAD_GONE, status=404)
        return _render(request, staged=staged, form=_choices_form(staged, None))
    if BODY_TOO_LARGE in request.META:  # declared above the limit: refused before a byte is read
        return _file_refused(request, _too_large(request.META[BODY_TOO_LARGE]), status=413)
    throttle = UploadRateThrottle()
    if not throttle.allow_request(request, None):
        wait = throttle.wait() or 0
        response = _file_refused(
            request, f"Too many uploads: the allowance is {throttle.rate}; try again in {max(1, round(wait / 60))} "
                     "minute(s).", status=429)
        response["Retry-After"] = str(max(1, round(wait)))
        return response
    # Upload handlers may be changed only before the body is read: the CSRF check reads it.
    handler = StagingUploadHandler(request, max_bytes=settings.PLASTICITY_UPLOAD_MAX_BYTES)
    request.upload_handlers = [handler]
    response = _upload(request, handler)
    if 400 <= response.status_code < 500:  # a refused file does not spend the allowance
        throttle.refund(request, None)
    return response


@csrf_protect
def _upload(request: HttpRequest, handler: StagingUploadHandler) -> HttpResponse:
    form = TaskFileForm(request.POST, request.FILES)
    if handler.too_large:
        return _file_refused(request, _too_large(None), status=413)
    if not form.is_valid():
        return _render(request, status=400, file_errors=[str(e) for e in form.errors.get("file", [])])
    upload = form.cleaned_data["file"]
    name = upload.name or ""
    preview_of: Callable[..., UploadPreview] = npz_preview if name.lower().endswith(".npz") else csv_preview
    try:
        upload.seek(0)
        preview = preview_of(upload.read(), limits=upload_limits())
    except DatasetError as exc:
        return _file_refused(request, str(exc))
    staged = staged_upload_save(user=request.user, filename=name, content=upload, preview=preview)
    return redirect(f"{reverse('panel:task-new')}?{urlencode({'upload': staged.token})}")


def _choices_form(staged: StagedUpload, data: dict | None) -> TaskChoicesForm:
    stem = staged.filename.rsplit(".", 1)[0].replace("_", " ").replace("-", " ").strip()
    return TaskChoicesForm(data, preview=staged.preview, initial={"token": staged.token, "name": stem[:120]})


@require_POST
@operator_required
def task_new_create(request: HttpRequest) -> HttpResponse:
    """Step 2: the kept file becomes a task with the chosen target, kind and metric, or the form says why not."""
    try:
        staged = staged_upload_get(user=request.user, token=request.POST.get("token", ""))
    except StagedUploadMissing:
        return _file_refused(request, UPLOAD_GONE)
    form = _choices_form(staged, request.POST)
    if not form.is_valid():
        return _render(request, status=400, staged=staged, form=form)
    data = form.cleaned_data
    try:
        task = task_upload_create(
            name=data["name"], filename=staged.filename, content=staged_upload_read(staged=staged),
            slug=data["slug"], description=data["description"],
            target_column=data.get("target_column") or None, output_kind=data["output_kind"] or None,
            metric=data["metric"] or None, limits=upload_limits(),
            created_by=request.user if isinstance(request.user, User) else None,
            inputs_key=data.get("inputs_key") or "X", targets_key=data.get("targets_key") or "y",
        )
    except StagedUploadMissing:
        return _file_refused(request, UPLOAD_GONE)
    except (DatasetError, RegistryError) as exc:
        form.add_error(form.refusal_field(str(exc)), str(exc))
        return _render(request, status=400, staged=staged, form=form)
    staged_upload_delete(staged=staged)
    messages.success(request, f"Task {task.slug} created: {task.n_samples} rows, {task.output_kind}, "
                              f"metric {task.metric}. Its first model is queued for training.")
    return redirect("panel:task", slug=task.slug)
