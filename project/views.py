"""Top-level pages: the overview and a liveness probe."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from improvement.models import ImprovementRun
from models_registry.models import ModelVersion, Task


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    tasks = Task.objects.prefetch_related("neural_models").order_by("slug")
    active = {
        v.model_id: v for v in ModelVersion.objects.filter(is_active=True).select_related("model")
    }
    rows = []
    for task in tasks:
        for model in task.neural_models.all():
            rows.append({"task": task, "model": model, "version": active.get(model.pk)})
    runs = ImprovementRun.objects.select_related("model__task").order_by("-created_at")[:20]
    return render(request, "panel/overview.html", {"rows": rows, "runs": runs})


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability; answers 503 while the database is down."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        return JsonResponse({"status": "unavailable", "database": str(exc)[:200]}, status=503)
    return JsonResponse({"status": "ok"})
