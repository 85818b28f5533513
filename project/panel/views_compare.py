"""The compare page: two versions of one task side by side (``/models/compare/?a=<id>&b=<id>``). Read-only.

The model page's version table sends either ``a`` and ``b`` ("compare with active" links) or the
ticked checkboxes as ``v`` (a plain GET form, so it works without JavaScript); two ticks redirect
to the ``a``/``b`` address. An id that is not a version's is a 404; versions of different tasks,
the same version twice or a wrong number of ticks are refused with a message (400).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET

from models_registry.models import ModelVersion
from project.panel import selectors_compare
from project.panel.views import page


def _version(raw: str) -> ModelVersion:
    try:
        pk = int(raw)
    except (TypeError, ValueError):
        raise Http404("no such version") from None
    version = ModelVersion.objects.select_related("model__task").filter(pk=pk).first()
    if version is None:
        raise Http404("no such version")
    return version


def _refused(request: HttpRequest, message: str, *versions: ModelVersion) -> HttpResponse:
    response = page(request, "panel/compare.html", "compare",
                    lambda: {"refused": message, "versions": list(versions)})
    response.status_code = 400
    return response


@login_required
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    ticked = request.GET.getlist("v")
    if ticked and "a" not in request.GET and "b" not in request.GET:
        if len(ticked) != 2:
            return _refused(request, f"Tick exactly two versions to compare ({len(ticked)} ticked).")
        a, b = _version(ticked[0]), _version(ticked[1])
        return redirect(f"{reverse('panel:compare')}?{urlencode({'a': a.pk, 'b': b.pk})}")
    if not request.GET.get("a") or not request.GET.get("b"):
        return _refused(request, "Choose two versions to compare: tick them in a model's version table.")
    a, b = _version(request.GET["a"]), _version(request.GET["b"])
    refusal = selectors_compare.compare_refusal(a=a, b=b)
    if refusal is not None:
        return _refused(request, refusal, a, b)
    return page(request, "panel/compare.html", "compare", lambda: selectors_compare.compare_page(a=a, b=b))
