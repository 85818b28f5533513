"""The task page (``/tasks/<slug>/``): read by anyone logged in; its one control, appending rows, is
``views.task_rows_append_control``."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from models_registry.models import Task
from project.panel.selectors_task import task_page
from project.panel.views import page


@login_required
@require_GET
def task_detail(request: HttpRequest, slug: str) -> HttpResponse:
    task = get_object_or_404(Task, slug=slug)
    return page(request, "panel/task.html", "task", lambda: task_page(task))
